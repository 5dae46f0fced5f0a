#!/usr/bin/env bash
# The query benchmark of issue 9: Meridian's query service against DuckDB (PyPI) over the same
# Parquet archive, in one run.
#
# 1. builds the release `meridian`;
# 2. makes the DuckDB venv (scripts/duckdb-env.sh);
# 3. writes an archive of MESSAGES generated messages (`meridian bench archive-gen`: 10 topics,
#    8 queues, ~200-byte JSON bodies, one in ten traced, over 3 days);
# 4. starts `meridian query` over it (config below) and runs scripts/bench-query.py: a fixed set of
#    queries, each checked to give the same answer in both engines, REPS timed runs each, medians.
#
# Usage: scripts/bench-query.sh            (MESSAGES=20000000 REPS=5 by default)
#   MESSAGES=2000000 REPS=3 scripts/bench-query.sh          a quick look
#   KEEP_ARCHIVE=1 scripts/bench-query.sh                   reuse the archive of a previous run
#   BENCH_DIR=/path                                         where the archive goes (/tmp/meridian-bench-query)
#   QUERY_MEMORY_MB=4096                                    memory limit of both engines
# Needs about 1.3 GB of disk for 20M messages. The figures and the table go to stdout; progress
# to stderr. Write the table into docs/benchmarks.md ("Query (issue 9)") with date, commit, load.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
MESSAGES=${MESSAGES:-20000000}
REPS=${REPS:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/meridian-bench-query}
KEEP_ARCHIVE=${KEEP_ARCHIVE:-0}
QUERY_MEMORY_MB=${QUERY_MEMORY_MB:-4096}
archive="${BENCH_DIR}/archive"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

log "building the release meridian"
"${CARGO}" build --release --locked --bin meridian >&2
target_dir=${CARGO_TARGET_DIR:-target}
meridian="${target_dir}/release/meridian"

python=$(scripts/duckdb-env.sh)
log "duckdb: ${python}"

mkdir -p "${BENCH_DIR}"
if [[ "${KEEP_ARCHIVE}" == 1 && -d "${archive}/manifests" ]]; then
    log "reusing the archive in ${archive} (KEEP_ARCHIVE=1)"
else
    rm -rf "${archive}"
    log "generating ${MESSAGES} messages into ${archive}"
    "${meridian}" bench archive-gen --store "${archive}" --messages "${MESSAGES}" >&2
fi
du -sh "${archive}" >&2

# The service as a user would run it, with the memory limit both engines get.
port=$("${python}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
config="${BENCH_DIR}/query.toml"
cat >"${config}" <<EOF
http_listen = "127.0.0.1:${port}"

[archive]
store = "${archive}"

[query]
memory_limit_mb = ${QUERY_MEMORY_MB}
timeout_secs = 600.0
EOF
"${meridian}" query --config "${config}" >"${BENCH_DIR}/query.out" 2>"${BENCH_DIR}/query.log" &
server_pid=$!
trap 'stop_pid "${server_pid}"' EXIT
wait_ready "${server_pid}" "${BENCH_DIR}/query.out" "${BENCH_DIR}/query.log" 60
sed 's/^/  /' "${BENCH_DIR}/query.out" >&2

echo "query benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- query cli || echo ' (with local changes)'), ${MESSAGES} messages, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"${python}" scripts/bench-query.py --archive "${archive}" --server "http://127.0.0.1:${port}" \
    --messages "${MESSAGES}" --reps "${REPS}" --memory-limit-mb "${QUERY_MEMORY_MB}" \
    --json "${BENCH_DIR}/results.json"
