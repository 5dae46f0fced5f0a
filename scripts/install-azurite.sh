#!/usr/bin/env bash
# Installs the Azure Blob Storage server the archive's object_store suite runs against: Azurite,
# with the Azure SDK (@azure/storage-blob) that creates its containers, from the npm registry.
# About a minute, once per machine; cached under ${XDG_CACHE_HOME:-~/.cache}/meridian.
#
# Usage: scripts/install-azurite.sh        prints the folder (MERIDIAN_TEST_AZURITE)
set -euo pipefail

AZURITE=3.37.0
STORAGE_BLOB=12.32.0
dir=${XDG_CACHE_HOME:-$HOME/.cache}/meridian/azurite-${AZURITE}

if [[ -x "${dir}/node_modules/.bin/azurite-blob" && -d "${dir}/node_modules/@azure/storage-blob" ]]; then
    echo "${dir}"
    exit 0
fi
command -v npm >/dev/null || {
    echo "npm is missing: install Node.js 20 or newer (Debian: apt-get install nodejs npm), then run $0 again" >&2
    exit 1
}
echo "installing azurite ${AZURITE} and @azure/storage-blob ${STORAGE_BLOB} with npm into ${dir} (about a minute, once per machine)" >&2
mkdir -p "${dir}"
npm install --prefix "${dir}" --no-audit --no-fund --no-save --loglevel=error \
    "azurite@${AZURITE}" "@azure/storage-blob@${STORAGE_BLOB}" >&2
echo "${dir}"
