#!/usr/bin/env bash
# Messaging benchmarks of issue 6 (docs/benchmarks.md, "Messaging"). Not part of CI: about
# 18 minutes with the defaults (10 of sending, 5 more until the last delay is due, the retry
# passes), plus the release build; run it on a quiet machine.
#
# Steps: build the release binary; start `meridian dev` (default config) in a fresh temp data dir
# on free loopback ports; run
#   1. `meridian bench delay`: DELAY_COUNT delayed messages sent evenly over DELAY_DURATION
#      seconds (delivery times 1 s..DELAY_MAX_MS ahead, a share by delay level), consumed by a push
#      consumer; each delivery checked against its due time (none early, lateness, none missing
#      or doubled). Exits non-zero if one came early or went missing.
#   2. on a fresh node, `meridian bench retry`: RETRY_COUNT messages stored once, consumed by a
#      fresh group per pass whose handler fails RETRY_FAIL of the first deliveries (they come back
#      from %RETRY%<group> after 1 s, delay level 1), against a pass failing none, RETRY_ROUNDS times
#      after one uncounted warm-up pass;
# stop the node with SIGTERM after each and remove its data dir (the delay run writes about 4 GB,
# the retry run about 5 GB: each message is moved through delay slots and traced; a disk filling up
# under a run makes the node's threads die on their next log line), and print one Markdown summary
# with where the CPU time went during each client run (the node, the client, everything else) and
# the load average.
#
# Environment: CARGO, CARGO_TARGET_DIR (default ./target), MERIDIAN_BENCH_TMP (where the data dirs
# go), DELAY_COUNT (default 1000000), DELAY_DURATION (600), DELAY_MAX_MS (300000), DELAY_LEVELS
# (1,...,9: 1 s to 5 min), DELAY_GRACE (60), RETRY_COUNT (500000), RETRY_FAIL (0,0.01,0.1),
# RETRY_ROUNDS (5), RETRY_TRACE (false: the retry node runs with `[trace] enabled = false` and the
# consumer reports no trace events, because the in-process tracer indexing the previous pass's
# events slowed the next pass unevenly; true: tracing as configured by default), SKIP_DELAY /
# SKIP_RETRY (1 to leave a step out).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="${TARGET_DIR}/release/meridian"
DELAY_COUNT=${DELAY_COUNT:-1000000}
DELAY_DURATION=${DELAY_DURATION:-600}
DELAY_MAX_MS=${DELAY_MAX_MS:-300000}
DELAY_GRACE=${DELAY_GRACE:-60}
DELAY_LEVELS=${DELAY_LEVELS:-1,2,3,4,5,6,7,8,9}
RETRY_COUNT=${RETRY_COUNT:-500000}
RETRY_FAIL=${RETRY_FAIL:-0,0.01,0.1}
RETRY_ROUNDS=${RETRY_ROUNDS:-5}
RETRY_TRACE=${RETRY_TRACE:-false}
SKIP_DELAY=${SKIP_DELAY:-0}
SKIP_RETRY=${SKIP_RETRY:-0}
# The node is in data center "local" (`meridian dev`); saying so keeps the clients from warning.
export MERIDIAN_IDC=${MERIDIAN_IDC:-local}
export MERIDIAN_USER=${MERIDIAN_USER:-bench}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
bench_setup bench-messaging


# Starts `meridian dev` in a fresh data dir named $1 (extra arguments: $2...); sets node_pid and
# nameserver_addr. Tries other ports if a start fails (once, a node started right after the
# previous one stopped exited at once; its log was lost with the temp dir).
start_node() {
    local name=$1 attempt
    shift
    for attempt in 0 1 2; do
        if try_start_node "${name}" $((attempt * 10)) "$@"; then
            return 0
        fi
        log "meridian dev (${name}) did not become ready (attempt $((attempt + 1))); the end of its log:"
        grep -v ' INFO ' "${work_dir}/${name}-node.err" | tail -20 >&2 || true
        stop_node
    done
    return 1
}

