#!/usr/bin/env bash
# flowlogd against a real search engine: the OpenSearch node of tests/opensearch (bounded heap,
# one node, 0 replicas) beside Azurite, on the same machine, with the same data in every run.
#
#   ceiling     flowlogd's own bulk bodies (`flowlogd decode --bulk` of the very blobs uploaded
#               to Azurite) posted straight to the node in batch_max_docs-sized requests,
#               max_in_flight at a time: the engine's indexing rate on this machine, documents/s;
#   once        `flowlogd once` from Azurite into the node (fresh registry, release binary):
#               documents/s as a fraction of the ceiling, flowlogd's CPU-seconds per million
#               tuples (/usr/bin/time), and the node's CPU-seconds per million (from /proc);
#   storage     bytes on disk per tuple once refreshed, force-merged to one segment and flushed
#               (`_stats/store` of the primaries / documents), for: our ECS template, our
#               `logstash` template, and the `logstash` and ECS documents under dynamic mapping
#               (no template: what the documented Logstash pipeline gives users today). With
#               BASELINE_BIN set, the templates of that binary are measured too (before/after a
#               template change, same data, same run), and the ceiling under its ECS template
#               (`ceil-base`: what the storage tuning costs in indexing speed).
#
# Usage: scripts/bench-engine.sh       (NICS=8 RECORDS=40 TUPLES=250 HEAP=1g BATCH=5000 IN_FLIGHT=2;
#                                      CODEC=… overrides the index codec of $bin's templates)
#        FLOWLOGD_BIN=target/release/flowlogd BASELINE_BIN=/path/to/older/flowlogd scripts/bench-engine.sh
# Prints one table; results go into docs/PERFORMANCE.md by hand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)

NICS=${NICS:-8}
RECORDS=${RECORDS:-40}
TUPLES=${TUPLES:-250}
HEAP=${HEAP:-1g}
BATCH=${BATCH:-5000}
IN_FLIGHT=${IN_FLIGHT:-2}
BASELINE_BIN=${BASELINE_BIN:-}
unset RUST_BACKTRACE

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh
[ -x /usr/bin/time ] || { echo "bench-engine: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

work="$root/.run/bench-engine"
export FLOWLOGD_RUN_DIR="$work/services"
export FLOWLOGD_AZURITE_LOCATION="$work/azurite-data"
export FLOWLOGD_OPENSEARCH_HOME="$work/opensearch-home"
export FLOWLOGD_OPENSEARCH_HEAP=$HEAP
flowlogd_stop_services 2>/dev/null || true
rm -rf "$work"
mkdir -p "$work/blobs"
trap 'flowlogd_stop_services' EXIT

bin=${FLOWLOGD_BIN:-}
if [ -z "$bin" ]; then
    echo "== building flowlogd (release)"
    cargo build --release --locked --quiet
    bin="$root/target/release/flowlogd"
fi

echo "== starting Azurite and OpenSearch (heap $HEAP)"
started=$SECONDS
flowlogd_start_azurite
flowlogd_start_opensearch
es=$FLOWLOGD_OPENSEARCH_URL
node_pid=$(pgrep -g "$(<"$FLOWLOGD_RUN_DIR/opensearch.pid")" java | head -1)
echo "   $es (pid $node_pid) ready $((SECONDS - started)) s after start; RSS $(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$node_pid/status") MB"

# The node's CPU seconds so far (user + system), from /proc/PID/stat.
node_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / hz}' "/proc/$node_pid/stat"
}

hour=$(date -u +%Y-%m-%dT%H)
tuples=$((NICS * RECORDS * TUPLES))
echo "== $NICS VNet blobs of $RECORDS records x $TUPLES tuples ($tuples tuples), hour $hour"
"$bin" gen --upload --blob-endpoint "$FLOWLOGD_AZURITE_ENDPOINT" --container insights-logs-flowlogflowevent \
    --kind vnet --nics "$NICS" --records "$RECORDS" --tuples "$TUPLES" --seed 1 --hour "$hour" 2>&1 | tail -1
# The same blobs as files: `gen --upload` gives NIC i the seed 1 + 7919 i.
for ((i = 0; i < NICS; i++)); do
    "$bin" gen --kind vnet --records "$RECORDS" --tuples "$TUPLES" --seed $((1 + 7919 * i)) --hour "$hour" \
        --out "$work/blobs/nic-$i.json" 2>/dev/null
