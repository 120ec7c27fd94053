#!/usr/bin/env bash
# The main job, end to end, on local stand-ins (no Docker, no Azure account needed):
#   1. installs Azurite (npm) into .deps/ and builds the OpenSearch node (Maven Central jars,
#      tests/opensearch) if missing;
#   2. starts both on free loopback ports (a real single-node OpenSearch 2.19, bounded heap);
#   3. writes an hour of realistic VNet and NSG flow logs into Azurite, in Azure's block layout;
#   4. builds flowlogd and runs `flowlogd once` with a generated config;
#   5. prints the engine's name and version, the document count, the index size on disk and a
#      top-talkers aggregation read back from the index;
#   6. stops what it started.
# Idempotent: run it again and it starts from a clean registry and fresh servers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh

work="$root/.run/quickstart"
export FLOWLOGD_RUN_DIR="$work/services"
export FLOWLOGD_AZURITE_LOCATION="$work/azurite-data"
flowlogd_stop_services 2>/dev/null || true
rm -rf "$work"
mkdir -p "$work"
trap 'flowlogd_stop_services' EXIT

echo "== building flowlogd (release)"
cargo build --release --locked --quiet
bin="$root/target/release/flowlogd"

echo "== starting Azurite and OpenSearch on loopback"
export FLOWLOGD_OPENSEARCH_HOME="$work/opensearch-home"
flowlogd_start_azurite
flowlogd_start_opensearch
echo "   azurite:    $FLOWLOGD_AZURITE_ENDPOINT"
echo "   opensearch: $FLOWLOGD_OPENSEARCH_URL"
es_url=$FLOWLOGD_OPENSEARCH_URL

hour=$(date -u +%Y-%m-%dT%H)
echo "== writing an hour ($hour UTC) of flow logs into Azurite"
"$bin" gen --upload --blob-endpoint "$FLOWLOGD_AZURITE_ENDPOINT" --container insights-logs-flowlogflowevent \
    --kind vnet --nics 3 --records 60 --tuples 20 --seed 1 --hour "$hour"
"$bin" gen --upload --blob-endpoint "$FLOWLOGD_AZURITE_ENDPOINT" --container insights-logs-networksecuritygroupflowevent \
    --kind nsg2 --nics 2 --records 60 --tuples 10 --seed 2 --hour "$hour"
expected=$((3 * 60 * 20 + 2 * 60 * 10))

cat >"$work/flowlogd.toml" <<TOML
[registry]
path = "$work/registry"

[http]
listen = ""

[elasticsearch]
urls = ["$es_url"]
# One node: a replica could never be assigned.
number_of_replicas = 0
dead_letter_path = "$work/dead-letter.ndjson"

[[source]]
name = "vnet"
container = "insights-logs-flowlogflowevent"
account = "devstoreaccount1"
blob_endpoint = "$FLOWLOGD_AZURITE_ENDPOINT"
index = "flowlogs-%{+xxxx.ww}"
[source.auth]
method = "connection_string"
connection_string = "UseDevelopmentStorage=true;BlobEndpoint=$FLOWLOGD_AZURITE_ENDPOINT"

[[source]]
name = "nsg"
container = "insights-logs-networksecuritygroupflowevent"
account = "devstoreaccount1"
blob_endpoint = "$FLOWLOGD_AZURITE_ENDPOINT"
index = "flowlogs-%{+xxxx.ww}"
[source.auth]
method = "account_key"
account_key_env = "QUICKSTART_ACCOUNT_KEY"
TOML
export QUICKSTART_ACCOUNT_KEY="$FLOWLOGD_AZURITE_KEY"

echo "== flowlogd once"
summary=$("$bin" --config "$work/flowlogd.toml" once)
echo "   $summary"

# Read back with Python's standard library (no curl needed).
read -r engine count size talkers < <(python3 - "$es_url" <<'PY'
import json, sys, urllib.request
url = sys.argv[1]
def call(path, body=None, method=None):
    req = urllib.request.Request(url + path, data=body and json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"},
                                 method=method or ("POST" if body is not None else "GET"))
    with urllib.request.urlopen(req) as r:
        return json.load(r)
root = call("/")
engine = "{}-{}".format(root["version"].get("distribution", "elasticsearch"), root["version"]["number"])
call("/flowlogs-*/_refresh", method="POST")
# Flushed segments: the size a user would see on disk once the node settles.
call("/flowlogs-*/_flush", method="POST")
count = call("/flowlogs-*/_count")["count"]
size = call("/flowlogs-*/_stats/store")["_all"]["primaries"]["store"]["size_in_bytes"]
aggs = call("/flowlogs-*/_search", {"size": 0, "aggs": {"talkers": {
    "terms": {"field": "source.ip", "size": 5, "order": {"bytes": "desc"}},
    "aggs": {"bytes": {"sum": {"field": "network.bytes"}}}}}})
rows = ";".join(f"{b['key']}={int(b['bytes']['value'])}={b['doc_count']}" for b in aggs["aggregations"]["talkers"]["buckets"])
print(engine, count, size, rows)
PY
)
echo "== engine: ${engine/-/ } at $es_url"
echo "== documents in flowlogs-*: $count (tuples written: $expected)"
echo "== index size on disk: $size bytes ($((size / count)) bytes per document, before any merge)"
echo "== top talkers (source.ip by network.bytes):"
IFS=';' read -ra rows <<<"$talkers"
for row in "${rows[@]}"; do
    IFS='=' read -r ip bytes flows <<<"$row"
    printf '   %-18s %12s bytes %6s flows\n' "$ip" "$bytes" "$flows"
done
if [ "$count" != "$expected" ]; then
    echo "quickstart: expected $expected documents, found $count" >&2
    exit 1
fi
echo "== done: every tuple indexed once. Re-run any time; 'scripts/test.sh' runs the test suite."
