# Shell helpers the benchmark scripts share: `source scripts/lib.sh` after `cd` to the clone.

# A progress line on stderr, with the UTC time.
log() {
    printf '[%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

# Stops process $1 with SIGTERM and waits for it (it must be a child of this shell); after 30 s
# it is killed with SIGKILL, and the log says so. Nothing happens if it is not running.
stop_pid() {
    local pid=$1 waited=0
    [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 0
    kill -TERM "${pid}" 2>/dev/null || true
    while kill -0 "${pid}" 2>/dev/null && ((waited < 300)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "${pid}" 2>/dev/null; then
        log "process ${pid} did not stop within 30 s of SIGTERM; killing it"
        kill -KILL "${pid}" 2>/dev/null || true
    fi
    wait "${pid}" 2>/dev/null || true
}

# CPU seconds (user and system) process $1 has used so far.
process_cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"
}

# Lets the machine settle before a measured run: writes back dirty pages (the last run's data
# would otherwise be written back during this one) and, when allowed (root), drops the page cache
# so every run starts from the same memory state. Says which it did.
settle() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then
        echo 3 >/proc/sys/vm/drop_caches
        log "settled: dirty pages written back, page cache dropped"
    else
        log "settled: dirty pages written back (not root: page cache kept)"
    fi
    sleep 1
}

# Whether something listens on loopback port $1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The first loopback port from $1 on that nothing listens on (at most 100 tried).
free_port() {
    local port=$1
    while port_in_use "${port}"; do
        port=$((port + 1))
        if ((port > $1 + 100)); then
            log "no free loopback port in $1..${port}"
            return 1
        fi
    done
    echo "${port}"
}

# Sets up a benchmark script named $1 (e.g. bench-messaging): a fresh temp dir in `work_dir` (under
# MERIDIAN_BENCH_TMP, else TMPDIR, else /tmp), `node_pid` for the node it starts, and traps that
# stop that node and remove the dir on any exit, saying so when the script failed.
bench_setup() {
    bench_name=$1
    work_dir=$(mktemp -d "${MERIDIAN_BENCH_TMP:-${TMPDIR:-/tmp}}/meridian-${bench_name}.XXXXXX")
    node_pid=""
    trap bench_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Stops the node in `node_pid`, if any.
stop_node() {
    stop_pid "${node_pid}"
    node_pid=""
}

bench_exit() {
    local status=$?
    stop_node
    rm -rf "${work_dir}"
    if ((status != 0)); then
        log "${bench_name}.sh FAILED (exit ${status}); its data and node logs were in ${work_dir}, now removed: rerun to see them"
    fi
}

# Waits up to $4 seconds until process $1 has written a line starting with "ready" to the file $2.
# Fails, showing the end of its log file $3, if it exits first or is not ready in time.
wait_ready() {
    local pid=$1 out=$2 err=$3 seconds=$4 tries
    for ((tries = 0; tries < seconds * 10; tries++)); do
        grep -q '^ready' "${out}" 2>/dev/null && return 0
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.1
    done
    log "process ${pid} did not become ready (within ${seconds} s); the end of its log ${err}:"
    tail -n 30 "${err}" >&2
    return 1
}