done
"$bin" decode --bulk --schema ecs --index 'ceiling-ecs-%{+xxxx.ww}' "$work/blobs"/*.json >"$work/bulk-ecs.ndjson" 2>/dev/null
"$bin" decode --bulk --schema logstash --index 'ceiling-ls-%{+xxxx.ww}' "$work/blobs"/*.json >"$work/bulk-logstash.ndjson" 2>/dev/null
echo "   bulk bodies: ECS $(($(stat -c %s "$work/bulk-ecs.ndjson") / tuples)) bytes/document (with action line), logstash $(($(stat -c %s "$work/bulk-logstash.ndjson") / tuples))"

cat >"$work/engine.py" <<'PY'
"""Small client for the node: post bulk files, read sizes. Standard library only."""
import json, sys, threading, time, urllib.request

URL = sys.argv[1]

def call(method, path, body=None, ctype="application/json"):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)

def post(path, batch, in_flight, rename=None):
    """Posts the bulk file in requests of `batch` documents, `in_flight` at a time; prints
    documents and seconds until every request returned and the index was refreshed."""
    batch, in_flight = int(batch), int(in_flight)
    lines = open(path, "rb").read().splitlines(keepends=True)
    if rename:  # `old=new`: index prefix to rewrite in the action lines
        old, new = rename.split("=")
        lines = [l.replace(old.encode(), new.encode(), 1) if i % 2 == 0 else l for i, l in enumerate(lines)]
    bodies = [b"".join(lines[i:i + 2 * batch]) for i in range(0, len(lines), 2 * batch)]
    errors, todo, lock = [], list(reversed(bodies)), threading.Lock()
    def worker():
        while True:
            with lock:
                if not todo:
                    return
                body = todo.pop()
            status, answer = call("POST", "/_bulk", body, "application/x-ndjson")
            if status != 200 or answer.get("errors"):
                bad = [i for i in answer.get("items", []) if i.get("create", i.get("index", {})).get("status", 0) >= 300]
                errors.append((status, bad[:1] or answer))
    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for t in threads: t.start()
    for t in threads: t.join()
    call("POST", "/_refresh")
    took = time.monotonic() - started
    if errors:
        sys.exit(f"bulk errors: {len(errors)}, first: {errors[0]}")
    print(len(lines) // 2, f"{took:.2f}")

def size(pattern):
    """Refresh, force-merge to one segment, flush; prints documents and primary store bytes."""
    call("POST", f"/{pattern}/_refresh")
    status, answer = call("POST", f"/{pattern}/_forcemerge?max_num_segments=1")
    if status != 200:
        sys.exit(f"forcemerge {pattern}: {status} {answer}")
    # The merged segment replaces the old ones only for searches opened after it: until a
    # refresh (and a flush for the commit point) the old files stay on disk and are counted.
    for _ in range(100):
        call("POST", f"/{pattern}/_refresh")
        call("POST", f"/{pattern}/_flush?force=true")
        _, segments = call("GET", f"/{pattern}/_segments")
        counts = [len(copy["segments"]) for index in segments["indices"].values()
                  for shard in index["shards"].values() for copy in shard if copy["routing"]["primary"]]
        if all(c <= 1 for c in counts):
            break
        time.sleep(0.2)
    else:
        sys.exit(f"{pattern}: still {counts} segments per shard after the force-merge")
    _, stats = call("GET", f"/{pattern}/_stats/store,docs")
    p = stats["_all"]["primaries"]
    print(p["docs"]["count"], p["store"]["size_in_bytes"])

def template(name, path):
    status, answer = call("PUT", f"/_index_template/{name}", json.load(open(path)))
    if status != 200:
        sys.exit(f"template {name}: {status} {answer}")

def refresh(pattern):
    call("POST", f"/{pattern}/_refresh")

def delete(pattern):
    _, indices = call("GET", f"/_cat/indices/{pattern}?format=json")
    for i in indices:
        call("DELETE", "/" + i["index"])

def root():
    _, r = call("GET", "/")
    print(r["version"].get("distribution", "elasticsearch"), r["version"]["number"])

globals()[sys.argv[2]](*sys.argv[3:])
PY
engine() { python3 "$work/engine.py" "$es" "$@"; }
read -r dist version < <(engine root)

main_bin=$bin
# install_template BIN SCHEMA PATTERN: flowlogd's template for PATTERN, 0 replicas (one node).
install_template() {
    local bin=$1 schema=$2 pattern=$3 name
    name="bench-$(echo "$pattern" | tr -cd 'a-z0-9-')"
    local codec=()
    # CODEC applies to the binary under test only (a baseline may predate --codec).
    [ -z "${CODEC:-}" ] || [ "$bin" != "$main_bin" ] || codec=(--codec "$CODEC")
    "$bin" template --schema "$schema" --index "$pattern" --replicas 0 "${codec[@]}" >"$work/template-$name.json" 2>/dev/null
    engine template "$name" "$work/template-$name.json"
}

# Dynamic mapping on one node still defaults to 1 replica: a template with only that setting.
printf '{"index_patterns":["dyn-*"],"priority":1,"template":{"settings":{"number_of_replicas":0}}}' >"$work/dyn.json"
engine template bench-dyn "$work/dyn.json"

# A cold JVM indexes at about half speed until its JIT has compiled the indexing path, and on
# 2 cores that takes several passes: warm up with passes into a throwaway index until two in a
# row agree within 5% (at most 8), then measure in an A-B-B-A order (our template, the
# baseline's, once, the baseline's, ours) so that no side gets the warmer node.
echo "== warm-up: passes of the bodies into warmup-* (deleted) until the rate settles"
install_template "$bin" ecs 'warmup-%{+xxxx.ww}'
previous=0
for pass in 1 2 3 4 5 6 7 8; do
    read -r wdocs wsecs < <(engine post "$work/bulk-ecs.ndjson" "$BATCH" "$IN_FLIGHT" ceiling-ecs-=warmup-)
    engine delete 'warmup-*'
    rate=$(echo "$wdocs / $wsecs" | bc -l)
    echo "   pass $pass: $(printf '%.0f' "$rate") documents/s"
    if [ "$(echo "$previous > 0 && $rate < $previous * 1.05 && $rate > $previous * 0.95" | bc -l)" = 1 ]; then
        break
    fi
    previous=$rate
done

# timed_post LABEL BIN PREFIX: the ECS bodies into PREFIX… under BIN's template; sets
# post_docs, post_secs, post_cpu (the node's CPU seconds).
timed_post() {
    install_template "$2" ecs "$3%{+xxxx.ww}"
    local cpu0
    cpu0=$(node_cpu)
    read -r post_docs post_secs < <(engine post "$work/bulk-ecs.ndjson" "$BATCH" "$IN_FLIGHT" "ceiling-ecs-=$3")
    post_cpu=$(echo "$(node_cpu) - $cpu0" | bc -l)
    rows+=("$1 $post_docs $post_secs $post_cpu - -")
}
rows=()
echo "== ceiling: flowlogd's bulk bodies posted straight to the node ($BATCH documents a request, $IN_FLIGHT in flight)"
timed_post ceiling-1 "$bin" ceiling-ecs-
ceil1=$(echo "$post_docs / $post_secs" | bc -l)
if [ -n "$BASELINE_BIN" ]; then
    echo "== ceiling under the baseline binary's template"
    timed_post ceil-base-1 "$BASELINE_BIN" base-ecs-
    engine delete 'base-ecs-*'
fi

echo "== flowlogd once: Azurite -> node"
codec_line=""
[ -z "${CODEC:-}" ] || codec_line="index_codec = \"$CODEC\""
cat >"$work/once.toml" <<TOML
[registry]
path = "$work/registry"
[http]
listen = ""
[elasticsearch]
urls = ["$es"]
dead_letter_path = "$work/dead-letter.ndjson"
number_of_replicas = 0
batch_max_docs = $BATCH
max_in_flight = $IN_FLIGHT
$codec_line
[[source]]
name = "vnet"
container = "insights-logs-flowlogflowevent"
blob_endpoint = "$FLOWLOGD_AZURITE_ENDPOINT"
index = "flowlogs-%{+xxxx.ww}"
[source.auth]
method = "account_key"
account_key_env = "BENCH_ACCOUNT_KEY"
TOML
export BENCH_ACCOUNT_KEY="$FLOWLOGD_AZURITE_KEY"
cpu0=$(node_cpu)
start_ns=$(date +%s%N)
summary=$(/usr/bin/time -v "$bin" --config "$work/once.toml" --log-level warn once 2>"$work/time-once.txt") || {
    echo "bench-engine: flowlogd once failed:" >&2
    cat "$work/time-once.txt" >&2
    exit 1
}
engine refresh 'flowlogs-*' # included in the wall time, like the ceiling's
once_secs=$(echo "($(date +%s%N) - $start_ns) / 1000000000" | bc -l)
once_node_cpu=$(echo "$(node_cpu) - $cpu0" | bc -l)
once_docs=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["documents_indexed"])' "$summary")
once_cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {print s}' "$work/time-once.txt")
once_rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$work/time-once.txt")
[ "$once_docs" = "$tuples" ] || { echo "bench-engine: flowlogd indexed $once_docs of $tuples tuples: $summary" >&2; exit 1; }
rows+=("once $once_docs $once_secs $once_node_cpu $once_cpu $once_rss")

if [ -n "$BASELINE_BIN" ]; then
    echo "== ceiling under the baseline binary's template, again"
    timed_post ceil-base-2 "$BASELINE_BIN" base-ecs-
fi
echo "== ceiling again, after once"
timed_post ceiling-2 "$bin" ceiling2-ecs-
engine delete 'ceiling2-ecs-*'
ceil_rate=$(echo "($ceil1 + $post_docs / $post_secs) / 2" | bc -l)

echo "== storage: refresh, force-merge to 1 segment, flush"
storage_rows=()
# measure_storage LABEL PATTERN
measure_storage() {
    local docs bytes
    read -r docs bytes < <(engine size "$2")
    storage_rows+=("$(printf '%-34s %9d %12d %8.0f' "$1" "$docs" "$bytes" "$(echo "$bytes / $docs" | bc -l)")")
}
measure_storage "ECS, our template (flowlogd once)" 'flowlogs-*'
measure_storage "ECS, our template (bulk bodies)" 'ceiling-ecs-*'
install_template "$bin" logstash 'ls-tuned-%{+xxxx.ww}'
engine post "$work/bulk-logstash.ndjson" "$BATCH" "$IN_FLIGHT" ceiling-ls-=ls-tuned- >/dev/null
measure_storage "logstash, our template" 'ls-tuned-*'
engine post "$work/bulk-logstash.ndjson" "$BATCH" "$IN_FLIGHT" ceiling-ls-=dyn-ls- >/dev/null
measure_storage "logstash, dynamic mapping" 'dyn-ls-*'
engine post "$work/bulk-ecs.ndjson" "$BATCH" "$IN_FLIGHT" ceiling-ecs-=dyn-ecs- >/dev/null
measure_storage "ECS, dynamic mapping" 'dyn-ecs-*'
if [ -n "$BASELINE_BIN" ]; then
    measure_storage "ECS, baseline template" 'base-ecs-*'
    install_template "$BASELINE_BIN" logstash 'base-ls-%{+xxxx.ww}'
    engine post "$work/bulk-logstash.ndjson" "$BATCH" "$IN_FLIGHT" ceiling-ls-=base-ls- >/dev/null
    measure_storage "logstash, baseline template" 'base-ls-*'
fi

node_hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$node_pid/status")
echo
echo "engine: $dist $version, heap $HEAP, 1 node, 0 replicas, peak RSS $node_hwm MB; $(nproc) cores; flowlogd $("$bin" --version)"
echo "ceiling = mean of ceiling-1 and ceiling-2: $(printf '%.0f' "$ceil_rate") documents/s"
printf '%-10s %9s %8s %10s %9s %16s %16s %9s\n' run documents seconds docs/s ceiling flowlogd_cpu/M node_cpu/M RSS_MB
for row in "${rows[@]}"; do
    read -r label docs secs ncpu fcpu rss <<<"$row"
    fcpu_m=-
    [ "$fcpu" = - ] || fcpu_m=$(printf '%.2f' "$(echo "$fcpu * 1000000 / $docs" | bc -l)")
    printf '%-10s %9d %8.2f %10.0f %8.0f%% %16s %16.2f %9s\n' "$label" "$docs" "$secs" \
        "$(echo "$docs / $secs" | bc -l)" "$(echo "100 * $docs / $secs / $ceil_rate" | bc -l)" "$fcpu_m" \
        "$(echo "$ncpu * 1000000 / $docs" | bc -l)" "$rss"
done
echo
printf '%-34s %9s %12s %8s\n' mapping documents store_bytes bytes/tuple
printf '%s\n' "${storage_rows[@]}"
echo "command: $0 (NICS=$NICS RECORDS=$RECORDS TUPLES=$TUPLES HEAP=$HEAP BATCH=$BATCH IN_FLIGHT=$IN_FLIGHT${BASELINE_BIN:+ BASELINE_BIN=$BASELINE_BIN})"
