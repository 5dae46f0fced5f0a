#!/usr/bin/env bash
# Near-by figures (docs/benchmarks.md, "Near-by"): rebalance time of a group of ten after a join,
# a kill -9 and a clean leave, and the share of cross-IDC sends in a healthy two-IDC cluster.
# Runs the e2e tests that measure them RUNS times (default 3) and prints their figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-3}
cargo build --bin meridian
for run in $(seq 1 "$runs"); do
    echo "== run $run of $runs"
    cargo nextest run -p meridian-tests --test e2e --no-capture \
        -E 'test(a_group_of_ten_converges) | test(stay_in_their_idc)' 2>&1 |
        grep -E "rebalance of a group|crossed IDCs"
done
