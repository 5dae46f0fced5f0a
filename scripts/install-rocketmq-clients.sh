#!/usr/bin/env bash
# RocketMQ clients written by others, for the compatibility suite (tests/e2e/compat.rs): PyPI
# `rocketmq` 0.4.4, whose wheel bundles Apache's C++ client core (librocketmq.so, manylinux1
# x86_64). Made once per machine in ${MERIDIAN_COMPAT_CACHE:-~/.cache/meridian-compat}/rocketmq-venv
# (a few seconds); afterwards it only checks that the client still loads.
#
# It also installs npm `ali-ons` 3.12.0 (pure JavaScript) through scripts/install-ali-ons.sh, which
# prints that client's folder (MERIDIAN_TEST_ALI_ONS).
#
# Usage: scripts/install-rocketmq-clients.sh    prints the venv's python (progress on stderr)
#
# Needs python3 with venv (Debian: apt-get install -y python3-venv) on x86_64 Linux: the wheel
# carries no other builds.
set -euo pipefail

PYTHON=${PYTHON:-python3}
ROCKETMQ_VERSION=0.4.4
cache=${MERIDIAN_COMPAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-compat}
venv="${cache}/rocketmq-venv"
venv_python="${venv}/bin/python"

log() {
    echo "install-rocketmq-clients: $*" >&2
}

# The JavaScript client first: its folder is printed by install-ali-ons.sh itself.
"$(dirname "$0")/install-ali-ons.sh" >/dev/null

loads() {
    "${venv_python}" -c 'import importlib.metadata as m, rocketmq.client; print(m.version("rocketmq"))' 2>/dev/null || true
}

if [[ -x "${venv_python}" && "$(loads)" == "${ROCKETMQ_VERSION}" ]]; then
    echo "${venv_python}"
    exit 0
fi
if [[ "$(uname -m)" != "x86_64" || "$(uname -s)" != "Linux" ]]; then
    log "PyPI rocketmq ${ROCKETMQ_VERSION} ships librocketmq.so for x86_64 Linux only; this is $(uname -s) $(uname -m)"
    exit 1
fi
if ! command -v "${PYTHON}" >/dev/null; then
    log "${PYTHON} not found: install Python 3 (Debian: apt-get install -y python3 python3-venv)"
    exit 1
fi
rm -rf "${venv}"
mkdir -p "${cache}"
log "creating a venv in ${venv}"
"${PYTHON}" -m venv "${venv}" >&2
log "installing rocketmq==${ROCKETMQ_VERSION} from PyPI"
"${venv_python}" -m pip install --quiet --disable-pip-version-check "rocketmq==${ROCKETMQ_VERSION}" >&2
if [[ "$(loads)" != "${ROCKETMQ_VERSION}" ]]; then
    log "rocketmq ${ROCKETMQ_VERSION} did not load from ${venv_python}; 'import rocketmq.client' says:"
    "${venv_python}" -c 'import rocketmq.client' >&2 || true
    exit 1
fi
echo "${venv_python}"
