#!/usr/bin/env bash
# Tracing benchmarks (docs/benchmarks.md, "Tracing"). Not part of CI: run by hand on a quiet machine.
#
# 1. Produce throughput with tracing off and on, in the same run: `meridian dev` (release) with
#    `[trace] enabled = false` or `true`, `meridian bench produce` (1 KiB, batch 1, concurrency 64),
#    alternating off/on ROUNDS times; the ratio is the mean of "on" over the mean of "off".
# 2. With tracing on: how long the tracer inside `meridian dev` takes to index everything the
#    produce run emitted (2 events per message), and send-to-searchable (one `meridian produce`,
#    then polling GET /api/traces/{msgId} every 10 ms; SEARCHABLE_SAMPLES times).
# 3. The index alone (tracer/src/bench_tests.rs, release): indexing rate on one thread and lookups
#    by msgId and by key over HTTP on an index of INDEX_EVENTS events, each answer checked exact.
#
# Environment: COUNT (messages per produce run, default 200000), ROUNDS (default 2),
# INDEX_EVENTS (default 1000000), SEARCHABLE_SAMPLES (default 20), MERIDIAN_BENCH_TMP.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

COUNT=${COUNT:-200000}
ROUNDS=${ROUNDS:-2}
INDEX_EVENTS=${INDEX_EVENTS:-1000000}
SEARCHABLE_SAMPLES=${SEARCHABLE_SAMPLES:-20}
BIN="${CARGO_TARGET_DIR:-target}/release/meridian"
PYTHON=${PYTHON:-python3}

log() {
    printf '[%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

work_dir=$(mktemp -d "${MERIDIAN_BENCH_TMP:-${TMPDIR:-/tmp}}/meridian-bench-tracing.XXXXXX")
node_pid=""

stop_node() {
    if [[ -n "${node_pid}" ]] && kill -0 "${node_pid}" 2>/dev/null; then
        kill -TERM "${node_pid}" 2>/dev/null || true
        wait "${node_pid}" 2>/dev/null || true
    fi
    node_pid=""
}
trap 'stop_node; rm -rf "${work_dir}"' EXIT

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local port=$1
    while port_in_use "${port}"; do
        port=$((port + 1))
    done
    echo "${port}"
}

# Starts `meridian dev` with tracing $1 (true/false) in a fresh data dir.
start_node() {
    local tracing=$1 name=$2
    data_dir="${work_dir}/${name}"
    mkdir -p "${data_dir}"
    printf '[trace]\nenabled = %s\n' "${tracing}" >"${work_dir}/${name}.toml"
    nameserver_addr="127.0.0.1:$(free_port 37800)"
    broker_addr="127.0.0.1:$(free_port 37911)"
    http_addr="127.0.0.1:$(free_port 38080)"
    "${BIN}" dev --data-dir "${data_dir}" --config "${work_dir}/${name}.toml" --nameserver-listen "${nameserver_addr}" \
        --broker-listen "${broker_addr}" --http-listen "${http_addr}" >"${work_dir}/${name}.out" 2>"${work_dir}/${name}.err" &
    node_pid=$!
    local waited=0
    until grep -q '^ready' "${work_dir}/${name}.out" 2>/dev/null; do
        ((waited++ < 300)) || { cat "${work_dir}/${name}.err" >&2; return 1; }
        sleep 0.1
    done
}

metric() {
    curl -fsS "http://${http_addr}/metrics" | awk -v name="$1" '$1 == name {print $2}'
}

now_ms() {
    date +%s%3N
}

log "building the release binary and the index benchmark"
cargo build --release --bin meridian
results="${work_dir}/results.jsonl"
for round in $(seq 1 "${ROUNDS}"); do
    for tracing in false true; do
        name="round${round}-trace-${tracing}"
        start_node "${tracing}" "${name}"
        log "${name}: produce ${COUNT} x 1 KiB"
        produce_started=$(now_ms)
        "${BIN}" bench produce --nameserver "${nameserver_addr}" --size 1024 --count "${COUNT}" --concurrency 64 \
            --batch 1 --json >"${work_dir}/${name}.json"
        produce_ended=$(now_ms)
        indexed_ms=null
        if [[ "${tracing}" == true ]]; then
            expected=$((2 * COUNT))
            until [[ "$(metric meridian_tracer_events_indexed_total)" -ge "${expected}" ]]; do
                sleep 0.05
            done
            indexed_ms=$(($(now_ms) - produce_started))
            dropped=$(curl -fsS "http://${http_addr}/metrics" | awk '/^meridian_broker_trace_events_dropped_total/ {sum += $2} END {print sum + 0}')
            log "${name}: ${expected} events indexed ${indexed_ms} ms after the produce run started; dropped ${dropped}"
            : >"${work_dir}/searchable"
            for _ in $(seq 1 "${SEARCHABLE_SAMPLES}"); do
                sent=$(now_ms)
                id=$(MERIDIAN_USER=bench "${BIN}" produce --nameserver "${nameserver_addr}" --topic bench --key probe --body probe 2>/dev/null)
                until curl -fsS -o /dev/null "http://${http_addr}/api/traces/${id}"; do
                    sleep 0.01
                done
                echo $(($(now_ms) - sent)) >>"${work_dir}/searchable"
            done
        fi
        "${PYTHON}" - "${work_dir}/${name}.json" "${tracing}" "$((produce_ended - produce_started))" "${indexed_ms}" \
            "${work_dir}/searchable" >>"${results}" <<'EOF'
import json, sys
bench = json.load(open(sys.argv[1]))
row = {"tracing": sys.argv[2] == "true", "msgs_per_s": bench["msgs_per_s"], "p99_ms": bench["latency_ms"]["p99"],
       "produce_ms": int(sys.argv[3])}
if sys.argv[4] != "null":
    row["all_indexed_ms"] = int(sys.argv[4])
    samples = sorted(int(line) for line in open(sys.argv[5]) if line.strip())
    row["send_to_searchable_ms"] = {"p50": samples[len(samples) // 2], "max": samples[-1]}
print(json.dumps(row))
EOF
        stop_node
        log "${name}: $(tail -1 "${results}")"
    done
done
"${PYTHON}" - "${results}" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
off = [row["msgs_per_s"] for row in rows if not row["tracing"]]
on = [row["msgs_per_s"] for row in rows if row["tracing"]]
print(json.dumps({"rows": rows, "on_over_off": (sum(on) / len(on)) / (sum(off) / len(off))}, indent=1))
EOF

log "index benchmark: ${INDEX_EVENTS} events"
MERIDIAN_TRACE_BENCH_EVENTS="${INDEX_EVENTS}" cargo test --release -p meridian-tracer -- --ignored --nocapture \
    bench_ 2>&1 | grep '^{'
