#!/usr/bin/env bash
# Tracing benchmarks (docs/benchmarks.md, "Tracing"). Not part of CI: run by hand on a quiet machine.
#
# 1. Throughput with tracing off and on, in the same run, ROUNDS rounds, off first in odd rounds
#    and on first in even ones (so a drift over the run favours neither); before every run the
#    machine settles (scripts/lib.sh `settle`: sync, and drop the page cache when root). In each
#    round and setting one node serves, in turn:
#    - `produce`: `meridian bench produce` (1 KiB, batch 1) at each of CONCURRENCIES requests in
#      flight (default 1, 64 and 1024), COUNT messages each;
#    - `consume`: `meridian bench retry --fail 0` (a push consumer, its consume-side trace events
#      on with tracing on, `--no-trace` with it off): CONSUME_COUNT messages stored, then consumed
#      by a fresh group; the figure is that first pass's msgs/s.
#    Every run also records the CPU seconds of every process involved (servers and client): on 2
#    shared cores throughput is bounded by CPU per message, and CPU is the steadier figure
#    (`cpu_on_over_off`). Ratios are the mean of "on" over the mean of "off" (and the same of the
#    medians) per setup, workload and concurrency. Two setups:
#    - `dev`: `meridian dev` with `[trace] enabled = false` or `true`: the tracer indexes in the
#      same process, on the same cores as the broker and the client (its indexing thread niced:
#      docs/tracing.md, "What tracing costs"). With tracing on, after each run the script waits
#      until the tracer has indexed every event the broker wrote (`all_indexed_ms`, from the run's
#      start), so no run inherits the last one's backlog;
#    - `alone`: a nameserver and a broker as separate processes (`meridian cluster up`, no tracer):
#      the broker emits and stores every event, and the tracer runs elsewhere, as deployed. The
#      broker's own CPU is also reported alone (`broker_cpu_on_over_off`).
# 2. With tracing on in `dev`, after each node's last run: send-to-searchable (one `meridian
#    produce`, then polling GET /api/traces/{msgId} every 10 ms; SEARCHABLE_SAMPLES times).
# 3. The index alone (tracer/src/bench_tests.rs, release): indexing rate on one thread and lookups
#    by msgId and by key over HTTP on an index of INDEX_EVENTS events, each answer checked exact.
#
# Environment: COUNT (messages per produce run, default 200000), CONSUME_COUNT (default COUNT; 0
# skips the consume runs), CONCURRENCIES (default "1 64 1024"), ROUNDS (default 2), SETUPS
# (default "dev alone"), INDEX_EVENTS (default 1000000; 0 skips part 3), SEARCHABLE_SAMPLES
# (default 20), MERIDIAN_BENCH_TMP. BIN (default: the release `meridian`, built first) runs that
# binary as it is, e.g. a smoke run against a debug build:
#   BIN=$CARGO_TARGET_DIR/debug/meridian COUNT=2000 CONCURRENCIES="1 64" ROUNDS=1 SETUPS=dev \
#     INDEX_EVENTS=0 SEARCHABLE_SAMPLES=2 scripts/bench-tracing.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

COUNT=${COUNT:-200000}
CONSUME_COUNT=${CONSUME_COUNT:-${COUNT}}
CONCURRENCIES=${CONCURRENCIES:-1 64 1024}
ROUNDS=${ROUNDS:-2}
SETUPS=${SETUPS:-dev alone}
INDEX_EVENTS=${INDEX_EVENTS:-1000000}
SEARCHABLE_SAMPLES=${SEARCHABLE_SAMPLES:-20}
BUILD_BIN=true
[[ -z "${BIN:-}" ]] || BUILD_BIN=false
BIN=${BIN:-"${CARGO_TARGET_DIR:-target}/release/meridian"}
PYTHON=${PYTHON:-python3}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
bench_setup bench-tracing

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

# CPU seconds the processes $@ have used so far, together.
cpu_of() {
    local pid total=0
    for pid in "$@"; do
        total=$(awk -v total="${total}" -v more="$(process_cpu_seconds "${pid}")" 'BEGIN {printf "%.2f", total + more}')
    done
    echo "${total}"
}

now_ms() {
    date +%s%3N
}

