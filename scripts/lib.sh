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
