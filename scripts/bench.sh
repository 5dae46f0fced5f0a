#!/usr/bin/env bash
# End-to-end benchmarks of one broker (`meridian dev`) with the client on the same machine, each
# figure next to a disk baseline measured in the same run. Not part of CI: run it by hand on a
# quiet machine (docs/benchmarks.md has the figures and how to read them).
#
# Steps: build the release binary; for each flush mode start `meridian dev` in a fresh temp data
# dir on free loopback ports, run `meridian bench ... --json` against it (disk baselines measured
# in the same data dir), stop it with SIGTERM; then print one Markdown table.
#
#   async: produce 200k x 1 KiB (batch 1, concurrency 64), produce 1M x 1 KiB (batch 32,
#          concurrency 16), consume everything produced
#   sync:  produce 50k x 1 KiB (batch 1, concurrency 64), then `bench disk` for fdatasync p99
#
# Environment: CARGO (default cargo), CARGO_TARGET_DIR (default ./target), MERIDIAN_BENCH_TMP
# (where the temp data dirs go; default $TMPDIR or /tmp: put it on the disk you want measured),
# MERIDIAN_BENCH_BROKER_PORT / MERIDIAN_BENCH_HTTP_PORT (first ports tried; default 27911 / 28080),
# ASYNC_UNBATCHED_COUNT, ASYNC_BATCHED_COUNT, SYNC_COUNT (message counts).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="${TARGET_DIR}/release/meridian"
ASYNC_UNBATCHED_COUNT=${ASYNC_UNBATCHED_COUNT:-200000}
ASYNC_BATCHED_COUNT=${ASYNC_BATCHED_COUNT:-1000000}
SYNC_COUNT=${SYNC_COUNT:-50000}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-900}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
bench_setup bench


# Starts `meridian dev` with flush mode $1 in a fresh data dir; sets node_pid, nameserver_addr,
# broker_addr, http_addr and data_dir.
start_node() {
    local mode=$1
    data_dir="${work_dir}/${mode}"
    mkdir -p "${data_dir}"
    local nameserver_port broker_port http_port
    nameserver_port=$(free_port "${MERIDIAN_BENCH_NAMESERVER_PORT:-27800}")
    broker_port=$(free_port "${MERIDIAN_BENCH_BROKER_PORT:-27911}")
    http_port=$(free_port "${MERIDIAN_BENCH_HTTP_PORT:-28080}")
    nameserver_addr="127.0.0.1:${nameserver_port}"
    broker_addr="127.0.0.1:${broker_port}"
    http_addr="127.0.0.1:${http_port}"
    "${BIN}" dev --data-dir "${data_dir}" --nameserver-listen "${nameserver_addr}" --broker-listen "${broker_addr}" \
        --http-listen "${http_addr}" --flush-mode "${mode}" \
        >"${work_dir}/${mode}-node.out" 2>"${work_dir}/${mode}-node.err" &
    node_pid=$!
    local waited=0
    until grep -q '^ready' "${work_dir}/${mode}-node.out" 2>/dev/null; do
        if ! kill -0 "${node_pid}" 2>/dev/null; then
            log "meridian dev (${mode}) exited before it was ready:"
            cat "${work_dir}/${mode}-node.err" >&2
            return 1
        fi
        if ((waited >= 300)); then
            log "meridian dev (${mode}) not ready after 30 s"
            cat "${work_dir}/${mode}-node.err" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    log "meridian dev (flush ${mode}) ready on ${broker_addr} (http ${http_addr}), pid ${node_pid}, data ${data_dir}"
}

