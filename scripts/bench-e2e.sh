#!/usr/bin/env bash
# End-to-end throughput and memory of the release binary: Azurite → `flowlogd once` → a sink
# that acknowledges every bulk item without storing anything, so that flowlogd's own cost is
# what is measured. Against the real engine (its ceiling, flowlogd's fraction of it, bytes on
# disk): scripts/bench-engine.sh.
#
# Each run is `flowlogd once` under `/usr/bin/time -v` with a fresh registry, unless noted:
#   first-read     $NICS VNet + $NICS NSG v2 blobs of $RECORDS1 records × $TUPLES tuples, defaults;
#   small-batches  the same data with batch_max_docs = 500, batch_max_bytes = 1 MiB (memory
#                  follows the batch configuration);
#   growth         first-read's blobs grown to $RECORDS2 records, same registry: only new bytes;
#   big-blob-N     one VNet blob of 60 records × N tuples for each N of $BIG_TUPLES (16 and 65 MB
#                  by default): memory levels off instead of following blob size (invariant 6);
#   big-N-small    the last of them with small-batches' configuration.
# Prints one line per run: tuples, wall seconds, CPU seconds (user + system) of flowlogd,
# tuples/s and MB/s (wall), bytes downloaded vs blob bytes (new bytes, for growth), peak RSS. Results go into docs/PERFORMANCE.md by hand.
#
# Usage: scripts/bench-e2e.sh            (NICS=20 TUPLES=125 RECORDS1=40 RECORDS2=60 BIG_TUPLES="3400 13600")
#        FLOWLOGD_BIN=target/release/flowlogd scripts/bench-e2e.sh   (skip the build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)

NICS=${NICS:-20}
TUPLES=${TUPLES:-125}
RECORDS1=${RECORDS1:-40}
RECORDS2=${RECORDS2:-60}
BIG_TUPLES=${BIG_TUPLES:-3400 13600}

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh

[ -x /usr/bin/time ] || { echo "bench-e2e: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

work="$root/.run/bench-e2e"
export FLOWLOGD_RUN_DIR="$work/services"
export FLOWLOGD_AZURITE_LOCATION="$work/azurite-data"
sink_pid=""
cleanup() {
    [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
    flowlogd_stop_services
}
flowlogd_stop_services 2>/dev/null || true
rm -rf "$work"
mkdir -p "$work"
trap cleanup EXIT

bin=${FLOWLOGD_BIN:-}
if [ -z "$bin" ]; then
    echo "== building flowlogd (release)"
    cargo build --release --locked --quiet
    bin="$root/target/release/flowlogd"
fi

echo "== starting Azurite and the acknowledging sink"
flowlogd_start_azurite
# The sink: answers GET / like OpenSearch (so no ILM is attempted), accepts template PUTs,
# and acknowledges each `_bulk` action with 201 in one `errors:false` response.
cat >"$work/ack_sink.py" <<'PY'
import http.server, json, sys, threading

INFO = json.dumps({"name": "ack-sink", "cluster_name": "ack-sink", "cluster_uuid": "x",
                   "version": {"number": "2.19.0", "distribution": "opensearch"},
                   "tagline": "The OpenSearch Project: https://opensearch.org/"}).encode()
ITEM = b'{"create":{"status":201}}'
stats = {"requests": 0, "documents": 0, "bytes": 0}
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms
    # to every response and the sink, not flowlogd, sets the pace.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        if self.path.split("?")[0] in ("/", ""):
            self.reply(200, INFO)
        elif self.path.startswith("/_stats_ack"):
            self.reply(200, json.dumps(stats).encode())
        else:
            self.reply(404, b'{"error":{"type":"resource_not_found_exception","reason":"ack sink"},"status":404}')

    do_HEAD = do_GET

    def do_PUT(self):
        self.body()
        self.reply(200, b'{"acknowledged":true}')

    def do_POST(self):
        body = self.body()
        if self.path.startswith("/_bulk"):
            lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
            n = lines // 2
            with lock:
                stats["requests"] += 1
                stats["documents"] += n
                stats["bytes"] += len(body)
            self.reply(200, b'{"took":1,"errors":false,"items":[' + b",".join([ITEM] * n) + b"]}")
        else:
            self.reply(200, b"{}")

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
python3 "$work/ack_sink.py" >"$work/sink.port" 2>"$work/sink.log" &
sink_pid=$!
for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
sink_url="http://127.0.0.1:$(cat "$work/sink.port")"
echo "   azurite: $FLOWLOGD_AZURITE_ENDPOINT"
echo "   sink:    $sink_url"

hour=$(date -u +%Y-%m-%dT%H)
upload() { # container kind nics records tuples seed
    "$bin" gen --upload --blob-endpoint "$FLOWLOGD_AZURITE_ENDPOINT" --container "$1" \
        --kind "$2" --nics "$3" --records "$4" --tuples "$5" --seed "$6" --hour "$hour" 2>&1 | tail -1
}

# write_config NAME EXTRA_ES_LINES CONTAINER…: a config reading those containers; prints its path.
write_config() {
    local name=$1 extra=$2
    shift 2
    local file="$work/$name.toml"
    {
        printf '[registry]\npath = "%s"\n[http]\nlisten = ""\n' "$work/registry-$name"
        printf '[elasticsearch]\nurls = ["%s"]\ndead_letter_path = "%s"\n%b\n' "${es_url:-$sink_url}" "$work/dl-$name.ndjson" "$extra"
        for c in "$@"; do
            printf '[[source]]\nname = "%s"\ncontainer = "%s"\nblob_endpoint = "%s"\n' "$c" "$c" "$FLOWLOGD_AZURITE_ENDPOINT"
            printf '[source.auth]\nmethod = "account_key"\naccount_key_env = "BENCH_ACCOUNT_KEY"\n'
        done
    } >"$file"
    echo "$file"
}
export BENCH_ACCOUNT_KEY="$FLOWLOGD_AZURITE_KEY"

blob_bytes() { # config → sum of length_seen in the registry
    "$bin" --config "$1" registry list 2>/dev/null | awk -F'\t' '{split($3, a, "/"); s += a[2]} END {print s + 0}'
}

# measure LABEL CONFIG BASELINE_BYTES: runs `once` under /usr/bin/time -v and prints a line.
measure() {
    local label=$1 config=$2 before=$3
    local tlog="$work/time-$label.txt" out
    out=$(/usr/bin/time -v "$bin" --config "$config" --log-level warn once 2>"$tlog")
    local docs dl secs cpu rss after
    docs=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["documents_indexed"] + s["documents_existing"])' "$out")
    dl=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytes_downloaded"])' "$out")
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$tlog")
    cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {print s}' "$tlog")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f MB", $2 / 1024}' "$tlog")
    after=$(blob_bytes "$config")
    printf '%-16s %9d %7.2f %7.2f %10.0f %7.1f %14d %14d %9s\n' "$label" "$docs" "$secs" "$cpu" \
        "$(echo "$docs / $secs" | bc -l)" "$(echo "$dl / $secs / 1000000" | bc -l)" "$dl" "$((after - before))" "$rss"
    echo "$out" >"$work/summary-$label.json"
}

