#!/usr/bin/env bash
# npm `ali-ons` 3.12.0, a pure JavaScript RocketMQ 4.x remoting client (not built on Apache's C++
# core), for the compatibility suite (tests/e2e/compat.rs, tests/compat/ali_ons.js). Installed
# once per machine into ${MERIDIAN_COMPAT_CACHE:-~/.cache/meridian-compat}/ali-ons-3.12.0 (a few
# seconds); afterwards it only checks that the package is there. Called by
# scripts/install-rocketmq-clients.sh.
#
# Usage: scripts/install-ali-ons.sh    prints the folder holding node_modules/ali-ons
set -euo pipefail

ALI_ONS_VERSION=3.12.0
cache=${MERIDIAN_COMPAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-compat}
dir="${cache}/ali-ons-${ALI_ONS_VERSION}"

installed() {
    node -e "process.stdout.write(require('${dir}/node_modules/ali-ons/package.json').version)" 2>/dev/null || true
}

command -v node >/dev/null && command -v npm >/dev/null || {
    echo "install-ali-ons: node and npm are missing: install Node.js 18 or newer (Debian: apt-get install -y nodejs npm), then run $0 again" >&2
    exit 1
}
if [[ "$(installed)" == "${ALI_ONS_VERSION}" ]]; then
    echo "${dir}"
    exit 0
fi
echo "install-ali-ons: installing ali-ons@${ALI_ONS_VERSION} with npm into ${dir}" >&2
mkdir -p "${dir}"
npm install --prefix "${dir}" --no-audit --no-fund --no-save --loglevel=error "ali-ons@${ALI_ONS_VERSION}" >&2
if [[ "$(installed)" != "${ALI_ONS_VERSION}" ]]; then
    echo "install-ali-ons: ali-ons ${ALI_ONS_VERSION} is not loadable from ${dir}/node_modules after npm install" >&2
    exit 1
fi
echo "${dir}"
