#!/usr/bin/env bash
# Decode → NDJSON throughput with and without enrichment, as `flowlogd decode` runs it: the
# bench blob (VNet v4, 60 records x 200 tuples, seed 42, 1.06 MB) decoded 57 times over per run
# (60 MB, 684,000 tuples; the start-up, ~70 ms with every file loaded, is part of it), plain
# and with every lookup on (three named networks, a service tags file of the real one's size,
# the GeoLite2-City database of maxminddb-geolite2 and the test ASN database). Runs are
# interleaved; the least CPU time (task-clock) of each variant counts, because wall time swings
# with the other load on a shared machine and CPU time much less.
#
#   scripts/bench-enrich.sh            # ROUNDS=11 by default
#   FLOWLOGD_BIN=target/release/flowlogd ROUNDS=5 scripts/bench-enrich.sh
#
# Prints one line per variant and the ratio. Needs perf (linux-perf) for task-clock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
unset RUST_BACKTRACE
ROUNDS=${ROUNDS:-11}
REPEAT=${REPEAT:-57}

# shellcheck source=scripts/lib/test-mmdb.sh
. scripts/lib/test-mmdb.sh
flowlogd_test_mmdb >/dev/null

if [ -z "${FLOWLOGD_BIN:-}" ]; then
    echo "== cargo build --release" >&2
    cargo build --release --locked --bin flowlogd --example service_tags >&2
    FLOWLOGD_BIN=target/release/flowlogd
fi
command -v perf >/dev/null || { echo "bench-enrich.sh: perf not found" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$FLOWLOGD_BIN" gen --kind vnet --records 60 --tuples 200 --seed 42 --out "$work/vnet.json" 2>/dev/null
target/release/examples/service_tags "$work/ServiceTags_Public_bench.json"
cat >"$work/enrich.toml" <<TOML
[enrich]
service_tags_file = "$work/ServiceTags_Public_bench.json"
geoip_file = "$FLOWLOGD_TEST_MMDB_DIR/GeoLite2-City.mmdb"
asn_file = "$FLOWLOGD_TEST_MMDB_DIR/test-ASN.mmdb"

[[network]]
name = "vnets"
cidrs = ["10.0.0.0/8"]

[[network]]
name = "onprem"
cidrs = ["192.168.0.0/16"]

[[network]]
name = "cgnat"
cidrs = ["100.64.0.0/10"]
TOML

files=()
for _ in $(seq "$REPEAT"); do files+=("$work/vnet.json"); done
tuples=$((60 * 200 * REPEAT))

# CPU milliseconds of one decode run (task-clock).
cpu_ms() {
    perf stat -x, -e task-clock -o "$work/perf.csv" \
        "$FLOWLOGD_BIN" decode --container insights-logs-flowlogflowevent --blob bench/PT1H.json \
        "$@" "${files[@]}" >"$work/out.ndjson"
    awk -F, '/task-clock/ {printf "%d\n", $1}' "$work/perf.csv"
}

best_plain=999999
best_enriched=999999
for round in $(seq "$ROUNDS"); do
    p=$(cpu_ms)
    plain_bytes=$(wc -c <"$work/out.ndjson")
    e=$(cpu_ms --enrichment "$work/enrich.toml")
    enriched_bytes=$(wc -c <"$work/out.ndjson")
    [ "$p" -lt "$best_plain" ] && best_plain=$p
    [ "$e" -lt "$best_enriched" ] && best_enriched=$e
    echo "round $round: plain ${p} ms, enriched ${e} ms" >&2
done
size=$(( $(wc -c <"$work/vnet.json") * REPEAT ))
awk -v size="$size" -v t="$tuples" -v p="$best_plain" -v e="$best_enriched" -v pb="$plain_bytes" -v eb="$enriched_bytes" 'BEGIN {
    printf "plain:    %d ms CPU, %.2f M tuples/CPU-s, %d bytes/document\n", p, t / p / 1000, pb / t
    printf "enriched: %d ms CPU, %.2f M tuples/CPU-s, %d bytes/document\n", e, t / e / 1000, eb / t
    printf "input: %.1f MB, %d tuples per run\n", size / 1e6, t
    printf "enriched throughput = %.0f%% of plain\n", 100 * p / e
}'