echo "== writing $((2 * NICS)) blobs of $RECORDS1 records × $TUPLES tuples, and big blobs of 60 × $BIG_TUPLES"
upload insights-logs-flowlogflowevent vnet "$NICS" "$RECORDS1" "$TUPLES" 1 >/dev/null
upload insights-logs-networksecuritygroupflowevent nsg2 "$NICS" "$RECORDS1" "$TUPLES" 2 >/dev/null
for t in $BIG_TUPLES; do upload "bench-big-$t" vnet 1 60 "$t" 3 >/dev/null; done
main=$(write_config main "" insights-logs-flowlogflowevent insights-logs-networksecuritygroupflowevent)
small=$(write_config small 'batch_max_docs = 500\nbatch_max_bytes = 1048576' insights-logs-flowlogflowevent insights-logs-networksecuritygroupflowevent)
printf '%-16s %9s %7s %7s %10s %7s %14s %14s %9s\n' run tuples seconds cpu_s tuples/s MB/s downloaded blob_bytes peak_RSS
measure first-read "$main" 0
measure small-batches "$small" 0
before=$(blob_bytes "$main")
# Regenerating with more records rewrites each blob with the same first records: to flowlogd
# that is exactly Azure appending blocks before the tail.
upload insights-logs-flowlogflowevent vnet "$NICS" "$RECORDS2" "$TUPLES" 1 >/dev/null
upload insights-logs-networksecuritygroupflowevent nsg2 "$NICS" "$RECORDS2" "$TUPLES" 2 >/dev/null
measure growth "$main" "$before"

for t in $BIG_TUPLES; do
    measure "big-blob-$t" "$(write_config "big-$t" "" "bench-big-$t")" 0
done
measure "big-$t-small" "$(write_config "big-$t-small" 'batch_max_docs = 500\nbatch_max_bytes = 1048576' "bench-big-$t")" 0

echo
echo "sink: $(curl -s "$sink_url/_stats_ack" 2>/dev/null || python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$sink_url/_stats_ack")"
echo "flowlogd: $("$bin" --version); $(nproc) cores; $(uname -r)"
echo "command: $0 (NICS=$NICS TUPLES=$TUPLES RECORDS1=$RECORDS1 RECORDS2=$RECORDS2 BIG_TUPLES=\"$BIG_TUPLES\")"
