#!/usr/bin/env bash
# A Python with DuckDB (from PyPI) for the independent archive reader (scripts/archive-duckdb.py,
# its e2e test) and the query benchmark (scripts/bench-query.sh), and with kubernetes-validate for
# the schema check of the Kubernetes manifests (scripts/check-deploy.py). Made once per machine
# under ${XDG_CACHE_HOME:-~/.cache}/meridian/duckdb-venv (about 30 s, a 20 MB wheel and the
# bundled Kubernetes schemas); afterwards it only checks the versions, in well under a second.
#
# Usage: scripts/duckdb-env.sh        prints the path of the venv's python (progress on stderr)
#
# Needs python3 (3.9 or newer). Where `python3 -m venv` cannot install pip (Debian and Ubuntu
# without the python3-venv package: "ensurepip is not available"), the venv is made without pip
# and pip is bootstrapped from its wheel on PyPI (checked against PyPI's sha256), so a fresh
# Debian needs nothing beyond python3.
set -euo pipefail

PYTHON=${PYTHON:-python3}
DUCKDB_VERSION=2.0.1
K8S_VALIDATE_VERSION=1.37.0
venv=${MERIDIAN_DUCKDB_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian/duckdb-venv}
venv_python="${venv}/bin/python"

log() {
    echo "duckdb-env: $*" >&2
}

installed_version() {
    "${venv_python}" -c 'import duckdb, importlib.metadata as m; print(duckdb.__version__, m.version("kubernetes-validate"))' 2>/dev/null || true
}

if [[ -x "${venv_python}" && "$(installed_version)" == "${DUCKDB_VERSION} ${K8S_VALIDATE_VERSION}" ]]; then
    echo "${venv_python}"
    exit 0
fi

# Installs pip into the venv from PyPI's newest pip wheel: a wheel is a zip Python can run pip from.
bootstrap_pip() {
    log "ensurepip is not available here: bootstrapping pip from its wheel on PyPI"
    local wheel_dir
    wheel_dir=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the variable is local
    trap "rm -rf '${wheel_dir}'" RETURN
    "${venv_python}" - "${wheel_dir}" <<'EOF'
import hashlib, json, sys, urllib.parse, urllib.request
wheel_dir = sys.argv[1]
index = "https://pypi.org/pypi/pip/json"
with urllib.request.urlopen(index, timeout=60) as response:
    release = json.load(response)
wheel = next(f for f in release["urls"] if f["packagetype"] == "bdist_wheel")
# Mirrors answer with URLs relative to the JSON's.
with urllib.request.urlopen(urllib.parse.urljoin(index, wheel["url"]), timeout=120) as response:
    data = response.read()
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit(f"{wheel['filename']}: sha256 does not match PyPI's")
with open(f"{wheel_dir}/{wheel['filename']}", "wb") as out:
    out.write(data)
EOF
    local wheel
    wheel=$(ls "${wheel_dir}"/pip-*.whl)
    "${venv_python}" "${wheel}/pip" install --quiet --no-cache-dir "${wheel}" >&2
}

if ! command -v "${PYTHON}" >/dev/null; then
    log "${PYTHON} not found: install Python 3 (Debian: apt-get install -y python3)"
    exit 1
fi
mkdir -p "$(dirname "${venv}")"
if [[ ! -x "${venv_python}" ]] || ! "${venv_python}" -m pip --version >/dev/null 2>&1; then
    rm -rf "${venv}"
    log "creating a venv in ${venv}"
    if ! "${PYTHON}" -m venv "${venv}" >&2 2>/dev/null; then
        rm -rf "${venv}"
        "${PYTHON}" -m venv --without-pip "${venv}" >&2
        bootstrap_pip
    fi
fi
log "installing duckdb==${DUCKDB_VERSION} and kubernetes-validate==${K8S_VALIDATE_VERSION} from PyPI"
"${venv_python}" -m pip install --quiet --disable-pip-version-check "duckdb==${DUCKDB_VERSION}" \
    "kubernetes-validate==${K8S_VALIDATE_VERSION}" >&2
if [[ "$(installed_version)" != "${DUCKDB_VERSION} ${K8S_VALIDATE_VERSION}" ]]; then
    log "duckdb ${DUCKDB_VERSION} and kubernetes-validate ${K8S_VALIDATE_VERSION} did not import from ${venv_python}"
    exit 1
fi
echo "${venv_python}"
