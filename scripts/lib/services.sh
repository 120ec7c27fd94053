# shellcheck shell=bash
# Starts and stops the local servers that scripts (the quickstart, demos) run
# against: the Azurite blob service and a real OpenSearch node (tests/opensearch), each on a
# free 127.0.0.1
# port, in its own session and process group so that stopping kills any
# children too. Source it:  . scripts/lib/services.sh
#
# Functions (all return non-zero with a message on stderr on failure):
#   flowlogd_free_port               print a free 127.0.0.1 TCP port
#   flowlogd_start_azurite [PORT]    start Azurite; exports FLOWLOGD_AZURITE_PORT,
#                                    FLOWLOGD_AZURITE_ENDPOINT (http://127.0.0.1:PORT/devstoreaccount1),
#                                    FLOWLOGD_AZURITE_ACCOUNT, FLOWLOGD_AZURITE_KEY (the public well-known key)
#   flowlogd_start_opensearch [PORT] start the OpenSearch node (heap FLOWLOGD_OPENSEARCH_HEAP, default
#                                    1g); exports FLOWLOGD_OPENSEARCH_PORT, FLOWLOGD_OPENSEARCH_URL.
#                                    Its data (.run/opensearch-home) survives a stop/start.
#   flowlogd_stop_opensearch         graceful stop (the node flushes), SIGKILL after 30 s
#   flowlogd_stop_azurite            graceful stop (SIGTERM to the group, SIGKILL after 10 s)
#   flowlogd_stop_services           both
#   flowlogd_service_running NAME    0 if NAME (azurite|opensearch) runs
#   flowlogd_services_env            print the export lines of the running services
# Starting a service that already runs only re-exports its variables.
#
# Files in .run/ (git-ignored; FLOWLOGD_RUN_DIR overrides): NAME.pid (the
# process group id), NAME.port, NAME.log. Azurite keeps its data in
# .run/azurite-data (FLOWLOGD_AZURITE_LOCATION overrides), which survives a
# stop/start. Binaries: FLOWLOGD_AZURITE_BIN / FLOWLOGD_OPENSEARCH_JAR, else the paths that
# scripts/deps.sh installs.

_FLOWLOGD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
FLOWLOGD_AZURITE_ACCOUNT=devstoreaccount1
FLOWLOGD_AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
# Seconds to wait for a server to accept connections.
: "${FLOWLOGD_SERVICE_START_TIMEOUT:=60}"

_flowlogd_run_dir() {
    echo "${FLOWLOGD_RUN_DIR:-$_FLOWLOGD_ROOT/.run}"
}

flowlogd_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Non-zombie processes in process group $1, one pid a line.
_flowlogd_group_pids() {
    local pgid=$1 f stat rest state ppid pgrp
    for f in /proc/[0-9]*/stat; do
        { read -r stat <"$f"; } 2>/dev/null || continue
        # The command name is in parentheses and may contain anything: split after the last ')'.
        rest=${stat##*) }
        read -r state ppid pgrp _ <<<"$rest"
        if [ "$pgrp" = "$pgid" ] && [ "$state" != Z ] && [ "$state" != X ]; then
            f=${f#/proc/}
            echo "${f%/stat}"
        fi
    done
}

# Whether the group recorded in NAME.pid still runs and is the server we started (a stale
# pid file after a reboot may name an unrelated process: its command line won't match).
flowlogd_service_running() {
    local name=$1 pidfile pgid p cmd marker
    pidfile="$(_flowlogd_run_dir)/$name.pid"
    [ -s "$pidfile" ] || return 1
    pgid=$(<"$pidfile")
    marker=$(_flowlogd_cmd_marker "$name")
    for p in $(_flowlogd_group_pids "$pgid"); do
        cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
        if [[ $cmd == *"$marker"* ]]; then
            return 0
        fi
    done
    return 1
}

_flowlogd_cmd_marker() {
    case $1 in
        azurite) echo "azurite-blob" ;;
        opensearch) echo "flowlogd-opensearch.jar" ;;
    esac
}

