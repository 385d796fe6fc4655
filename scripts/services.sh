#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis servers for the test suite (and the `promtool` that
# checks deploy/prometheus/: installed when missing, never run as a server).
#
# Usage (run it, do not source it):
#
#   eval "$(scripts/services.sh start)"   # start; exports the variables below
#   scripts/services.sh stop              # stop both, remove the temp dir
#
# `start` prints only `export ...` lines on stdout (all messages go to stderr):
#
#   export CAUCE_TEST_SERVICES_DIR=/tmp/cauce-services.XXXXXX
#   export CAUCE_TEST_POSTGRES_URL=postgresql+psycopg://cauce:cauce@127.0.0.1:PORT/postgres
#   export CAUCE_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#
# If start fails it cleans up after itself, exits non-zero and prints the line
# `false` on stdout, so `eval "$(scripts/services.sh start)"` itself fails too
# (and aborts a `set -e` caller).  Typical use in a test runner:
#
#   eval "$(scripts/services.sh start)"
#   trap 'scripts/services.sh stop' EXIT
#
# `stop` reads CAUCE_TEST_SERVICES_DIR (or takes the directory as its argument).
# It is safe to call twice, with nothing started, or after a failed start.
#
# Environment:
#   CAUCE_TEST_SERVICES   comma-separated subset of "postgres,redis,promtool" (default: all)
#   CAUCE_TEST_PG_BINDIR  PostgreSQL bin dir to use (default: newest
#                         /usr/lib/postgresql/*/bin; PATH is never used for it)
#
# Missing servers are installed with apt-get (Debian; needs root):
#   apt-get update, then apt-get install -y --no-install-recommends postgresql redis-server
#   (and prometheus, for promtool)
# PostgreSQL refuses to run as root, so when run as root the server runs as the
# `postgres` system user (created by the Debian package) or, failing that, a
# system user `cauce-pg` created here.  Both servers listen on 127.0.0.1 only,
# on free ports, with all their files inside the temp dir.

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    echo "services.sh: run this script, do not source it:  eval \"\$(scripts/services.sh start)\"" >&2
    return 1
fi

set -Eeuo pipefail

PROG=services.sh
PG_ROLE=cauce
PG_PASSWORD=cauce
PG_START_TIMEOUT=30
REDIS_START_TIMEOUT=15
STOP_TIMEOUT=15
MARKER=.cauce-test-services
LOCK_DIR=/run/lock
[[ -d "$LOCK_DIR" && -w "$LOCK_DIR" ]] || LOCK_DIR=/tmp
LOCK_FILE=$LOCK_DIR/cauce-test-services.lock
FALLBACK_PG_USER=cauce-pg

# Keep the caller's libpq settings from leaking into our commands.
unset PGDATA PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE \
    PGOPTIONS PGSERVICE PGSERVICEFILE PGSSLMODE PGCONNECT_TIMEOUT || true

# Messages go to LOGFD: the real stderr even while a trap runs inside a
# redirected command (start_services sets it; daemons get it closed).
LOGFD=2
log() { printf '%s: %s\n' "$PROG" "$*" >&"$LOGFD"; }
die() { log "error: $*"; exit 1; }
on_err() { log "error: command failed (exit $1) at line $2: $3"; }
trap 'on_err "$?" "$LINENO" "$BASH_COMMAND"' ERR

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" >&2
}

# ---------------------------------------------------------------- helpers ----

free_port() {
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to pick free ports"
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Newest PostgreSQL bin dir holding initdb, pg_ctl and postgres ("" if none).
find_pg_bindir() {
    if [[ -n "${CAUCE_TEST_PG_BINDIR:-}" ]]; then
        printf '%s\n' "$CAUCE_TEST_PG_BINDIR"
        return 0
    fi
    local d best="" bestver="" ver
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] || continue
        ver=${d%/bin}
        ver=${ver##*/}
        if [[ -z "$best" ]] || [[ "$(printf '%s\n%s\n' "$bestver" "$ver" | sort -V | tail -n 1)" == "$ver" ]]; then
            best=$d
            bestver=$ver
        fi
    done
    printf '%s\n' "$best"
}

have_redis() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}

have_promtool() {
    command -v promtool >/dev/null 2>&1
}