try_start_node() {
    local name=$1 offset=$2
    shift 2
    local data_dir="${work_dir}/${name}"
    rm -rf "${data_dir}"
    mkdir -p "${data_dir}"
    nameserver_addr="127.0.0.1:$(free_port $((57800 + offset)))"
    local broker_addr="127.0.0.1:$(free_port $((57911 + offset)))"
    local http_addr="127.0.0.1:$(free_port $((58080 + offset)))"
    "${BIN}" dev --data-dir "${data_dir}" --nameserver-listen "${nameserver_addr}" --broker-listen "${broker_addr}" \
        --http-listen "${http_addr}" "$@" >"${work_dir}/${name}-node.out" 2>"${work_dir}/${name}-node.err" &
    node_pid=$!
    local waited=0
    until grep -q '^ready' "${work_dir}/${name}-node.out" 2>/dev/null; do
        if ! kill -0 "${node_pid}" 2>/dev/null || ((waited >= 300)); then
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    log "meridian dev (${name}) ready: nameserver ${nameserver_addr}, broker ${broker_addr}, pid ${node_pid}"
}

# Removes the data dir of the stopped node $1, logging how much it held.
remove_data() {
    log "data dir of ${1}: $(du -sh "${work_dir}/$1" | cut -f1); removing it"
    rm -rf "${work_dir:?}/$1"
}

busy_ticks() {
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat
}

node_ticks() {
    awk '{print $14 + $15}' "/proc/${node_pid}/stat"
}

# Runs `meridian bench "$@" --json`, writing its JSON line to the file named by $1 and where the
# CPU time went to $1.cpu (the node, the client, everything else: a concurrent build shows as
# "others"). Returns the client's exit status.
bench_json() {
    local out=$1
    shift
    log "meridian bench $*"
    local busy_before node_before started ended load_before status=0
    busy_before=$(busy_ticks)
    node_before=$(node_ticks)
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    started=$(date +%s%N)
    (
        "${BIN}" bench "$@" --json >"${out}"
        status=$?
        times >"${out}.times"
        exit "${status}"
    ) || status=$?
    ended=$(date +%s%N)
    "${PYTHON}" - "${out}.times" "$(getconf CLK_TCK)" "$(nproc)" "$((ended - started))" \
        "$(($(busy_ticks) - busy_before))" "$(($(node_ticks) - node_before))" "${load_before}" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" >"${out}.cpu" <<'EOF'
import json, re, sys

times_file, tick, cpus, wall_ns, busy, node, load_before, load_after = sys.argv[1:]
tick, wall = float(tick), int(wall_ns) / 1e9
children = open(times_file).read().splitlines()[1]
client = sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", children))
busy_s, node_s = int(busy) / tick, int(node) / tick
print(json.dumps({
    "wall_s": wall, "cpu_available_s": wall * int(cpus), "busy_s": busy_s, "node_s": node_s,
    "client_s": client, "others_s": max(busy_s - node_s - client, 0.0),
    "load_before": load_before, "load_after": load_after,
}))
EOF
    log "  -> exit ${status}: $(cat "${out}")"
    log "  -> cpu: $(cat "${out}.cpu")"
    return "${status}"
}

build_commit="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- cli client broker proto 2>/dev/null || echo ' with uncommitted changes')"
log "building the release binary (${build_commit})"
build_started=${SECONDS}
"${CARGO}" build --release --locked --bin meridian
log "release build took $((SECONDS - build_started)) s"
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)

delay_status=0
if [[ "${SKIP_DELAY}" != 1 ]]; then
    start_node delay
    bench_json "${work_dir}/delay.json" delay --nameserver "${nameserver_addr}" --count "${DELAY_COUNT}" \
        --duration "${DELAY_DURATION}" --max-delay-ms "${DELAY_MAX_MS}" --levels "${DELAY_LEVELS}" \
        --grace "${DELAY_GRACE}" || delay_status=$?
    stop_node
    remove_data delay
fi
if [[ "${SKIP_RETRY}" != 1 ]]; then
    retry_node_args=()
    retry_bench_args=()
    if [[ "${RETRY_TRACE}" != true ]]; then
        printf '[trace]\nenabled = false\n' >"${work_dir}/no-trace.toml"
        retry_node_args=(--config "${work_dir}/no-trace.toml")
        retry_bench_args=(--no-trace)
    fi
    start_node retry "${retry_node_args[@]}"
    bench_json "${work_dir}/retry.json" retry --nameserver "${nameserver_addr}" --count "${RETRY_COUNT}" \
        --fail "${RETRY_FAIL}" --rounds "${RETRY_ROUNDS}" "${retry_bench_args[@]}"
    stop_node
    remove_data retry