_flowlogd_bin() {
    local name=$1 bin
    case $name in
        azurite) bin=${FLOWLOGD_AZURITE_BIN:-$_FLOWLOGD_ROOT/.deps/node/node_modules/.bin/azurite-blob} ;;
        opensearch) bin=${FLOWLOGD_OPENSEARCH_JAR:-$_FLOWLOGD_ROOT/tests/opensearch/target/flowlogd-opensearch.jar} ;;
    esac
    if [ ! -e "$bin" ]; then
        echo "services.sh: $name executable not found at $bin: run scripts/deps.sh" >&2
        return 1
    fi
    echo "$bin"
}

_flowlogd_export() {
    local name=$1 port=$2
    case $name in
        azurite)
            export FLOWLOGD_AZURITE_PORT=$port
            export FLOWLOGD_AZURITE_ENDPOINT="http://127.0.0.1:$port/$FLOWLOGD_AZURITE_ACCOUNT"
            export FLOWLOGD_AZURITE_ACCOUNT FLOWLOGD_AZURITE_KEY
            ;;
        opensearch)
            export FLOWLOGD_OPENSEARCH_PORT=$port
            export FLOWLOGD_OPENSEARCH_URL="http://127.0.0.1:$port"
            ;;
    esac
}

# _flowlogd_start NAME PORT READY_TEXT CMD...: runs CMD in a new session (so its pid is its
# process group id), logs to NAME.log, waits until the log shows READY_TEXT (so it is this
# server that answers) and 127.0.0.1:PORT accepts connections.
_flowlogd_start() {
    local name=$1 port=$2 ready=$3 run pgid i deadline
    shift 3
    run=$(_flowlogd_run_dir)
    if flowlogd_service_running "$name"; then
        _flowlogd_export "$name" "$(<"$run/$name.port")"
        return 0
    fi
    mkdir -p "$run" || return 1
    rm -f "$run/$name.pid" "$run/$name.port"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "services.sh: cannot start $name: port $port is already in use" >&2
        return 1
    fi
    # The inner shell records its own pid (the new session's and group's id), then becomes the
    # server; this works whether or not setsid has to fork.
    setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$run/$name.pid" "$@" \
        </dev/null >"$run/$name.log" 2>&1 &
    for ((i = 0; i < 50; i++)); do
        [ -s "$run/$name.pid" ] && break
        sleep 0.1
    done
    if [ ! -s "$run/$name.pid" ]; then
        echo "services.sh: $name did not start; $run/$name.log says:" >&2
        tail -n 20 "$run/$name.log" >&2
        return 1
    fi
    pgid=$(<"$run/$name.pid")
    echo "$port" >"$run/$name.port"
    deadline=$((SECONDS + FLOWLOGD_SERVICE_START_TIMEOUT))
    until grep -q -F -- "$ready" "$run/$name.log" && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if [ -z "$(_flowlogd_group_pids "$pgid")" ]; then
            echo "services.sh: $name exited before accepting connections on port $port; $run/$name.log says:" >&2
            tail -n 20 "$run/$name.log" >&2
            rm -f "$run/$name.pid" "$run/$name.port"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "services.sh: $name not answering on port $port after ${FLOWLOGD_SERVICE_START_TIMEOUT}s; stopping it. $run/$name.log says:" >&2
            tail -n 20 "$run/$name.log" >&2
            _flowlogd_stop "$name" 0
            return 1
        fi
        sleep 0.1
    done
    _flowlogd_export "$name" "$port"
}

