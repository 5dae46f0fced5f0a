#!/usr/bin/env bash
# Broker group benchmarks (issue 4), figures for docs/benchmarks.md. Not part of CI: run by hand
# on a quiet machine. Builds the release `meridian`, then runs two ignored end-to-end harnesses
# against it (real processes on 127.0.0.4x):
#
#   bench_produce_single_quorum_idc_safe: 1 KiB sends, 64 in flight, to a lone broker, a group of
#       three acknowledging with quorum, and one with idc_safe, each then paced at half its rate;
#       prints a Markdown table with the group rates as a ratio of the lone broker's.
#   bench_failover_trials: kill -9 of the master under load, time to the first acknowledged send
#       on its successor, MERIDIAN_FAILOVER_TRIALS times (default 10); fails if any acknowledged
#       message is missing.
#
# Environment: CARGO (default cargo), MERIDIAN_BENCH_COUNT (messages per max-rate run, default
# 300000), MERIDIAN_FAILOVER_TRIALS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# CARGO_TARGET_DIR may be absolute (CI keeps it outside the clone) or relative to the clone.
[[ "${TARGET_DIR}" == /* ]] || TARGET_DIR="${PWD}/${TARGET_DIR}"

echo "[bench-replication] building the release binary" >&2
"${CARGO}" build --release --bin meridian
export MERIDIAN_BIN="${TARGET_DIR}/release/meridian"
echo "[bench-replication] running the harnesses against ${MERIDIAN_BIN}" >&2
"${CARGO}" test -p meridian-tests --test e2e -- --ignored --nocapture --test-threads 1 \
    replication::bench_produce_single_quorum_idc_safe replication::bench_failover_trials
