#!/usr/bin/env bash
# Replay rate from the archive against local disk (issue 8), in one run on one `meridian dev`.
#
# 1. builds the release `meridian`, starts `meridian dev` with 64 MiB segments and archiving set
#    so nothing is archived on its own (archive_after_secs = 1 day) but archived segments are
#    deleted locally at once (local_retention_secs = 0, checked every second);
# 2. produces COUNT JSON-like bodies of about SIZE bytes (`meridian produce --mode async`, bodies
#    from a seeded generator, each different) to the topic `replay` (8 queues), then 80 MB to
#    another topic so every segment holding `replay` is sealed;
# 3. local: `meridian bench consume --topic replay` reads every message from the start, REPS
#    times (the first run after producing, page cache warm: what a consumer catching up reads);
# 4. `meridian archive run --now` archives the sealed segments (conversion timed too), the broker
#    deletes them locally, and the script waits until only the open segment is left;
# 5. archive: the same `meridian bench consume`, REPS times, now served by the broker from the
#    Parquet files (the archive is a local folder: no network in the way).
# Prints one Markdown table with the medians; per run JSON lines on stderr.
#
# Usage: scripts/bench-archive-replay.sh      (COUNT=1000000 SIZE=1024 REPS=3 by default)
#   BENCH_DIR=/path   where the data dir goes (default: a new folder under ${TMPDIR:-/tmp}); removed at exit
# Needs about 2.5 GB of disk for the defaults.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
COUNT=${COUNT:-1000000}
SIZE=${SIZE:-1024}
REPS=${REPS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="${TARGET_DIR}/release/meridian"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

work_dir=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/meridian-replay.XXXXXX")}
mkdir -p "${work_dir}"
node_pid=""
on_exit() {
    local status=$?
    stop_pid "${node_pid}"
    if ((status != 0)) && [[ -f "${work_dir}/node.err" ]]; then
        log "FAILED (exit ${status}); the end of the node's log:"
        tail -n 30 "${work_dir}/node.err" >&2
    fi
    rm -rf "${work_dir}"
}
trap on_exit EXIT

log "building the release meridian"
"${CARGO}" build --release --locked --bin meridian >&2

config="${work_dir}/broker.toml"
cat >"${config}" <<'EOF'
[store]
segment_size = 67108864

[archive]
archive_after_secs = 86400
local_retention_secs = 0
interval_secs = 1
EOF
data_dir="${work_dir}/data"
nameserver="127.0.0.1:$(free_port 47800)"
"${BIN}" dev --data-dir "${data_dir}" --config "${config}" --nameserver-listen "${nameserver}" \
    --broker-listen "127.0.0.1:$(free_port 47911)" --http-listen "127.0.0.1:$(free_port 48080)" \
    >"${work_dir}/node.out" 2>"${work_dir}/node.err" &
node_pid=$!
wait_ready "${node_pid}" "${work_dir}/node.out" "${work_dir}/node.err" 30
export MERIDIAN_NAMESERVER=${nameserver} MERIDIAN_USER=bench
"${BIN}" topic create replay --queues 8 >&2
"${BIN}" topic create replay-filler --queues 1 >&2

# Order-like JSON bodies, every one different (ids, amounts, items vary), one per line.
bodies() {
    "${PYTHON}" - "$1" "$2" <<'EOF'
import random, sys
count, size = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(8)
statuses = ["created", "paid", "shipped", "delivered"]
out = sys.stdout
for index in range(count):
    body = '{"order_id":"ORD-%010d","customer":"cust-%d","status":"%s","amount":%d.%02d,"items":[' % (
        index, rng.randrange(100000), statuses[index % 4], rng.randrange(5000), rng.randrange(100))
    items = []
    while len(body) + sum(len(item) + 1 for item in items) + 2 < size:
        items.append('{"sku":"SKU-%06d","qty":%d,"price":%d.99}' % (rng.randrange(10**6), rng.randrange(1, 6), rng.randrange(300)))
    out.write(body + ",".join(items) + "]}\n")
EOF
}

log "producing ${COUNT} messages of about ${SIZE} bytes to topic replay"
started=$(date +%s%N)
bodies "${COUNT}" "${SIZE}" | "${BIN}" produce --topic replay --mode async >/dev/null
log "  produced in $((($(date +%s%N) - started) / 1000000)) ms"
# 80 MB more: the last segment holding `replay` gets a later one, so it is sealed and archivable.
bodies 80000 1024 | "${BIN}" produce --topic replay-filler --mode async >/dev/null

log "commitlog: $(find "${data_dir}/broker/commitlog" -maxdepth 1 -type f -name '[0-9]*' | wc -l) segments of 64 MiB"

# CPU ticks the node (broker) has used so far.
node_ticks() {
    awk '{print $14 + $15}' "/proc/${node_pid}/stat"
}

# Runs `meridian bench consume` over all of `replay` and appends its JSON line to $1, with the
# broker's CPU seconds and the 1-minute load average when it started.
consume_all() {
    local before load line
    before=$(node_ticks)
    load=$(cut -d' ' -f1 /proc/loadavg)
    line=$("${BIN}" bench consume --topic replay --count "${COUNT}" --json)
    line="${line%\}}, \"broker_cpu_s\": $(awk -v ticks="$(($(node_ticks) - before))" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", ticks / hz}'), \"load\": ${load}}"
    echo "${line}" | tee -a "$1" >&2
}

