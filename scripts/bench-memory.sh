#!/usr/bin/env bash
# Peak memory (invariant 6) of the release binary: `flowlogd once` on one large blob at the
# default configuration, on a blob of a few records of tens of MB (max_record_bytes raised to
# allow them) against the bound docs/DESIGN.md derives from the configuration, and `flowlogd
# decode` of one 200 MB record. Peak = the kernel's high-water mark of resident memory
# (VmHWM, ru_maxrss), read by /usr/bin/time when the process exits. A memory figure, not a
# timing: the sink acknowledges every document without storing it, after SINK_DELAY_MS, so
# that flowlogd, not an engine, fills its own buffers (the pipeline backs up to its bounds).
#
# Runs, each with a fresh registry:
#   idle          `once` on a blob of one tuple: the binary's own footprint (base of the bound);
#   big-blob      one VNet blob of BIG_RECORDS records x BIG_TUPLES tuples (500 MB by default:
#                 60 one-minute records of 8.3 MB), default configuration;
#   big-records   one VNet blob of LARGE_RECORDS records x LARGE_TUPLES tuples (3 x 30 MB),
#                 max_record_bytes = 64 MiB, default configuration otherwise;
#   decode        `flowlogd decode` of one NSG v1 record of DECODE_TUPLES tuples (200 MB).
# Prints one line per run: bytes of input, peak RSS, and for the `once` runs the bound from
# the configuration (docs/DESIGN.md, invariant 6) and the documents acknowledged. Each `once`
# run is made with glibc's default allocator policy and again with it pinned (`-pinned`).
#
# Usage: scripts/bench-memory.sh
#        FLOWLOGD_BIN=target/release/flowlogd scripts/bench-memory.sh   (skip the build)
#        BIG_TUPLES=12000 LARGE_TUPLES=100000 DECODE_TUPLES=400000 scripts/bench-memory.sh  (quick)
set -euo pipefail
# Some code builds errors that capture backtraces when this is set: measure without it.
unset RUST_BACKTRACE
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)