# Starts a nameserver and a lone broker with tracing $1 as separate processes (no tracer).
start_alone() {
    local tracing=$1 name=$2
    cluster_dir="${work_dir}/${name}"
    local ns_port ns_http broker_port broker_http
    ns_port=$(free_port 37800)
    ns_http=$(free_port 38080)
    broker_port=$(free_port 37911)
    broker_http=$(free_port 38081)
    cat >"${work_dir}/${name}.toml" <<SPEC
name = "bench-tracing"
idcs = ["local"]

[[nameservers]]
id = 1
idc = "local"
listen = "127.0.0.1:${ns_port}"
http = "127.0.0.1:${ns_http}"

[[broker_groups]]
name = "broker-a"

[[broker_groups.members]]
name = "a-0"
role = "master"
idc = "local"
listen = "127.0.0.1:${broker_port}"
http = "127.0.0.1:${broker_http}"

[archiver]
enabled = false

[overrides.broker.trace]
enabled = ${tracing}
SPEC
    "${BIN}" cluster up --config "${work_dir}/${name}.toml" --dir "${cluster_dir}" >"${work_dir}/${name}.out" 2>&1 ||
        { cat "${work_dir}/${name}.out" >&2; return 1; }
    nameserver_addr="127.0.0.1:${ns_port}"
    http_addr="127.0.0.1:${broker_http}"
}

stop_alone() {
    "${BIN}" cluster down --dir "${cluster_dir}" --purge >/dev/null 2>&1 || true
    cluster_dir=""
}
cluster_dir=""
trap 'stop_node; [[ -z "${cluster_dir}" ]] || stop_alone; rm -rf "${work_dir}"' EXIT

if [[ "${BUILD_BIN}" == true ]]; then
    log "building the release binary"
    cargo build --release --bin meridian
fi
results="${work_dir}/results.jsonl"

# Waits until the tracer has indexed every event the broker wrote (dev, tracing on).
wait_indexed() {
    local written indexed
    while true; do
        written=$(metric meridian_broker_trace_events_written_total)
        indexed=$(metric meridian_tracer_events_indexed_total)
        if [[ -n "${written}" && -n "${indexed}" ]] && ((${indexed%.*} >= ${written%.*})); then
            return
        fi
        sleep 0.05
    done
}

# One measured run of workload $1 (produce or consume) at concurrency $2 on the node that is up
# (globals: setup, round, tracing, name); appends a row to ${results}.
measure() {
    local workload=$1 concurrency=$2 out
    out="${work_dir}/${name}-${workload}-${concurrency}"
    settle
    if [[ "${setup}" == alone ]]; then
        broker_pid=$(cat "${cluster_dir}/a-0/meridian.pid")
        server_pids="${broker_pid} $(cat "${cluster_dir}/ns-1/meridian.pid")"
    else
        broker_pid=${node_pid}
        server_pids=${node_pid}
    fi
    local broker_before servers_before started ended broker_cpu servers_cpu client_cpu indexed_ms=null dropped
    broker_before=$(process_cpu_seconds "${broker_pid}")
    servers_before=$(cpu_of ${server_pids})
    started=$(now_ms)
    TIMEFORMAT='%U %S'
    if [[ "${workload}" == produce ]]; then
        log "${name}: produce ${COUNT} x 1 KiB, ${concurrency} in flight"
        { time MERIDIAN_USER=bench "${BIN}" bench produce --nameserver "${nameserver_addr}" --size 1024 \
            --count "${COUNT}" --concurrency "${concurrency}" --batch 1 --json >"${out}.json" 2>"${out}.err"; } \
            2>"${out}.time"
    else
        local trace_flag=()
        [[ "${tracing}" == true ]] || trace_flag=(--no-trace)
        log "${name}: consume ${CONSUME_COUNT} x 1 KiB with a push consumer (stored first by the same command)"
        { time MERIDIAN_USER=bench "${BIN}" bench retry --nameserver "${nameserver_addr}" --size 1024 \
            --count "${CONSUME_COUNT}" --fail 0 --no-warmup ${trace_flag[@]+"${trace_flag[@]}"} --json \
            >"${out}.json" 2>"${out}.err"; } 2>"${out}.time"
    fi
    ended=$(now_ms)
    broker_cpu=$(awk -v after="$(process_cpu_seconds "${broker_pid}")" -v before="${broker_before}" \
        'BEGIN {printf "%.2f", after - before}')
    servers_cpu=$(awk -v after="$(cpu_of ${server_pids})" -v before="${servers_before}" \
        'BEGIN {printf "%.2f", after - before}')
    client_cpu=$(awk '{printf "%.2f", $1 + $2}' "${out}.time")
    if [[ "${tracing}" == true ]]; then
        if [[ "${setup}" == dev ]]; then
            wait_indexed
            indexed_ms=$(($(now_ms) - started))
        fi
        dropped=$(curl -fsS "http://${http_addr}/metrics" | awk '/^meridian_broker_trace_events_dropped_total/ {sum += $2} END {print sum + 0}')
        log "${name}: ${workload}: broker dropped ${dropped} trace events so far; all indexed after ${indexed_ms} ms"
    fi
    "${PYTHON}" - "${out}.json" "${tracing}" "$((ended - started))" "${indexed_ms}" "${setup}" "${broker_cpu}" \
        "${servers_cpu}" "${client_cpu}" "${round}" "${workload}" "${concurrency}" >>"${results}" <<'EOF'
import json, sys
bench = json.load(open(sys.argv[1]))
workload = sys.argv[10]
row = {"setup": sys.argv[5], "round": int(sys.argv[9]), "tracing": sys.argv[2] == "true", "workload": workload,
       "concurrency": int(sys.argv[11]) if workload == "produce" else None,
       "run_ms": int(sys.argv[3]), "broker_cpu_s": float(sys.argv[6]),
       "all_cpu_s": round(float(sys.argv[7]) + float(sys.argv[8]), 2)}
if workload == "produce":
    row["msgs_per_s"] = bench["msgs_per_s"]
    row["p50_ms"] = bench["latency_ms"]["p50"]
    row["p99_ms"] = bench["latency_ms"]["p99"]
else:
    row["msgs_per_s"] = bench["medians"][0]["first_pass_msgs_per_s"]
if sys.argv[4] != "null":
    row["all_indexed_ms"] = int(sys.argv[4])
print(json.dumps(row))
EOF
    log "${name}: $(tail -1 "${results}")"
}

