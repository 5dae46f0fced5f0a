#!/usr/bin/env bash
# Installs the S3-compatible test server the archive's object_store suite runs against:
# s3s-fs 0.14.1 from crates.io (0.17 needs a newer Rust than ours). About 6 minutes to build on
# 2 cores, once per machine; the binary is cached under $CARGO_HOME/bin (~/.cargo/bin).
#
# Usage: scripts/install-s3s-fs.sh        prints the path of the installed binary
set -euo pipefail

CARGO=${CARGO:-cargo}
VERSION=0.14.1
bin_dir=${CARGO_HOME:-$HOME/.cargo}/bin

if [[ -x "${bin_dir}/s3s-fs" ]] && "${bin_dir}/s3s-fs" --version 2>/dev/null | grep -q "${VERSION}"; then
    echo "${bin_dir}/s3s-fs"
    exit 0
fi
echo "installing s3s-fs ${VERSION} with '${CARGO} install' (about 6 minutes, once per machine)" >&2
# Its own target dir, so the build neither waits on nor invalidates the workspace's target/.
"${CARGO}" install "s3s-fs@${VERSION}" --features binary --locked \
    --target-dir "${TMPDIR:-/tmp}/s3s-fs-install-target" >&2
echo "${bin_dir}/s3s-fs"