BIG_RECORDS=${BIG_RECORDS:-60}
BIG_TUPLES=${BIG_TUPLES:-99000}
LARGE_RECORDS=${LARGE_RECORDS:-3}
LARGE_TUPLES=${LARGE_TUPLES:-360000}
DECODE_TUPLES=${DECODE_TUPLES:-3950000}
SINK_DELAY_MS=${SINK_DELAY_MS:-20}
MIB=$((1024 * 1024))

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh
# shellcheck source=scripts/lib/ack_sink.sh
. scripts/lib/ack_sink.sh
[ -x /usr/bin/time ] || { echo "bench-memory: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

work="$root/.run/bench-memory"
export FLOWLOGD_RUN_DIR="$work/services"
export FLOWLOGD_AZURITE_LOCATION="$work/azurite-data"
sink_pid=""
cleanup() {
    [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
    flowlogd_stop_azurite
}
flowlogd_stop_azurite 2>/dev/null || true
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

echo "== starting Azurite and the acknowledging sink (${SINK_DELAY_MS} ms per bulk request)"
flowlogd_start_azurite
flowlogd_start_ack_sink "$work" "$SINK_DELAY_MS"
export BENCH_ACCOUNT_KEY="$FLOWLOGD_AZURITE_KEY"
hour=$(date -u +%Y-%m-%dT%H)

upload() { # container records tuples seed
    "$bin" gen --upload --blob-endpoint "$FLOWLOGD_AZURITE_ENDPOINT" --container "$1" \
        --kind vnet --nics 1 --records "$2" --tuples "$3" --seed "$4" --hour "$hour" 2>&1 | tail -1
}

# write_config NAME CONTAINER SOURCE_LINES: a configuration with every default but the source's.
write_config() {
    local file="$work/$1.toml"
    {
        printf '[registry]\npath = "%s"\n[http]\nlisten = ""\n' "$work/registry-$1"
        printf '[elasticsearch]\nurls = ["%s"]\ndead_letter_path = "%s"\n' "$sink_url" "$work/dl-$1.ndjson"
        printf '[[source]]\nname = "%s"\ncontainer = "%s"\nblob_endpoint = "%s"\n%b\n' "$2" "$2" "$FLOWLOGD_AZURITE_ENDPOINT" "$3"
        printf '[source.auth]\nmethod = "account_key"\naccount_key_env = "BENCH_ACCOUNT_KEY"\n'
    } >"$file"
    echo "$file"
}

# peak_kib LOG: the "Maximum resident set size" /usr/bin/time -v wrote.
peak_kib() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
mib() { echo "scale=1; $1 / 1024" | bc; }

# The bound of invariant 6 (as tests/memory.rs computes it), in KiB, for one blob read at a
# time and the defaults of [elasticsearch]:
#   I + 9/8 × (R + P + 2C + 2M·C + (M + 2)·(9/8·B + 2C'))
# I = the idle run's peak, R = max_record_bytes, P = one downloaded piece (1 MiB allowed),
# C = min(batch_max_bytes, 256 KiB), C' = a chunk buffer (C + 1/16), M = max_in_flight,
# B = batch_max_bytes (FLOWLOGD_ELASTICSEARCH__BATCH_MAX_BYTES overrides it for flowlogd and
# here). Batches hold slices of chunk buffers at most an eighth unused, and may share a chunk
# with the batch before and after them.
bound_kib() { # idle_kib max_record_bytes
    local idle=$1 r=$2 p=$MIB m=2 b=${FLOWLOGD_ELASTICSEARCH__BATCH_MAX_BYTES:-$((10 * MIB))}
    local c=$((b < 256 * 1024 ? b : 256 * 1024))
    local bytes=$((r + p + 2 * c + 2 * m * c + (m + 2) * (b * 9 / 8 + 2 * c * 17 / 16)))
    echo $((idle + bytes * 9 / 8 / 1024))
}

printf '%-18s %12s %10s %10s %10s\n' run input_bytes peak_RSS bound documents
# measure LABEL CONFIG MAX_RECORD_BYTES IDLE_KIB [ENV…]: prints a line on stderr, the peak (KiB) on stdout.
measure() {
    local label=$1 config=$2 record=$3 idle=$4 tlog="$work/time-$1.txt" out docs input peak bound
    shift 4
    out=$(env "$@" /usr/bin/time -v "$bin" --config "$config" --log-level warn once 2>"$tlog") || {
        echo "bench-memory: $label: flowlogd once failed:" >&2
        tail -20 "$tlog" >&2
        exit 1
    }
    docs=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["documents_indexed"] + s["documents_existing"])' "$out")
    input=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytes_downloaded"])' "$out")
    peak=$(peak_kib "$tlog")
    bound=-
    [ "$idle" -gt 0 ] && bound="$(mib "$(bound_kib "$idle" "$record")") MiB"
    printf '%-18s %12d %6s MiB %10s %10d\n' "$label" "$input" "$(mib "$peak")" "$bound" "$docs" >&2
    echo "$peak"
}

# Each `once` run twice: with glibc's defaults (as the daemon runs), and with its mmap threshold
# fixed at 128 KiB, so that freed buffers go back to the kernel and the peak is what flowlogd
# held (what the bound counts; glibc's default keeps freed blocks of up to 32 MiB for reuse).
PINNED=(MALLOC_MMAP_THRESHOLD_=131072)
upload idle 1 1 1 >/dev/null
idle=$(measure idle "$(write_config idle idle "")" 0 0)
idle_pinned=$(measure idle-pinned "$(write_config idle-pinned idle "")" 0 0 "${PINNED[@]}")

upload big-blob "$BIG_RECORDS" "$BIG_TUPLES" 3 >/dev/null
measure big-blob "$(write_config big big-blob "")" $((16 * MIB)) "$idle" >/dev/null
measure big-blob-pinned "$(write_config big-pinned big-blob "")" $((16 * MIB)) "$idle_pinned" "${PINNED[@]}" >/dev/null

upload big-records "$LARGE_RECORDS" "$LARGE_TUPLES" 5 >/dev/null
large="max_record_bytes = $((64 * MIB))"
measure big-records "$(write_config large big-records "$large")" $((64 * MIB)) "$idle" >/dev/null
measure big-records-pinned "$(write_config large-pinned big-records "$large")" $((64 * MIB)) "$idle_pinned" "${PINNED[@]}" >/dev/null

"$bin" gen --kind nsg1 --records 1 --tuples "$DECODE_TUPLES" --seed 7 --out "$work/record.json" 2>/dev/null
size=$(stat -c %s "$work/record.json")
flag=()
"$bin" decode --help | grep -q -- --max-record-bytes && flag=(--max-record-bytes $((256 * MIB)))
/usr/bin/time -v "$bin" decode "${flag[@]}" "$work/record.json" >/dev/null 2>"$work/time-decode.txt" || {
    echo "bench-memory: decode failed:" >&2
    tail -5 "$work/time-decode.txt" >&2
    exit 1
}
printf '%-18s %12d %6s MiB %10s %10s\n' decode "$size" "$(mib "$(peak_kib "$work/time-decode.txt")")" - -

echo
echo "sink: $(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$sink_url/_stats_ack")"
echo "flowlogd: $("$bin" --version); $(nproc) cores; $(uname -r)"
echo "command: $0 (BIG_RECORDS=$BIG_RECORDS BIG_TUPLES=$BIG_TUPLES LARGE_RECORDS=$LARGE_RECORDS LARGE_TUPLES=$LARGE_TUPLES DECODE_TUPLES=$DECODE_TUPLES SINK_DELAY_MS=$SINK_DELAY_MS)"