# Install the Debian packages named in "$@" (apt-get update once, then install).
apt_install() {
    (( EUID == 0 )) || die "missing $*; install them (apt-get install $*) or run as root"
    command -v apt-get >/dev/null 2>&1 || die "missing $*, and apt-get is not available to install them"
    local aptlog created_policy=0 rc=0
    aptlog=$(mktemp)
    # Keep the packages' maintainer scripts from starting system-wide daemons.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    log "installing $* with apt-get (this takes a minute) ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get -q update >"$aptlog" 2>&1; then
        rc=1
        log "error: 'apt-get update' failed:"
    elif ! DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends \
            -o DPkg::Lock::Timeout=300 install "$@" >>"$aptlog" 2>&1; then
        rc=1
        log "error: 'apt-get install $*' failed:"
    fi
    if (( created_policy )); then rm -f /usr/sbin/policy-rc.d; fi
    if (( rc )); then
        tail -n 30 "$aptlog" >&2
        rm -f "$aptlog"
        exit 1
    fi
    rm -f "$aptlog"
    log "installed $*"
}

# Run a command as the PostgreSQL user (from a directory that user can enter).
# No subshell, so that on INT/TERM the trap runs only after the command ended.
as_pg() {
    if (( EUID == 0 )); then
        runuser -u "$PG_USER" -- env -C / "$@"
    else
        env -C / "$@"
    fi
}