# Writes the node's counters, its sync and send histogram totals, and the upper bound of the
# bucket holding the median broker-side send time, as JSON to the file named by $1.
node_metrics() {
    curl -fsS "http://${http_addr}/metrics" | "${PYTHON}" -c '
import json, re, sys
wanted = ["messages_stored_total", "bytes_stored_total", "flush_seconds_count", "flush_seconds_sum",
          "send_seconds_count", "send_seconds_sum"]
found, send_buckets = {}, []
for line in sys.stdin:
    parts = line.split()
    if len(parts) != 2 or not parts[0].startswith("meridian_broker_"):
        continue
    name = parts[0][len("meridian_broker_"):]
    if name in wanted:
        found[name] = float(parts[1])
    bucket = re.fullmatch(r"send_seconds_bucket\{le=\"([^\"]+)\"\}", name)
    if bucket:
        send_buckets.append((float(bucket.group(1)), float(parts[1])))
count = found.get("send_seconds_count", 0)
median_bucket = [le for le, cumulative in sorted(send_buckets) if count and cumulative >= count / 2]
if median_bucket:
    found["send_seconds_p50_at_most"] = median_bucket[0]
print(json.dumps(found))
' >"$1"
    log "  -> node metrics: $(cat "$1")"
}

# CPU ticks (1/CLK_TCK s) spent by all CPUs outside idle, iowait and steal.
busy_ticks() {
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat
}

# CPU ticks spent by the node so far (all its threads).
node_ticks() {
    awk '{print $14 + $15}' "/proc/${node_pid}/stat"
}

# Runs `meridian bench "$@" --json` and writes its one JSON line to the file named by $1, and to
# $1.cpu where the CPU time of the run went: the node, the bench client, and everything else (a
# concurrent build makes "others" large: the figures were then taken on a shared machine).
bench_json() {
    local out=$1
    shift
    log "meridian bench $*"
    local busy_before node_before started ended
    busy_before=$(busy_ticks)
    node_before=$(node_ticks)
    started=$(date +%s%N)
    # `times` in the subshell reports the CPU time of its waited-for children: the client.
    (
        timeout "${CLIENT_TIMEOUT}" "${BIN}" bench "$@" --json >"${out}"
        times >"${out}.times"
    )
    ended=$(date +%s%N)
    "${PYTHON}" - "${out}.times" "$(getconf CLK_TCK)" "$(nproc)" "$((ended - started))" \
        "$(($(busy_ticks) - busy_before))" "$(($(node_ticks) - node_before))" >"${out}.cpu" <<'EOF'
import json, re, sys

times_file, tick, cpus, wall_ns, busy, node = sys.argv[1:]
tick, wall = float(tick), int(wall_ns) / 1e9
# Second line of `times`: user and system time of the children, like "0m1.250s 0m0.310s".
children = open(times_file).read().splitlines()[1]
client = sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", children))
busy_s, node_s = int(busy) / tick, int(node) / tick
print(json.dumps({
    "wall_s": wall, "cpu_available_s": wall * int(cpus), "busy_s": busy_s,
    "node_s": node_s, "client_s": client, "others_s": max(busy_s - node_s - client, 0.0),
}))
EOF
    log "  -> $(cat "${out}")"
    log "  -> cpu: $(cat "${out}.cpu")"
}