fi

echo
echo "## meridian bench delay / retry"
echo
echo "- started: ${started_at}, finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "- built from: ${build_commit}"
echo "- cpus: $(nproc); kernel: $(uname -sr); memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo
"${PYTHON}" - "${work_dir}" <<'EOF'
import json, os, sys

work = sys.argv[1]


def load(name):
    path = os.path.join(work, name)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as file:
        return json.load(file)


def cpu_line(name):
    cpu = load(name + ".cpu")
    if cpu is None:
        return
    available = cpu["cpu_available_s"]
    share = lambda seconds: f"{seconds:.0f} s ({seconds / available:.0%})"
    print(f"CPU during the run ({cpu['wall_s']:.0f} s wall, {available:.0f} CPU-s available): node {share(cpu['node_s'])}, "
          f"client {share(cpu['client_s'])}, others {share(cpu['others_s'])}; "
          f"load average {cpu['load_before']} before, {cpu['load_after']} after")
    print()


delay = load("delay.json")
if delay:
    produce, late, stored = delay["produce"], delay["lateness_ms"], delay["stored_lateness_ms"]
    print(f"### Delayed messages: {delay['messages']:,} sent")
    print()
    print("| figure | result |")
    print("| --- | --- |")
    print(f"| send rate | {produce['msgs_per_s']:,.0f} msgs/s over {produce['seconds']:.1f} s "
          f"(target {produce['target_msgs_per_s']:,.0f}); send p50 {produce['send_latency_ms']['p50']:.3f} ms, "
          f"p99 {produce['send_latency_ms']['p99']:.3f} ms; at most {produce['max_behind_schedule_ms']:.1f} ms behind schedule |")
    d = delay["delays"]
    print(f"| delays | {d['level_messages']:,} by level {d['levels']}, the others at a time "
          f"{d['min_ms'] / 1000:.0f}..{d['max_ms'] / 1000:.0f} s ahead |")
    print(f"| delivered | {delay['delivered']:,} ({delay['deliveries']:,} deliveries) |")
    print(f"| early / missing / duplicates / wrong due time | {delay['early']} / {delay['missing']} / "
          f"{delay['duplicates']} / {delay['due_mismatches']} |")
    print(f"| lateness at the consumer (received - due) | p50 {late['p50']:.1f} ms, p99 {late['p99']:.1f} ms, "
          f"p999 {late['p999']:.1f} ms, max {late['max']:.1f} ms |")
    print(f"| lateness in the store (stored - due) | p50 {stored['p50']:.1f} ms, p99 {stored['p99']:.1f} ms, "
          f"p999 {stored['p999']:.1f} ms, max {stored['max']:.1f} ms |")
    print(f"| received within 1 s of the due time | {delay['within_1s'] * 100:.3f}% |")
    print()
    for problem in delay["problems"]:
        print(f"- problem: {problem}")
    cpu_line("delay.json")

retry = load("retry.json")
if retry:
    print(f"### Retries: {retry['messages']:,} messages of {retry['size']} B, {retry['queues']} queues, "
          f"retry delay level {retry['retry_delay_level']}, pull batch {retry['pull_batch']}, "
          f"tracing {'on' if retry['consumer_trace'] else 'off'}; medians over the rounds")
    print()
    print("| failing | failed | first pass msgs/s | ratio | all consumed after s | ratio | added ms per failure |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in retry["medians"]:
        added = row["added_ms_per_failure"]
        print(f"| {row['fail_fraction'] * 100:.1f}% | {row['failed']:,.0f} | {row['first_pass_msgs_per_s']:,.0f} | "
              f"{row['first_pass_ratio']:.3f} | {row['all_consumed_seconds']:.2f} | {row['all_consumed_ratio']:.2f} | "
              f"{'-' if added is None else f'{added:.3f}'} |")
    print()
    print("Passes: " + "; ".join(
        f"round {p['round']} {p['fail_fraction'] * 100:.1f}%: {p['first_pass_msgs_per_s']:,.0f} msgs/s, "
        f"{p['all_consumed_seconds']:.2f} s, {p['duplicates']} duplicates" for p in retry["passes"]))
    print()
    cpu_line("retry.json")
EOF
exit "${delay_status}"