log "replay from local disk, ${REPS} runs"
for _ in $(seq 1 "${REPS}"); do consume_all "${work_dir}/local.jsonl"; done

log "archiving (meridian archive run --now)"
started=$(date +%s%N)
"${BIN}" archive run --now --config "${config}" --data-dir "${data_dir}/broker" >&2
archive_ms=$((($(date +%s%N) - started) / 1000000))
log "  archived in ${archive_ms} ms; waiting for local deletion"
# Every archived segment is gone locally once the oldest local one starts past the newest archived
# (trace events keep the log growing meanwhile, so counting segments would not do).
newest_archived=$(find "${data_dir}/archive/manifests/broker-a" -name '*.json' -printf '%f\n' | sort | tail -n 1)
newest_archived=$((10#${newest_archived%.json}))
oldest_local() {
    local oldest
    oldest=$(find "${data_dir}/broker/commitlog" -maxdepth 1 -type f -name '[0-9]*' -printf '%f\n' | sort | head -n 1)
    echo $((10#${oldest}))
}
for _ in $(seq 1 600); do
    (($(oldest_local) > newest_archived)) && break
    sleep 0.1
done
(($(oldest_local) > newest_archived)) || { log "archived segments were not deleted locally"; exit 1; }
archive_bytes=$(du -sb "${data_dir}/archive/messages/topic=replay" | cut -f1)
log "every archived segment is deleted locally (local log from offset $(oldest_local)); archive of replay: ${archive_bytes} bytes"

log "replay from the archive, ${REPS} runs"
for _ in $(seq 1 "${REPS}"); do consume_all "${work_dir}/archive.jsonl"; done

load=$(cut -d' ' -f1-3 /proc/loadavg)
"${PYTHON}" - "${work_dir}/local.jsonl" "${work_dir}/archive.jsonl" "${COUNT}" "${SIZE}" "${archive_bytes}" "${load}" <<'EOF'
import json, statistics, sys
local_file, archive_file, count, size, archive_bytes, load = sys.argv[1:]
runs = {name: [json.loads(line) for line in open(path) if line.strip()] for name, path in (("local disk", local_file), ("archive", archive_file))}
for name, rows in runs.items():
    for row in rows:
        if row["messages"] != int(count):
            sys.exit(f"FAIL: a {name} run consumed {row['messages']} of {count} messages")
median = {name: {key: statistics.median(row[key] for row in rows) for key in ("msgs_per_s", "mb_per_s", "seconds", "broker_cpu_s")}
          for name, rows in runs.items()}
p50 = {name: statistics.median(row["pull_latency_ms"]["p50"] for row in rows) for name, rows in runs.items()}
p99 = {name: statistics.median(row["pull_latency_ms"]["p99"] for row in rows) for name, rows in runs.items()}
print(f"{count} messages of about {size} B, {len(runs['local disk'])} runs each; archive of the topic {int(archive_bytes) / 1e6:.1f} MB; load at the end {load}")
print()
print("| served from | msgs/s (median) | MB/s of bodies | seconds | pull p50 | pull p99 | broker CPU s | vs local |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for name in runs:
    m = median[name]
    print(f"| {name} | {m['msgs_per_s']:,.0f} | {m['mb_per_s']:.1f} | {m['seconds']:.2f} | {p50[name]:.2f} ms | {p99[name]:.2f} ms "
          f"| {m['broker_cpu_s']:.1f} | {m['msgs_per_s'] / median['local disk']['msgs_per_s']:.2f} |")
for name, rows in runs.items():
    print(f"{name} runs: " + ", ".join(f"{row['msgs_per_s']:,.0f} msgs/s (load {row['load']})" for row in rows))
EOF
log "archive conversion of all sealed segments took ${archive_ms} ms"
