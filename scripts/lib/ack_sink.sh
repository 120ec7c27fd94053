# shellcheck shell=bash
# The acknowledging sink of the benchmarks (examples/ack_sink.rs: answers GET / like
# OpenSearch, acknowledges every `_bulk` action with 201 in one `errors:false` response and
# stores nothing, on one thread). Source it, then:
#   flowlogd_start_ack_sink WORKDIR [DELAY_MS]
# builds the sink (release) unless ACK_SINK_BIN names one, starts it on a free 127.0.0.1 port
# (DELAY_MS before each bulk answer) and sets sink_pid and sink_url; the caller kills sink_pid.
flowlogd_start_ack_sink() {
    local work=$1 delay=${2:-} bin=${ACK_SINK_BIN:-}
    if [ -z "$bin" ]; then
        echo "== building the acknowledging sink (examples/ack_sink.rs)"
        cargo build --release --locked --quiet --example ack_sink
        bin="${CARGO_TARGET_DIR:-$(pwd -P)/target}/release/examples/ack_sink"
    fi
    "$bin" ${delay:+"$delay"} >"$work/sink.port" 2>"$work/sink.log" &
    sink_pid=$!
    for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
    sink_url="http://127.0.0.1:$(cat "$work/sink.port")"
}
