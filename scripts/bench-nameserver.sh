#!/usr/bin/env bash
# Nameserver benchmarks against a 3-node cluster of separate processes on 127.0.0.11-13, with the
# load generator on the same machine. Not part of CI: run it by hand on a quiet machine
# (docs/benchmarks.md has the figures).
#
# Steps: build the release binary; start three `meridian nameserver` processes in fresh temp data
# dirs; run `meridian bench routes` (after a baseline of refused requests over the same
# connections) and `meridian bench registration` (100 broker groups, 100k topics, then steady
# heartbeats), reading each node's resident memory before and after; stop them with SIGTERM.
#
# Environment: CARGO (default cargo), CARGO_TARGET_DIR (default ./target), MERIDIAN_BENCH_TMP
# (where the data dirs go), ROUTES_SECONDS (default 10), BROKER_GROUPS (100), TOPICS (100000),
# HEARTBEAT_SECONDS (15).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="${TARGET_DIR}/release/meridian"
ROUTES_SECONDS=${ROUTES_SECONDS:-10}
BROKER_GROUPS=${BROKER_GROUPS:-100}
TOPICS=${TOPICS:-100000}
HEARTBEAT_SECONDS=${HEARTBEAT_SECONDS:-15}

log() {
    printf '[%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

work_dir=$(mktemp -d "${MERIDIAN_BENCH_TMP:-${TMPDIR:-/tmp}}/meridian-ns-bench.XXXXXX")
pids=()

on_exit() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill -TERM "${pid}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "${pid}" 2>/dev/null || true
    done
    rm -rf "${work_dir}"
    if ((status != 0)); then
        log "bench-nameserver.sh FAILED (exit ${status})"
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

port=27800
while port_in_use 127.0.0.11 "${port}" || port_in_use 127.0.0.12 "${port}" || port_in_use 127.0.0.13 "${port}"; do
    port=$((port + 1))
done
addrs=("127.0.0.11:${port}" "127.0.0.12:${port}" "127.0.0.13:${port}")
joined=$(IFS=,; echo "${addrs[*]}")

rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

log "building the release binary (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes'))"
"${CARGO}" build --release --locked --bin meridian

for id in 1 2 3; do
    config="${work_dir}/nameserver-${id}.toml"
    {
        echo "node_id = ${id}"
        echo "listen = \"${addrs[$((id - 1))]}\""
        echo "http_listen = \"127.0.0.1${id}:0\""
        echo "data_dir = \"${work_dir}/node-${id}\""
        echo "idc = \"dc${id}\""
        for member in 1 2 3; do
            echo "[[members]]"
            echo "id = ${member}"
            echo "addr = \"${addrs[$((member - 1))]}\""
        done
    } >"${config}"
    "${BIN}" nameserver --config "${config}" >"${work_dir}/node-${id}.out" 2>"${work_dir}/node-${id}.err" &
    pids+=($!)
done
for id in 1 2 3; do
    waited=0
    until grep -q '^meridian nameserver node' "${work_dir}/node-${id}.out" 2>/dev/null; do
        if ((waited >= 300)); then
            log "nameserver ${id} not ready after 30 s:"
            cat "${work_dir}/node-${id}.err" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
done
until "${BIN}" cluster status --json --nameserver "${addrs[0]}" 2>/dev/null | grep -q '"leader":[0-9]'; do
    sleep 0.2
done
log "3 nameservers ready at ${joined} (pids ${pids[*]})"

rss_before=()
for pid in "${pids[@]}"; do rss_before+=("$(rss_kib "${pid}")"); done

log "meridian bench routes (${ROUTES_SECONDS} s baseline, then ${ROUTES_SECONDS} s of lookups)"
"${BIN}" bench routes --nameserver "${joined}" --duration "${ROUTES_SECONDS}" --json | tee "${work_dir}/routes.json"

log "meridian bench registration (${BROKER_GROUPS} groups, ${TOPICS} topics, ${HEARTBEAT_SECONDS} s of heartbeats)"
"${BIN}" bench registration --nameserver "${joined}" --groups "${BROKER_GROUPS}" --topics "${TOPICS}" \
    --heartbeat-seconds "${HEARTBEAT_SECONDS}" --json | tee "${work_dir}/registration.json"

echo "## meridian nameserver bench results"
echo
echo "- routes: $(cat "${work_dir}/routes.json")"
echo "- registration: $(cat "${work_dir}/registration.json")"
for index in 0 1 2; do
    pid=${pids[$index]}
    echo "- node $((index + 1)) resident memory: $((rss_before[index] / 1024)) MiB before, $(($(rss_kib "${pid}") / 1024)) MiB after registration"
done
