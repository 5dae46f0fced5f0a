#!/usr/bin/env bash
# A peer in the same run (issue 28, point 2): NATS JetStream (Debian's `nats-server`, file store)
# and Meridian (`meridian dev`, default config) measured alternately at 1, 64 and 1024 publishes
# in flight, 1 KiB bodies, one message per request, and printed side by side with ratios and the
# machine's load. Not part of CI; run it on a quiet machine.
#
# Steps: install `nats-server` with apt-get if it is missing; build the release binary (unless BIN
# is given) and the NATS driver (bench/nats-driver, outside the workspace, in its own target dir);
# then ROUNDS times, for each in-flight level: start a fresh `nats-server -js` on a free loopback
# port with its store in a temp dir, run the driver, stop it; start a fresh `meridian dev`, run
# `meridian bench produce --concurrency N --batch 1`, stop it. Every run starts from an empty store
# and removes it after. Prints one Markdown table (one row per level and round).
#
# Environment: CARGO, CARGO_TARGET_DIR (default ./target), BIN (a meridian binary to use instead of
# building the release one, e.g. target/debug/meridian for a smoke run), NATS_DRIVER_TARGET_DIR
# (default $CARGO_TARGET_DIR/nats-driver), NATS_DRIVER_PROFILE (release; dev for a smoke run),
# IN_FLIGHT ("1 64 1024"), COUNT_1 (20000), COUNT_64 (200000), COUNT_1024 (400000): messages per
# run at each level (COUNT overrides them all), SIZE (1024), ROUNDS (1), MERIDIAN_BENCH_TMP (where
# the data dirs go).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
NATS_DRIVER_TARGET_DIR=${NATS_DRIVER_TARGET_DIR:-${TARGET_DIR}/nats-driver}
NATS_DRIVER_PROFILE=${NATS_DRIVER_PROFILE:-release}
IN_FLIGHT=${IN_FLIGHT:-1 64 1024}
SIZE=${SIZE:-1024}
ROUNDS=${ROUNDS:-1}
export MERIDIAN_IDC=${MERIDIAN_IDC:-local}
export MERIDIAN_USER=${MERIDIAN_USER:-bench}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
bench_setup bench-peers

count_for() {
    if [[ -n "${COUNT:-}" ]]; then
        echo "${COUNT}"
        return
    fi
    case $1 in
        1) echo "${COUNT_1:-20000}" ;;
        64) echo "${COUNT_64:-200000}" ;;
        *) echo "${COUNT_1024:-400000}" ;;
    esac
}

if ! command -v nats-server >/dev/null; then
    log "nats-server is missing; installing Debian's package"
    if [[ $(id -u) -ne 0 ]]; then
        log "installing nats-server needs root: run 'sudo apt-get install -y nats-server' and rerun"
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
nats_version=$(nats-server --version)

build_commit="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')"
if [[ -z "${BIN:-}" ]]; then
    log "building the release binary (${build_commit})"
    "${CARGO}" build --release --locked --bin meridian
    BIN="${TARGET_DIR}/release/meridian"
fi
log "building the NATS driver (${NATS_DRIVER_PROFILE})"
CARGO_TARGET_DIR="${NATS_DRIVER_TARGET_DIR}" "${CARGO}" build --profile "${NATS_DRIVER_PROFILE}" \
    --manifest-path bench/nats-driver/Cargo.toml
driver_dir=${NATS_DRIVER_PROFILE}
[[ "${NATS_DRIVER_PROFILE}" == dev ]] && driver_dir=debug
DRIVER="${NATS_DRIVER_TARGET_DIR}/${driver_dir}/nats-driver"