for setup in ${SETUPS}; do
for round in $(seq 1 "${ROUNDS}"); do
    order="false true"
    ((round % 2 == 1)) || order="true false"
    for tracing in ${order}; do
        name="${setup}-round${round}-trace-${tracing}"
        if [[ "${setup}" == dev ]]; then
            start_node "${tracing}" "${name}"
        else
            start_alone "${tracing}" "${name}"
        fi
        for concurrency in ${CONCURRENCIES}; do
            measure produce "${concurrency}"
        done
        if ((CONSUME_COUNT > 0)); then
            measure consume 0
        fi
        if [[ "${setup}" == dev && "${tracing}" == true ]]; then
            : >"${work_dir}/searchable"
            for _ in $(seq 1 "${SEARCHABLE_SAMPLES}"); do
                sent=$(now_ms)
                id=$(MERIDIAN_USER=bench "${BIN}" produce --nameserver "${nameserver_addr}" --topic bench --key probe --body probe 2>/dev/null)
                until curl -fsS -o /dev/null "http://${http_addr}/api/traces/${id}" 2>/dev/null; do
                    sleep 0.01
                done
                echo $(($(now_ms) - sent)) >>"${work_dir}/searchable"
            done
            log "${name}: send to searchable (ms): $(sort -n "${work_dir}/searchable" | tr '\n' ' ')"
        fi
        if [[ "${setup}" == dev ]]; then
            stop_node
        else
            stop_alone
        fi
    done
done
done
"${PYTHON}" - "${results}" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
mean = lambda values: sum(values) / len(values)
median = lambda values: sorted(values)[len(values) // 2] if len(values) % 2 else mean(sorted(values)[len(values) // 2 - 1:len(values) // 2 + 1])
summary = {"on_over_off": {}, "median_on_over_off": {}, "cpu_on_over_off": {}, "broker_cpu_on_over_off": {},
           "msgs_per_s_off": {}, "msgs_per_s_on": {}}
for setup, workload, concurrency in sorted({(row["setup"], row["workload"], row["concurrency"] or 0) for row in rows}):
    label = f"{setup} {workload}" + (f" @{concurrency}" if workload == "produce" else "")
    of = lambda tracing: [row for row in rows if (row["setup"], row["workload"], row["concurrency"] or 0)
                          == (setup, workload, concurrency) and row["tracing"] == tracing]
    on, off = of(True), of(False)
    if not on or not off:
        continue
    # Every run of a kind moves the same number of messages: CPU seconds compare as CPU per message.
    for measure, field in [("on_over_off", "msgs_per_s"), ("cpu_on_over_off", "all_cpu_s"),
                           ("broker_cpu_on_over_off", "broker_cpu_s")]:
        summary[measure][label] = round(mean([row[field] for row in on]) / mean([row[field] for row in off]), 3)
    # Robust to the odd round that runs far faster or slower than its neighbours.
    summary["median_on_over_off"][label] = round(
        median([row["msgs_per_s"] for row in on]) / median([row["msgs_per_s"] for row in off]), 3)
    summary["msgs_per_s_off"][label] = round(mean([row["msgs_per_s"] for row in off]))
    summary["msgs_per_s_on"][label] = round(mean([row["msgs_per_s"] for row in on]))
print(json.dumps({"rows": rows, **summary}, indent=1))
EOF

if ((INDEX_EVENTS == 0)); then
    exit 0
fi
log "index benchmark: ${INDEX_EVENTS} events"
MERIDIAN_TRACE_BENCH_EVENTS="${INDEX_EVENTS}" cargo test --release -p meridian-tracer -- --ignored --nocapture \
    bench_ 2>&1 | grep '^{'