# Print the pids of our postgres/redis processes whose cwd is inside dir $1.
procs_in_dir() {
    local dir=$1 p pid cwd comm
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [[ "$pid" != "$$" ]] || continue
        comm=$(cat "$p/comm" 2>/dev/null) || continue
        case "$comm" in postgres | postmaster | redis-server | redis-check-*) ;; *) continue ;; esac
        cwd=$(readlink "$p/cwd" 2>/dev/null) || continue
        if [[ "$cwd" == "$dir" || "$cwd" == "$dir"/* ]]; then
            printf '%s\n' "$pid"
        fi
    done
}

# Wait until no process from procs_in_dir is left (timeout $2 seconds).
wait_procs_gone() {
    local dir=$1 timeout=$2 i
    for ((i = 0; i < timeout * 10; i++)); do
        [[ -z "$(procs_in_dir "$dir")" ]] && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- stop -------

stop_postgres() {
    local dir=$1 pgdir=$1/pg bindir user pid
    [[ -f "$pgdir/data/postmaster.pid" && -f "$pgdir/bindir" ]] || return 0
    pid=$(head -n 1 "$pgdir/data/postmaster.pid" 2>/dev/null || true)
    # Only if the postmaster named in the pid file is alive and is ours.
    [[ "$pid" =~ ^[0-9]+$ && "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" == "$pgdir/data" ]] ||
        return 0
    bindir=$(cat "$pgdir/bindir")
    user=$(cat "$pgdir/user" 2>/dev/null || true)
    PG_USER=${user:-postgres}
    if [[ -x "$bindir/pg_ctl" ]]; then
        as_pg "$bindir/pg_ctl" -D "$pgdir/data" -m immediate -w -t "$STOP_TIMEOUT" stop \
            </dev/null >&2 2>&1 || log "warning: pg_ctl stop failed; will kill postgres"
    fi
}

stop_redis() {
    local dir=$1 rdir=$1/redis port pid
    [[ -d "$rdir" ]] || return 0
    if [[ -f "$rdir/port" ]] && command -v redis-cli >/dev/null 2>&1; then
        port=$(cat "$rdir/port")
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave </dev/null >/dev/null 2>&1 || true
    fi
    if [[ -f "$rdir/redis.pid" ]]; then
        pid=$(cat "$rdir/redis.pid" 2>/dev/null || true)
        if [[ "$pid" =~ ^[0-9]+$ && "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" == "$rdir" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    fi
}

stop_dir() {
    local dir=$1 pids
    [[ -n "$dir" ]] || return 0
    if [[ ! -e "$dir" ]]; then
        log "nothing to stop: $dir does not exist (already stopped?)"
        return 0
    fi
    dir=$(cd "$dir" && pwd -P) || die "cannot enter $dir"
    [[ -f "$dir/$MARKER" ]] || die "$dir was not made by $PROG start (no $MARKER); not touching it"
    cd /
    stop_postgres "$dir" || true
    stop_redis "$dir" || true
    if ! wait_procs_gone "$dir" "$STOP_TIMEOUT"; then
        pids=$(procs_in_dir "$dir" | tr '\n' ' ')
        log "warning: killing leftover processes: $pids"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        wait_procs_gone "$dir" 5 || die "processes still running in $dir: $(procs_in_dir "$dir" | tr '\n' ' ')"
    fi
    rm -rf -- "$dir" || die "could not remove $dir"
    log "stopped services in $dir and removed it"
}

cmd_stop() {
    local dir=${1:-${CAUCE_TEST_SERVICES_DIR:-}}
    if [[ -z "$dir" ]]; then
        log "nothing to stop: CAUCE_TEST_SERVICES_DIR is not set"
        return 0
    fi
    stop_dir "$dir"
}

# ---------------------------------------------------------------- start ------

ensure_installed() {
    local want_pg=$1 want_redis=$2 want_promtool=$3 pkgs=()
    missing_packages() {
        pkgs=()
        [[ $want_pg == 1 && -z "$(find_pg_bindir)" ]] && pkgs+=(postgresql)
        [[ $want_redis == 1 ]] && ! have_redis && pkgs+=(redis-server)
        [[ $want_promtool == 1 ]] && ! have_promtool && pkgs+=(prometheus)
        return 0
    }
    missing_packages
    (( ${#pkgs[@]} )) || return 0
    if (( EUID == 0 )); then
        # Serialize installs between parallel runs, then look again.
        exec 9>>"$LOCK_FILE"
        flock -w 900 9 || die "timed out waiting for another install (lock $LOCK_FILE)"
        missing_packages
        if (( ${#pkgs[@]} )); then apt_install "${pkgs[@]}"; fi
        exec 9>&-
    else
        apt_install "${pkgs[@]}"
    fi
    if [[ $want_pg == 1 && -z "$(find_pg_bindir)" ]]; then
        die "PostgreSQL still not found under /usr/lib/postgresql/*/bin after installing"
    fi
    if [[ $want_redis == 1 ]] && ! have_redis; then
        die "redis-server/redis-cli still not found after installing"
    fi
    if [[ $want_promtool == 1 ]] && ! have_promtool; then
        die "promtool still not found after installing prometheus"
    fi
}

choose_pg_user() {
    if (( EUID != 0 )); then
        PG_USER=$(id -un)
        return 0
    fi
    if getent passwd postgres >/dev/null 2>&1; then
        PG_USER=postgres
        return 0
    fi
    PG_USER=$FALLBACK_PG_USER
    getent passwd "$PG_USER" >/dev/null 2>&1 && return 0
    exec 9>>"$LOCK_FILE"
    flock -w 300 9 || die "timed out waiting for lock $LOCK_FILE"
    if ! getent passwd "$PG_USER" >/dev/null 2>&1; then
        log "creating system user $PG_USER to run PostgreSQL"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$PG_USER" || die "useradd $PG_USER failed"
    fi
    exec 9>&-
}

# Make the services dir (under $TMPDIR, else /tmp); it must be reachable by
# PG_USER, free of blanks/quotes and short enough for a unix socket path.
make_services_dir() {
    local dir
    dir=$(mktemp -d -t cauce-services.XXXXXX) || die "mktemp -d failed"
    dir=$(cd "$dir" && pwd -P)
    chmod 0755 "$dir"
    if (( ${#dir} > 80 )) || [[ "$dir" =~ [[:space:]\'\"\\] ]] || { (( EUID == 0 )) && [[ $WANT_PG == 1 ]] &&
        ! (cd / && runuser -u "$PG_USER" -- test -x "$dir") 2>/dev/null; }; then
        rmdir "$dir"
        dir=$(mktemp -d /tmp/cauce-services.XXXXXX) || die "mktemp -d /tmp failed"
        chmod 0755 "$dir"
    fi
    SERVICES_DIR=$dir
    : >"$dir/$MARKER"
}

start_postgres() {
    local dir=$SERVICES_DIR pgdir=$SERVICES_DIR/pg bindir ver major locale auth_host port attempt ok
    bindir=$(find_pg_bindir)
    [[ -x "$bindir/initdb" && -x "$bindir/pg_ctl" && -x "$bindir/postgres" ]] ||
        die "no initdb/pg_ctl/postgres in '$bindir'"
    ver=${bindir%/bin}
    ver=${ver##*/}
    major=${ver%%.*}
    mkdir -m 0700 "$pgdir"
    printf '%s\n' "$bindir" >"$pgdir/bindir"
    printf '%s\n' "$PG_USER" >"$pgdir/user"
    printf '%s\n' "$PG_PASSWORD" >"$pgdir/pwfile"
    if (( EUID == 0 )); then
        chown -R "$PG_USER:" "$pgdir" || die "chown $pgdir to $PG_USER failed"
    fi
    as_pg test -w "$pgdir" || die "$PG_USER cannot write to $pgdir"

    locale=C
    if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then locale=C.UTF-8; fi
    auth_host=scram-sha-256
    if [[ "$major" =~ ^[0-9]+$ ]] && (( major < 14 )); then auth_host=md5; fi

    log "initdb (PostgreSQL $ver from $bindir, user $PG_USER, locale $locale)"
    if ! as_pg "$bindir/initdb" -D "$pgdir/data" -U "$PG_ROLE" --pwfile="$pgdir/pwfile" \
        --auth-local=trust --auth-host="$auth_host" -E UTF8 --locale="$locale" \
        --no-sync </dev/null >"$dir/initdb.log" 2>&1; then
        tail -n 30 "$dir/initdb.log" >&2
        die "initdb failed (log above)"
    fi
    rm -f "$pgdir/pwfile"

    ok=0
    for attempt in 1 2 3; do
        port=$(free_port)
        printf '%s\n' "$port" >"$pgdir/port"
        log "starting PostgreSQL on 127.0.0.1:$port"
        if as_pg "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w -t "$PG_START_TIMEOUT" \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            start </dev/null >&2 2>&1 {LOGFD}>&-; then
            ok=1
            break
        fi
        if grep -q 'Address already in use' "$pgdir/postgres.log" 2>/dev/null && (( attempt < 3 )); then
            log "port $port was taken meanwhile; retrying with another"
            as_pg "$bindir/pg_ctl" -D "$pgdir/data" -m immediate -w stop </dev/null >/dev/null 2>&1 || true
            continue
        fi
        break
    done
    if (( ! ok )); then
        log "PostgreSQL failed to start; tail of $pgdir/postgres.log:"
        tail -n 30 "$pgdir/postgres.log" >&2 2>/dev/null || true
        die "PostgreSQL did not start"
    fi

    local i ready=0
    for ((i = 0; i < PG_START_TIMEOUT * 10; i++)); do
        if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$PG_ROLE" -d postgres </dev/null; then
            ready=1
            break
        fi
        sleep 0.1
    done
    if (( ! ready )); then
        tail -n 30 "$pgdir/postgres.log" >&2 || true
        die "PostgreSQL on 127.0.0.1:$port not accepting connections after ${PG_START_TIMEOUT}s"
    fi
    if ! PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=10 "$bindir/psql" -X -q -v ON_ERROR_STOP=1 \
        "host=127.0.0.1 port=$port user=$PG_ROLE dbname=postgres" -c 'select 1' </dev/null >/dev/null; then
        tail -n 30 "$pgdir/postgres.log" >&2 || true
        die "cannot log in to PostgreSQL on 127.0.0.1:$port as $PG_ROLE with a password"
    fi
    PG_PORT=$port
    log "PostgreSQL ready on 127.0.0.1:$port"
}

start_redis() {
    local rdir=$SERVICES_DIR/redis port attempt ok i
    mkdir -m 0700 "$rdir"
    ok=0
    for attempt in 1 2 3; do
        port=$(free_port)
        printf '%s\n' "$port" >"$rdir/port"
        log "starting Redis on 127.0.0.1:$port"
        rm -f "$rdir/redis.pid"
        if ! redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize yes --pidfile "$rdir/redis.pid" --dir "$rdir" \
            --logfile "$rdir/redis.log" </dev/null >&2 2>&1 {LOGFD}>&-; then
            tail -n 30 "$rdir/redis.log" >&2 2>/dev/null || true
            die "redis-server failed to start"
        fi
        for ((i = 0; i < REDIS_START_TIMEOUT * 10; i++)); do
            if [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null </dev/null)" == PONG ]]; then
                # Make sure it is our server that answered, not another one.
                if [[ "$(redis-cli -h 127.0.0.1 -p "$port" config get dir 2>/dev/null </dev/null |
                    sed -n 2p)" == "$rdir" ]]; then
                    ok=1
                    break
                fi
                echo 'Address already in use (another server answered)' >>"$rdir/redis.log"
            fi
            if grep -q 'Address already in use' "$rdir/redis.log" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        (( ok )) && break
        if grep -q 'Address already in use' "$rdir/redis.log" 2>/dev/null && (( attempt < 3 )); then
            log "port $port was taken meanwhile; retrying with another"
            : >"$rdir/redis.log"
            continue
        fi
        break
    done
    if (( ! ok )); then
        log "Redis failed to start; tail of $rdir/redis.log:"
        tail -n 30 "$rdir/redis.log" >&2 2>/dev/null || true
        die "Redis on 127.0.0.1:$port did not answer PING within ${REDIS_START_TIMEOUT}s"
    fi
    REDIS_PORT=$port
    log "Redis ready on 127.0.0.1:$port"
}

parse_wanted() {
    local spec=${CAUCE_TEST_SERVICES:-postgres,redis,promtool} item
    WANT_PG=0
    WANT_REDIS=0
    WANT_PROMTOOL=0
    IFS=', ' read -r -a items <<<"$spec"
    for item in "${items[@]}"; do
        case "$item" in
            postgres | postgresql | pg) WANT_PG=1 ;;
            redis) WANT_REDIS=1 ;;
            promtool) WANT_PROMTOOL=1 ;;
            '') ;;
            *) die "CAUCE_TEST_SERVICES: unknown service '$item' (use postgres, redis, promtool)" ;;
        esac
    done
    (( WANT_PG || WANT_REDIS || WANT_PROMTOOL )) || die "CAUCE_TEST_SERVICES='$spec' selects nothing"
}