# Starts a fresh nats-server with JetStream's file store in the work dir; sets node_pid, nats_url.
start_nats() {
    local store_dir="${work_dir}/nats" port
    rm -rf "${store_dir}"
    mkdir -p "${store_dir}"
    port=$(free_port 54222)
    nats-server -a 127.0.0.1 -p "${port}" -js -sd "${store_dir}" >"${work_dir}/nats.out" 2>&1 &
    node_pid=$!
    nats_url="nats://127.0.0.1:${port}"
    local waited=0
    until grep -q 'Server is ready' "${work_dir}/nats.out" 2>/dev/null; do
        if ! kill -0 "${node_pid}" 2>/dev/null || ((waited >= 300)); then
            log "nats-server did not become ready; the end of its log:"
            tail -20 "${work_dir}/nats.out" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# Starts a fresh `meridian dev` (default config) in the work dir; sets node_pid, nameserver_addr.
start_meridian() {
    local data_dir="${work_dir}/meridian"
    rm -rf "${data_dir}"
    mkdir -p "${data_dir}"
    nameserver_addr="127.0.0.1:$(free_port 57800)"
    local broker_addr="127.0.0.1:$(free_port 57911)"
    local http_addr="127.0.0.1:$(free_port 58080)"
    # RocketMQ's listeners too on free ports (the defaults, 9876 and 10911, may be taken).
    local rocketmq_nameserver="127.0.0.1:$(free_port 59876)"
    local rocketmq_broker="127.0.0.1:$(free_port 50911)"
    "${BIN}" dev --data-dir "${data_dir}" --nameserver-listen "${nameserver_addr}" --broker-listen "${broker_addr}" \
        --http-listen "${http_addr}" --rocketmq-nameserver-listen "${rocketmq_nameserver}" \
        --rocketmq-broker-listen "${rocketmq_broker}" >"${work_dir}/meridian.out" 2>"${work_dir}/meridian.err" &
    node_pid=$!
    wait_ready "${node_pid}" "${work_dir}/meridian.out" "${work_dir}/meridian.err" 60
}

# Stops the node and removes its store.
stop_and_clean() {
    stop_node
    rm -rf "${work_dir}/nats" "${work_dir}/meridian"
}

results="${work_dir}/results.tsv"
: >"${results}"
for round in $(seq 1 "${ROUNDS}"); do
    for in_flight in ${IN_FLIGHT}; do
        count=$(count_for "${in_flight}")
        settle
        start_nats
        load_before=$(cut -d' ' -f1 /proc/loadavg)
        log "round ${round}: NATS JetStream, ${in_flight} in flight, ${count} x ${SIZE} B"
        nats_line=$("${DRIVER}" --url "${nats_url}" --in-flight "${in_flight}" --count "${count}" --size "${SIZE}")
        nats_load="${load_before}->$(cut -d' ' -f1 /proc/loadavg)"
        stop_and_clean
        log "  -> ${nats_line}"

        settle
        start_meridian
        load_before=$(cut -d' ' -f1 /proc/loadavg)
        log "round ${round}: Meridian, ${in_flight} in flight, ${count} x ${SIZE} B"
        meridian_json="${work_dir}/meridian-${round}-${in_flight}.json"
        "${BIN}" bench produce --nameserver "${nameserver_addr}" --size "${SIZE}" --count "${count}" \
            --concurrency "${in_flight}" --batch 1 --json >"${meridian_json}"
        meridian_load="${load_before}->$(cut -d' ' -f1 /proc/loadavg)"
        stop_and_clean
        log "  -> $(cat "${meridian_json}")"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${round}" "${in_flight}" "${meridian_json}" \
            "${nats_line}" "${meridian_load}" "${nats_load}" >>"${results}"
    done
done

echo
echo "## Meridian and NATS JetStream, same run"
echo
echo "- ${build_commit}; meridian: ${BIN}; peer: ${nats_version}, JetStream file store"
echo "- $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); ${SIZE} B bodies, one message per request"
echo
"${PYTHON}" - "${results}" <<'EOF'
import json, sys

print("| round | in flight | Meridian msgs/s (p50 / p99 ms) | NATS JetStream msgs/s (p50 / p99 ms) | Meridian / NATS | load 1 min (Meridian; NATS) |")
print("| --- | --- | --- | --- | --- | --- |")
for line in open(sys.argv[1]):
    round_, in_flight, meridian_file, nats_line, meridian_load, nats_load = line.rstrip("\n").split("\t")
    meridian = json.load(open(meridian_file))
    nats = dict(field.split("=") for field in nats_line.split())
    m_rate, n_rate = meridian["msgs_per_s"], float(nats["msgs_per_s"])
    latency = meridian["latency_ms"]
    print(
        f"| {round_} | {in_flight} | {m_rate:,.0f} ({latency['p50']:.3f} / {latency['p99']:.3f}) "
        f"| {n_rate:,.0f} ({float(nats['p50_ms']):.3f} / {float(nats['p99_ms']):.3f}) "
        f"| {m_rate / n_rate:.2f}x | {meridian_load}; {nats_load} |"
    )
EOF
