#!/usr/bin/env bash
# Installs the browser the console's end-to-end tests drive (tests/e2e/console.rs): Debian's
# headless-capable Chromium and its WebDriver server, chromedriver. Once per machine (apt); later
# runs only print the paths.
#
# Usage: scripts/install-chromium.sh      prints "CHROMEDRIVER CHROMIUM" on one line
#        (scripts/test.sh exports them as MERIDIAN_TEST_CHROMEDRIVER and MERIDIAN_TEST_CHROMIUM)
set -euo pipefail

find_paths() {
    driver=$(command -v chromedriver || true)
    browser=$(command -v chromium || command -v chromium-browser || true)
    [[ -n "${driver}" && -n "${browser}" ]]
}

if ! find_paths; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "chromium and chromium-driver are missing: run 'sudo apt-get install -y chromium chromium-driver' (or run $0 as root)" >&2
        exit 1
    fi
    echo "installing chromium and chromium-driver with apt-get (a minute or two, once per machine)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq chromium chromium-driver >&2
    find_paths || {
        echo "apt-get installed chromium and chromium-driver but chromedriver or chromium is still not on PATH" >&2
        exit 1
    }
fi
echo "${driver} ${browser}"