# Runs in a subshell whose stdout is stderr; writes export lines to file $1.
start_services() {
    local envfile=$1
    SERVICES_DIR=""
    exec {LOGFD}>&2
    trap 'rc=$?; exec >&"$LOGFD" 2>&1
        if [[ -n "$SERVICES_DIR" ]]; then log "start failed; cleaning up $SERVICES_DIR"; stop_dir "$SERVICES_DIR" || true; fi
        exit $rc' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    parse_wanted
    ensure_installed "$WANT_PG" "$WANT_REDIS" "$WANT_PROMTOOL"
    PG_USER=""
    if [[ $WANT_PG == 1 ]]; then choose_pg_user; fi
    make_services_dir
    log "services dir: $SERVICES_DIR"

    if [[ $WANT_PG == 1 ]]; then start_postgres; fi
    if [[ $WANT_REDIS == 1 ]]; then start_redis; fi

    {
        printf 'export CAUCE_TEST_SERVICES_DIR=%q\n' "$SERVICES_DIR"
        if [[ $WANT_PG == 1 ]]; then
            printf 'export CAUCE_TEST_POSTGRES_URL=%q\n' \
                "postgresql+psycopg://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
        fi
        if [[ $WANT_REDIS == 1 ]]; then
            printf 'export CAUCE_TEST_REDIS_URL=%q\n' "redis://127.0.0.1:$REDIS_PORT/0"
        fi
    } >"$envfile"
    trap - EXIT INT TERM
}

cmd_start() {
    local rc
    ENVFILE=$(mktemp)
    trap 'rm -f "$ENVFILE"' EXIT
    # The work runs in a subshell whose stdout is stderr, so that nothing but
    # the export lines reaches stdout and no daemon inherits the stdout pipe.
    trap - ERR
    # On INT/TERM wait for the subshell to clean up, then report failure.
    trap ':' INT TERM
    set +e
    (
        set -Eeuo pipefail
        trap 'on_err "$?" "$LINENO" "$BASH_COMMAND"' ERR
        start_services "$ENVFILE"
    ) </dev/null >&2
    rc=$?
    set -e
    if (( rc == 0 )) && [[ -s "$ENVFILE" ]]; then
        cat "$ENVFILE"
        return 0
    fi
    printf 'false  # scripts/services.sh start failed\n'
    log "start failed"
    exit $(( rc ? rc : 1 ))
}

case "${1:-}" in
    start)
        [[ $# -eq 1 ]] || die "usage: eval \"\$($0 start)\""
        cmd_start
        ;;
    stop)
        [[ $# -le 2 ]] || die "usage: $0 stop [DIR]"
        cmd_stop "${2:-}"
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage
        exit 2
        ;;
esac
