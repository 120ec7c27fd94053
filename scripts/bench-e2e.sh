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
#
# MODE=compare: what each tuple costs flowlogd against a plain script, in one run on the same
# blobs and the same sink. CMP_NICS VNet blobs of 60 records × CMP_TUPLES tuples (8 blobs of
# 7.6 MB, 741,120 tuples by default) are read by scripts/baseline-python.py (through a SAS) and
# by `flowlogd once` (FLOWLOGD_BIN, and BASELINE_BIN when set: an older build to compare with;
# or COMPARE_BINS="label=path label=path …"), each ROUNDS times in A-B-B-A order with a fresh
# registry (CMP_PYTHON=0 leaves the script out: builds compared with each other only). One line
# per run: tuples, wall s,
# CPU s (user + system, /usr/bin/time -v), CPU s per million tuples, tuples/s, bytes per
# document as the sink received them (action line included), peak RSS.
#        MODE=compare FLOWLOGD_BIN=target/release/flowlogd BASELINE_BIN=/path/to/old/flowlogd scripts/bench-e2e.sh
set -euo pipefail
# Some code builds errors that capture backtraces when this is set: measure without it.
unset RUST_BACKTRACE
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)

NICS=${NICS:-20}
TUPLES=${TUPLES:-125}
RECORDS1=${RECORDS1:-40}
RECORDS2=${RECORDS2:-60}
BIG_TUPLES=${BIG_TUPLES:-3400 13600}
MODE=${MODE:-default}
CMP_NICS=${CMP_NICS:-8}
CMP_TUPLES=${CMP_TUPLES:-1544}
ROUNDS=${ROUNDS:-2}
CMP_PYTHON=${CMP_PYTHON:-1}

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh
# shellcheck source=scripts/lib/ack_sink.sh
. scripts/lib/ack_sink.sh

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

target=${CARGO_TARGET_DIR:-$root/target}
bin=${FLOWLOGD_BIN:-}
if [ -z "$bin" ]; then
    echo "== building flowlogd (release)"
    cargo build --release --locked --quiet
    bin="$target/release/flowlogd"
fi

echo "== starting Azurite and the acknowledging sink"
flowlogd_start_azurite
# The sink acknowledges without storing, on one thread: ~0.3 CPU-s for the 1.3 GB of compare
# mode, so that flowlogd, not the sink, is what the machine's two cores are busy with.
flowlogd_start_ack_sink "$work"
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

sink_cpu() { # CPU ticks (user + system) the sink has used so far
    awk '{print $14 + $15}' "/proc/$sink_pid/stat"
}

sink_stats() { # documents and bytes the sink acknowledged so far, as "documents bytes"
    python3 -c 'import json,sys,urllib.request; s=json.loads(urllib.request.urlopen(sys.argv[1]).read()); print(s["documents"], s["bytes"])' "$sink_url/_stats_ack"
}

# run_timed LABEL COMMAND…: runs COMMAND under /usr/bin/time -v and prints one comparison line;
# the tuple count is the sink's (documents acknowledged during the run).
run_timed() {
    local label=$1 tlog="$work/time-$1.txt" before after docs bytes secs cpu rss sink0 sink1
    shift
    before=$(sink_stats)
    sink0=$(sink_cpu)
    /usr/bin/time -v "$@" >"$work/out-$label.txt" 2>"$tlog" || { echo "$label failed:"; tail -5 "$tlog"; exit 1; }
    sink1=$(sink_cpu)
    after=$(sink_stats)
    docs=$(( ${after% *} - ${before% *} ))
    bytes=$(( ${after#* } - ${before#* } ))
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$tlog")
    cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {print s}' "$tlog")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$tlog")
    printf '%-18s %9d %7.2f %7.2f %10.2f %10.0f %9.0f %8s MiB %7.2f\n' "$label" "$docs" "$secs" "$cpu" \
        "$(echo "$cpu * 1000000 / $docs" | bc -l)" "$(echo "$docs / $secs" | bc -l)" "$(echo "$bytes / $docs" | bc -l)" "$rss" \
        "$(echo "($sink1 - $sink0) / $(getconf CLK_TCK)" | bc -l)"
}

if [ "$MODE" = compare ]; then
    container=bench-compare
    echo "== writing $CMP_NICS VNet blobs of 60 records × $CMP_TUPLES tuples"
    upload "$container" vnet "$CMP_NICS" 60 "$CMP_TUPLES" 5
    # A service SAS (read + list on the container), signed with Azurite's published key the way
    # Microsoft's "Create a service SAS" describes (tests/common/sas.rs does the same).
    sas=$(python3 - "$FLOWLOGD_AZURITE_KEY" "$FLOWLOGD_AZURITE_ACCOUNT" "$container" <<'PY'
import base64, hashlib, hmac, sys, urllib.parse
key, account, container = sys.argv[1:]
sv, st, se = "2022-11-02", "2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
to_sign = "\n".join(["rl", st, se, f"/blob/{account}/{container}", "", "", "https,http", sv, "c"] + [""] * 7)
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
q = urllib.parse.quote
print(f"sv={sv}&st={q(st, safe='')}&se={q(se, safe='')}&sr=c&sp=rl&spr=https,http&sig={q(sig, safe='')}")
PY
)
    config=$(write_config compare "" "$container")
    flowlogd_once() { # BIN LABEL: `once` from an empty registry
        rm -rf "$work/registry-compare"
        run_timed "$2" "$1" --config "$config" --log-level warn once
    }
    printf '%-18s %9s %7s %7s %10s %10s %9s %12s %7s\n' run tuples wall_s cpu_s cpu_s/M tuples/s B/doc peak_RSS sink_s
    # LABEL=PATH of each flowlogd binary, run in this order, then in reverse.
    read -r -a bins <<<"${COMPARE_BINS:-${BASELINE_BIN:+before=$BASELINE_BIN }flowlogd=$bin}"
    python_run() {
        [ "$CMP_PYTHON" = 1 ] || return 0
        run_timed "$1" python3 scripts/baseline-python.py "$FLOWLOGD_AZURITE_ENDPOINT/$container" "$sas" "$sink_url"
    }
    for round in $(seq "$ROUNDS"); do
        python_run "python-$round"
        for b in "${bins[@]}"; do flowlogd_once "${b#*=}" "${b%%=*}-$round"; done
        for ((i = ${#bins[@]} - 1; i >= 0; i--)); do flowlogd_once "${bins[i]#*=}" "${bins[i]%%=*}-$round-b"; done
        python_run "python-$round-b"
    done
    echo
    for b in "${bins[@]}"; do echo "${b%%=*}: ${b#*=}"; done
    echo "$(nproc) cores; $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command: MODE=compare $0 (CMP_NICS=$CMP_NICS CMP_TUPLES=$CMP_TUPLES ROUNDS=$ROUNDS COMPARE_BINS=\"${bins[*]}\")"
    exit 0
fi

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