# _flowlogd_stop NAME GRACE_SECONDS
_flowlogd_stop() {
    local name=$1 grace=$2 run pgid deadline
    run=$(_flowlogd_run_dir)
    if flowlogd_service_running "$name"; then
        pgid=$(<"$run/$name.pid")
        kill -TERM -- "-$pgid" 2>/dev/null || true
        deadline=$((SECONDS + grace))
        while [ -n "$(_flowlogd_group_pids "$pgid")" ] && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
        kill -KILL -- "-$pgid" 2>/dev/null || true
        # Reap it if this shell started it, so no zombie lingers in a long-lived shell.
        wait "$pgid" 2>/dev/null || true
    fi
    rm -f "$run/$name.pid" "$run/$name.port"
    return 0
}

flowlogd_start_azurite() {
    local port=${1:-} bin location
    bin=$(_flowlogd_bin azurite) || return 1
    [ -n "$port" ] || port=$(flowlogd_free_port) || return 1
    location=${FLOWLOGD_AZURITE_LOCATION:-$(_flowlogd_run_dir)/azurite-data}
    mkdir -p "$location" || return 1
    # --skipApiVersionCheck: the Azure SDK sends a newer x-ms-version than Azurite knows.
    _flowlogd_start azurite "$port" "successfully listens on" "$bin" --location "$location" \
        --blobHost 127.0.0.1 --blobPort "$port" \
        --skipApiVersionCheck --loose --disableTelemetry --silent
}

flowlogd_start_opensearch() {
    local port=${1:-} jar home heap
    jar=$(_flowlogd_bin opensearch) || return 1
    command -v java >/dev/null || { echo "services.sh: java not found (JDK 17 runs the OpenSearch node)" >&2; return 1; }
    [ -n "$port" ] || port=$(flowlogd_free_port) || return 1
    home=${FLOWLOGD_OPENSEARCH_HOME:-$(_flowlogd_run_dir)/opensearch-home}
    heap=${FLOWLOGD_OPENSEARCH_HEAP:-1g}
    mkdir -p "$home" || return 1
    # The launcher prints {"url":"http://127.0.0.1:PORT",...} once the cluster is yellow.
    # --no-stdin-watch: it would otherwise stop as soon as its stdin (/dev/null) ends.
    # A cold start takes ~6 s; allow more than the default on a loaded machine.
    FLOWLOGD_SERVICE_START_TIMEOUT=$((FLOWLOGD_SERVICE_START_TIMEOUT > 120 ? FLOWLOGD_SERVICE_START_TIMEOUT : 120)) \
        _flowlogd_start opensearch "$port" '{"url":' java "-Xms$heap" "-Xmx$heap" -jar "$jar" \
        --home "$home" --port "$port" --no-stdin-watch
}

flowlogd_stop_opensearch() {
    _flowlogd_stop opensearch 30
}

flowlogd_stop_azurite() {
    # Azurite needs about 2 s to save its metadata; SIGKILL would lose recent writes.
    _flowlogd_stop azurite 10
}

flowlogd_stop_services() {
    flowlogd_stop_opensearch
    flowlogd_stop_azurite
}

flowlogd_services_env() {
    local run name
    run=$(_flowlogd_run_dir)
    for name in azurite opensearch; do
        if flowlogd_service_running "$name"; then
            (
                _flowlogd_export "$name" "$(<"$run/$name.port")"
                case $name in
                    azurite)
                        echo "export FLOWLOGD_AZURITE_PORT=$FLOWLOGD_AZURITE_PORT"
                        echo "export FLOWLOGD_AZURITE_ENDPOINT=$FLOWLOGD_AZURITE_ENDPOINT"
                        echo "export FLOWLOGD_AZURITE_ACCOUNT=$FLOWLOGD_AZURITE_ACCOUNT"
                        echo "export FLOWLOGD_AZURITE_KEY='$FLOWLOGD_AZURITE_KEY'"
                        ;;
                    opensearch)
                        echo "export FLOWLOGD_OPENSEARCH_PORT=$FLOWLOGD_OPENSEARCH_PORT"
                        echo "export FLOWLOGD_OPENSEARCH_URL=$FLOWLOGD_OPENSEARCH_URL"
                        ;;
                esac
            )
        fi
    done
}
