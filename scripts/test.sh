#!/usr/bin/env bash
# The project's one test command: `make test` runs this, locally and in CI (.ci/run).
#
# Steps: make sure cargo-nextest is there, check the crate graph (and the checker itself), start
# the services some tests need, then run every test of the workspace with nextest's `ci` profile
# (.config/nextest.toml). Arguments are passed on to `cargo nextest run`, for example
# `scripts/test.sh -E 'package(meridian-proto)'`.
#
# CARGO_TARGET_DIR is left to the caller: .ci/run points it outside the clone; locally it is
# ./target unless you set it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
current_step="setup"

log() {
    printf '[%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

on_exit() {
    local status=$?
    if ((status != 0)); then
        log "test.sh FAILED (exit ${status}) in step: ${current_step}"
    fi
}
trap on_exit EXIT

# Runs one named step, logging its start, end and duration. A failing command ends the script.
step() {
    current_step=$1
    shift
    log "==> ${current_step}"
    local started=${SECONDS}
    "$@"
    log "<== ${current_step} ($((SECONDS - started)) s)"
}

ensure_nextest() {
    if "${CARGO}" nextest --version >/dev/null 2>&1; then
        "${CARGO}" nextest --version | sed -n 1p
        return
    fi
    log "cargo-nextest is not installed ('${CARGO} nextest --version' failed): installing it with '${CARGO} install cargo-nextest --locked' (a few minutes, once per machine)"
    "${CARGO}" install cargo-nextest --locked
    "${CARGO}" nextest --version | sed -n 1p
}

check_crate_graph() {
    # The self-test first: it proves the checker still catches violations before we trust its "ok".
    "${PYTHON}" scripts/check-crate-graph.py --self-test
    "${PYTHON}" scripts/check-crate-graph.py
}

# Test-only services: installs what some tests need, exporting where it is as MERIDIAN_TEST_*
# variables. The archive's conformance suite starts its own s3s-fs (a real S3-compatible server)
# and Azurite (a real Azure Blob Storage server) on a loopback port per test; s3s-fs is built once
# per machine (about 6 minutes) and cached.
prepare_services() {
    MERIDIAN_TEST_S3S_FS=$(scripts/install-s3s-fs.sh)
    export MERIDIAN_TEST_S3S_FS
    log "s3s-fs: ${MERIDIAN_TEST_S3S_FS}"
    # Azurite from npm, a real Azure Blob Storage server for the same suite; installed once per
    # machine (about a minute) and cached.
    MERIDIAN_TEST_AZURITE=$(scripts/install-azurite.sh)
    export MERIDIAN_TEST_AZURITE
    log "azurite: ${MERIDIAN_TEST_AZURITE}"
    # DuckDB from PyPI, the independent reader of the archive (tests/e2e/archive_duckdb.rs); a
    # venv made once per machine (about 30 s) and cached.
    MERIDIAN_TEST_DUCKDB_PYTHON=$(scripts/duckdb-env.sh)
    export MERIDIAN_TEST_DUCKDB_PYTHON
    log "duckdb: ${MERIDIAN_TEST_DUCKDB_PYTHON}"
    # Debian's Chromium and chromedriver, the real browser of the console's tests
    # (tests/e2e/console.rs); apt-get once per machine.
    local chromium_paths
    chromium_paths=$(scripts/install-chromium.sh)
    MERIDIAN_TEST_CHROMEDRIVER=${chromium_paths%% *}
    MERIDIAN_TEST_CHROMIUM=${chromium_paths#* }
    export MERIDIAN_TEST_CHROMEDRIVER MERIDIAN_TEST_CHROMIUM
    log "chromedriver: ${MERIDIAN_TEST_CHROMEDRIVER}, chromium: ${MERIDIAN_TEST_CHROMIUM}"
    # PyPI rocketmq 0.4.4 (Apache's C++ client core), the unmodified RocketMQ client the
    # compatibility suite (tests/e2e/compat.rs) drives; a venv made once per machine and cached.
    MERIDIAN_TEST_ROCKETMQ_PYTHON=$(scripts/install-rocketmq-clients.sh)
    export MERIDIAN_TEST_ROCKETMQ_PYTHON
    log "rocketmq (C++ core): ${MERIDIAN_TEST_ROCKETMQ_PYTHON}"
    # npm ali-ons 3.12.0 (pure JavaScript), the second RocketMQ client of the suite; installed by
    # the script above, cached per machine.
    MERIDIAN_TEST_ALI_ONS=$(scripts/install-ali-ons.sh)
    export MERIDIAN_TEST_ALI_ONS
    log "ali-ons: ${MERIDIAN_TEST_ALI_ONS}"
}

# The end-to-end tests (tests/e2e) run the real `meridian` binary as separate processes; cargo does
# not build another package's binary for them, so build it first with the same profile.
build_binary() {
    "${CARGO}" build --locked --bin meridian
}

run_tests() {
    "${CARGO}" nextest run --workspace --locked --profile ci "$@"
}

log "meridian tests in $(pwd) (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default: ./target>})"
step "cargo-nextest" ensure_nextest
step "crate graph" check_crate_graph
step "test services" prepare_services
step "meridian binary" build_binary
step "cargo nextest run --workspace --locked --profile ci" run_tests "$@"
current_step="done"
log "all tests passed"