# Reads the first $1 bytes of the commitlog under $2 from the page cache (a plain sequential read
# of what consumers are served) and prints MB/s.
commitlog_read_mb_s() {
    local bytes=$1 dir=$2
    local started ended
    started=$(date +%s%N)
    # shellcheck disable=SC2046 # segment names are 20 digits, no spaces; sorted = offset order
    # head stops reading early, so cat dies of SIGPIPE: not a failure here.
    cat $(ls -1 "${dir}"/* | sort) | head -c "${bytes}" >/dev/null || true
    ended=$(date +%s%N)
    "${PYTHON}" -c "import sys; print(${bytes} / 1e6 / ((${ended} - ${started}) / 1e9))"
}

machine_summary() {
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- built from: ${build_commit}"
    echo "- cpus: $(nproc); kernel: $(uname -sr)"
    echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "- data dir disk: $(df -h "${work_dir}" | awk 'NR == 2 {print $1 " (" $2 ", " $4 " free, mounted on " $6 ")"}')"
}

build_commit="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')"
log "building the release binary (${build_commit})"
build_started=${SECONDS}
"${CARGO}" build --release --locked --bin meridian
build_seconds=$((SECONDS - build_started))
log "release build took ${build_seconds} s"

start_node async
async_dir=${data_dir}
bench_json "${work_dir}/async-unbatched.json" produce --nameserver "${nameserver_addr}" --size 1024 \
    --count "${ASYNC_UNBATCHED_COUNT}" --concurrency 64 --batch 1 --baseline-dir "${async_dir}"
bench_json "${work_dir}/async-batched.json" produce --nameserver "${nameserver_addr}" --size 1024 \
    --count "${ASYNC_BATCHED_COUNT}" --concurrency 16 --batch 32 --baseline-dir "${async_dir}"
bench_json "${work_dir}/consume.json" consume --nameserver "${nameserver_addr}" --topic bench
node_metrics "${work_dir}/async-metrics.json"
# The same number of commitlog bytes the consumer was served, read with cat.
commitlog_bytes=$("${PYTHON}" -c "import json; print(int(json.load(open('${work_dir}/async-metrics.json'))['bytes_stored_total']))")
read_mb_s=$(commitlog_read_mb_s "${commitlog_bytes}" "${async_dir}/broker/commitlog")
echo "{\"commitlog_read_mb_s\": ${read_mb_s}, \"bytes\": ${commitlog_bytes}}" >"${work_dir}/commitlog-read.json"
log "  -> commitlog read with cat: ${read_mb_s} MB/s"
stop_node

start_node sync
bench_json "${work_dir}/sync.json" produce --nameserver "${nameserver_addr}" --size 1024 \
    --count "${SYNC_COUNT}" --concurrency 64 --batch 1 --baseline-dir "${data_dir}"
node_metrics "${work_dir}/sync-metrics.json"
# `produce --json` reports the fdatasync p50 only; p99 comes from the same baseline run again.
bench_json "${work_dir}/sync-disk.json" disk --dir "${data_dir}"
stop_node

echo
echo "## meridian bench results"
echo
machine_summary
echo "- release build (cargo build --release --locked --bin meridian): ${build_seconds} s"
echo
"${PYTHON}" - "${work_dir}" <<'EOF'
import json, os, sys

work = sys.argv[1]


def load(name):
    with open(os.path.join(work, name)) as file:
        return json.load(file)


unbatched, batched, consume = load("async-unbatched.json"), load("async-batched.json"), load("consume.json")
read, sync, disk = load("commitlog-read.json"), load("sync.json"), load("sync-disk.json")
sync_metrics = load("sync-metrics.json")


def met(ok):
    return "**met**" if ok else "**missed**"


rows = []
for name, run, target in [
    ("async, batch 1, concurrency 64", unbatched, 100_000),
    ("async, batch 32, concurrency 16", batched, 300_000),
]:
    base = run["baseline"]
    rows.append([
        f"{name}: {run['messages']} msgs",
        f"{run['msgs_per_s']:,.0f} msgs/s = {run['mb_per_s']:.1f} MB/s of bodies",
        f"sequential write {base['sequential_mb_s']:.1f} MB/s",
        f"{run['mb_per_s'] / base['sequential_mb_s']:.3f}",
        f"≥ {target:,} msgs/s: {met(run['msgs_per_s'] >= target)} ({run['msgs_per_s'] / target:.2f}× target)",
    ])
    rows.append([
        f"{name}: request latency",
        f"p50 {run['latency_ms']['p50']:.3f} ms, p99 {run['latency_ms']['p99']:.3f} ms",
        "", "", "",
    ])
rows.append([
    f"consume (pull batch 256) of all {consume['messages']} msgs",
    f"{consume['msgs_per_s']:,.0f} msgs/s = {consume['mb_per_s']:.1f} MB/s of bodies",
    f"cat of the same commitlog bytes {read['commitlog_read_mb_s']:.1f} MB/s",
    f"{consume['mb_per_s'] / read['commitlog_read_mb_s']:.3f}",
    "none",
])
ack_p50, ack_p99 = sync["latency_ms"]["p50"], sync["latency_ms"]["p99"]
sync_p50, disk_p50, disk_p99 = sync["baseline"]["fdatasync_p50_ms"], disk["fdatasync_p50_ms"], disk["fdatasync_p99_ms"]
rows.append([
    f"sync, batch 1, concurrency 64: {sync['messages']} msgs",
    f"{sync['msgs_per_s']:,.0f} msgs/s = {sync['mb_per_s']:.1f} MB/s of bodies",
    f"sequential write {sync['baseline']['sequential_mb_s']:.1f} MB/s",
    f"{sync['mb_per_s'] / sync['baseline']['sequential_mb_s']:.3f}",
    "none",
])
rows.append([
    "sync: ack p50",
    f"{ack_p50:.3f} ms",
    f"4 KiB append + fdatasync p50 {sync_p50:.3f} ms (before) / {disk_p50:.3f} ms (after)",
    f"{ack_p50 / sync_p50:.2f} / {ack_p50 / disk_p50:.2f}",
    f"≤ 2× fdatasync p50: {met(ack_p50 <= 2 * sync_p50)} (against the baseline taken before the run)",
])
rows.append([
    "sync: ack p99",
    f"{ack_p99:.3f} ms",
    f"4 KiB append + fdatasync p99 {disk_p99:.3f} ms (after)",
    f"{ack_p99 / disk_p99:.2f}",
    "none",
])

syncs = sync_metrics.get("flush_seconds_count", 0)
if syncs:
    rows.append([
        "sync: commitlog syncs (broker metrics)",
        f"{syncs:.0f} syncs, mean {sync_metrics['flush_seconds_sum'] / syncs * 1e3:.3f} ms, "
        f"{sync_metrics['messages_stored_total'] / syncs:.1f} msgs per sync",
        f"fdatasync p50 {sync_p50:.3f} ms",
        f"{sync_metrics['flush_seconds_sum'] / syncs * 1e3 / sync_p50:.2f}",
        "none",
    ])

if sync_metrics.get("send_seconds_count"):
    rows.append([
        "sync: broker-side send time (receipt to answer, broker metrics)",
        f"mean {sync_metrics['send_seconds_sum'] / sync_metrics['send_seconds_count'] * 1e3:.3f} ms, "
        f"p50 ≤ {sync_metrics['send_seconds_p50_at_most'] * 1e3:.3f} ms (histogram bucket)",
        f"fdatasync p50 {sync_p50:.3f} ms",
        f"{sync_metrics['send_seconds_sum'] / sync_metrics['send_seconds_count'] * 1e3 / sync_p50:.2f} (mean)",
        "none",
    ])

print("| run | figure | baseline (same run) | ratio | target |")
print("| --- | --- | --- | --- | --- |")
for row in rows:
    print("| " + " | ".join(row) + " |")

print()
print("CPU time during each client run (from /proc: the node's threads, the bench client, everything")
print("else), against the CPU time the machine had (cores × wall time). A large \"others\" share means")
print("the figures above were taken while something else ran.")
print()
print("| run | wall s | CPU-s available | broker | client | others | idle |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for name, file in [
    ("produce async batch 1 (and its disk baseline)", "async-unbatched.json"),
    ("produce async batch 32 (and its disk baseline)", "async-batched.json"),
    ("consume", "consume.json"),
    ("produce sync batch 1 (and its disk baseline)", "sync.json"),
    ("bench disk (after the sync run)", "sync-disk.json"),
]:
    cpu = load(file + ".cpu")
    available = cpu["cpu_available_s"]

    def share(seconds):
        return f"{seconds:.2f} ({seconds / available:.0%})"

    idle = max(available - cpu["busy_s"], 0.0)
    print(
        f"| {name} | {cpu['wall_s']:.2f} | {available:.2f} | {share(cpu['node_s'])} | "
        f"{share(cpu['client_s'])} | {share(cpu['others_s'])} | {share(idle)} |"
    )
EOF
