#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (libFuzzer), one after the other, each for SECONDS, with
# one job: what each target checks is in the `//!` lines of fuzz/fuzz_targets/*.rs and in
# docs/RELIABILITY.md ("Fuzzing").
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]     default: all, 600 seconds each
#   scripts/fuzz.sh all 0                      only run the seeds and the corpus once (a smoke run)
#   scripts/fuzz.sh list                       the targets
#
# - Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when it is missing.
# - The toolchain is stable: cargo-fuzz's nightly flags are allowed with RUSTC_BOOTSTRAP=1.
# - Seeds fuzz/seeds/TARGET/ from ../shared/fixtures (and config/flowlogd.example.toml) on
#   every run; libFuzzer grows fuzz/corpus/TARGET/. Both are git-ignored, as is fuzz/artifacts/,
#   where crashing inputs and each run's log (fuzz/artifacts/TARGET/run.log) go.
# - Prints executions, run time and corpus size per target; exits 1 when a target crashed (or
#   failed to build), naming the crashing input. Reproduce a crash with
#   `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…` from the repository
#   root (add `-s none` when FUZZ_SANITIZER=none).
#
# Environment: FUZZ_SANITIZER (address, the default, or none), CARGO_BUILD_JOBS (default 1, so
# a build leaves the other cores alone), FIXTURES (default ../shared/fixtures).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
fuzz=$root/fuzz
fixtures=${FIXTURES:-$root/../shared/fixtures}
sanitizer=${FUZZ_SANITIZER:-address}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
export RUSTC_BOOTSTRAP=1

usage() {
    echo "usage: scripts/fuzz.sh [TARGET|all|list] [SECONDS]   (default: all 600; SECONDS=0 runs the seeds once)" >&2
}

targets() {
    local f
    for f in "$fuzz"/fuzz_targets/*.rs; do basename "$f" .rs; done
}

die() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

which=${1:-all}
secs=${2:-600}
case $which in
    -h | --help) usage; exit 0 ;;
    list) targets; exit 0 ;;
esac
[ $# -le 2 ] || { usage; exit 2; }
[[ $secs =~ ^[0-9]+$ ]] || { usage; die "SECONDS must be a whole number, not '$secs'"; }
case $sanitizer in
    address | none) ;;
    *) die "FUZZ_SANITIZER must be 'address' or 'none', not '$sanitizer'" ;;
esac
if [ "$which" = all ]; then
    mapfile -t run < <(targets)
elif [ -f "$fuzz/fuzz_targets/$which.rs" ]; then
    run=("$which")
else
    usage
    die "no fuzz target '$which'; targets: $(targets | tr '\n' ' ')"
fi
[ -d "$fixtures" ] || die "fixtures not found at $fixtures (set FIXTURES to the shared fixtures directory)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked || die "could not install cargo-fuzz"
fi

# --- seeds ---------------------------------------------------------------------------------
# One file per seed; names say where each comes from.

# A whole blob or record file.
blobs() { find "$fixtures" -type f \( -name '*PT1H.json' -o -name '*records.ndjson' \) | sort; }

seed_envelope_chunking() {
    local out=$1 f name
    # Header: flags, cap (u16), base offset (u32), number of cuts, then the cuts (u16 each).
    for f in $(blobs); do
        name=$(basename "$(dirname "$f")")-$(basename "$f")
        { printf '\0\0\0\0\0\0\0\0'; cat "$f"; } >"$out/whole-$name"
        # Cut after the head, inside the first record and near the end (offsets 12, 100, 1000).
        { printf '\0\0\0\0\0\0\0\3\14\0\144\0\350\3'; cat "$f"; } >"$out/cut-$name"
        # Read from offset 12 on (after the head), as a later poll does.
        { printf '\1\0\0\14\0\0\0\0'; tail -c +13 "$f"; } >"$out/between-$name"
        # Records capped at 258 bytes.
        { printf '\2\0\1\0\0\0\0\1\200\0'; cat "$f"; } >"$out/capped-$name"
    done
}

seed_record_decode() {
    local out=$1 f name i line
    for f in $(blobs); do
        name=$(basename "$(dirname "$f")")-$(basename "$f")
        case $f in
            *.ndjson)
                i=0
                while IFS= read -r line; do
                    [ -n "$line" ] || continue
                    i=$((i + 1))
                    printf '%s' "$line" >"$out/$name-$i"
                done <"$f"
                ;;
            *)
                if command -v jq >/dev/null; then
                    i=0
                    while IFS= read -r line; do
                        i=$((i + 1))
                        printf '%s' "$line" >"$out/$name-$i"
                    done < <(jq -c '.records[]' "$f")
                else
                    cp "$f" "$out/$name"
                fi
                ;;
        esac
    done
}

seed_tuple_parse() {
    local out=$1 f kind i tuple
    for f in $(blobs); do
        case $f in *vnet*) kind=V ;; *) kind=N ;; esac
        i=0
        # Tuples are the strings that start with a 10 to 13 digit timestamp and a comma.
        while IFS= read -r tuple; do
            i=$((i + 1))
            printf '%s%s' "$kind" "$tuple" >"$out/$kind-$(basename "$f")-$i"
        done < <(grep -ohE '"[0-9]{10,13},[^"]*"' "$f" | tr -d '"' | sort -u)
    done
}

seed_listing_xml() {
    local out=$1 ids id i=0
    # Blob names as Azure writes them, from the resource ids of the fixtures.
    ids=$(grep -ohE '"(resourceId|flowLogResourceID)": ?"[^"]*"' $(blobs) | sed -E 's/.*: ?"//; s/"$//' | sort -u)
    for id in $ids; do
        i=$((i + 1))
        cat >"$out/page-$i.xml" <<EOF
<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="insights-logs-flowlogflowevent"><Prefix>resourceId=$id/</Prefix><Delimiter>/</Delimiter><Blobs><BlobPrefix><Name>resourceId=$id/y=2025/</Name></BlobPrefix><Blob><Name>resourceId=$id/y=2025/m=11/d=04/h=10/m=00/macAddress=000D3AF87856/PT1H.json</Name><Properties><Creation-Time>Tue, 04 Nov 2025 10:00:00 GMT</Creation-Time><Last-Modified>Tue, 04 Nov 2025 10:59:01 GMT</Last-Modified><Etag>0x8DDF0C1A2B3C4D5</Etag><Content-Length>1234</Content-Length><Content-Type>application/octet-stream</Content-Type><BlobType>BlockBlob</BlobType></Properties><OrMetadata /></Blob><Blob><Name Encoded="true">resourceId%3D%2FSUB%2F%EF%BF%BE.json</Name><Properties><Last-Modified>Tue, 04 Nov 2025 11:00:00 GMT</Last-Modified><Etag>"0x1"</Etag><Content-Length>0</Content-Length></Properties></Blob></Blobs><NextMarker>2!96!MDAwMDE5IWZsb3dMb2dSZXNvdXJjZUlEPS9TVUIvQi8h</NextMarker></EnumerationResults>
EOF
    done
    printf '%s' '<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="c"><Prefix>x/</Prefix><Blobs /><NextMarker /></EnumerationResults>' >"$out/empty.xml"
    # Structured pages (anything not starting with `<`): flags, marker, then entries.
    printf '\0\0\1\3abc\0\5hello' >"$out/structured-1"
    printf '\37\4abcd\1\10\0\1\2\3\4\5\6\7\10\1\2\3\4\5\6\7\10\2\0\1\2\3\4\5\6\7\10' >"$out/structured-2"
}

seed_config_toml() {
    local out=$1 example=$root/config/flowlogd.example.toml
    cp "$example" "$out/example.toml"
    # The example's commented alternatives, uncommented one at a time.
    sed -E 's/^# (\[source\.auth\])$/\1/' "$example" >"$out/example-tables.toml"
    cat >"$out/sas.toml" <<'EOF'
[[source]]
name = "vnet"
container = "insights-logs-flowlogflowevent"
blob_endpoint = "http://127.0.0.1:10000/devstoreaccount1"
index = "flowlogs-%{+xxxx.ww}"
since = "2026-11-20T00:00:00Z"
[source.auth]
method = "sas"
sas_token = "sv=2022-11-02&ss=b&srt=co&sp=rl&sig=c2VjcmV0c2lnbmF0dXJl"
[elasticsearch]
urls = ["http://127.0.0.1:9200"]
password = "hunter2hunter2"
flush_interval = "250ms"
[daemon]
interval = "30s"
EOF
    cat >"$out/connection-string.toml" <<'EOF'
[[source]]
name = "nsg"
container = "insights-logs-networksecuritygroupflowevent"
auth = { method = "connection_string", connection_string = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;" }
[elasticsearch]
cloud_id = "deployment:ZXhhbXBsZS5jb20kYWJjJGRlZg=="
api_key = "aWQ6c2VjcmV0YXBpa2V5"
EOF
    cat >"$out/account-key.toml" <<'EOF'
[[source]]
name = "a"
account = "devstoreaccount1"
container = "c"
settle = 60
max_record_bytes = 1024
retry = { max_tries = 1, initial_delay_ms = 1, max_delay_ms = 1, max_elapsed_secs = 1 }
[source.auth]
method = "account_key"
account_key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
[elasticsearch]
delete_after = "30d"
EOF
}

seed_index_pattern() {
    local out=$1 i=0 p
    # The patterns of the example configuration, then the supported tokens one by one.
    while IFS= read -r p; do
        i=$((i + 1))
        printf '%s' "$p" >"$out/example-$i"
    done < <(grep -ohE '%\{\+[^}]*\}' "$root/config/flowlogd.example.toml" | sed 's/^/flowlogs-/' | sort -u)
    for p in 'flowlogs-%{+xxxx.ww}' 'nsg-%{+YYYY.MM.dd}' 'vnet-flow-logs-%{+xxxx.ww}' 'plain-index' \
        'a-%{+yyyy}-%{+yy}-%{+YY}-%{+xx}-%{+w}-%{+M}-%{+d}-%{+H}' "q-%{+yyyy'-w'ww''}" 'bad-%{field}' 'x-%{+Q}'; do
        i=$((i + 1))
        printf '%s' "$p" >"$out/pattern-$i"
    done
    # With a time: a NUL, then an i64 (LE) of epoch milliseconds (2021-01-01T00:00:00Z).
    printf 'flowlogs-%%{+xxxx.ww}\0\0\160\76\273\166\1\0\0' >"$out/timed-1"
}

# --- runs ----------------------------------------------------------------------------------
sanitizer_args=(-s "$sanitizer")
echo "== building the fuzz targets (sanitizer $sanitizer, $CARGO_BUILD_JOBS build job(s))"
(cd "$root" && cargo fuzz build "${sanitizer_args[@]}") || die "the fuzz targets did not build"

failed=()
summary=()
for target in "${run[@]}"; do
    seeds=$fuzz/seeds/$target
    corpus=$fuzz/corpus/$target
    artifacts=$fuzz/artifacts/$target
    rm -rf "$seeds"
    mkdir -p "$seeds" "$corpus" "$artifacts"
    "seed_$target" "$seeds"
    log=$artifacts/run.log
    if [ "$secs" -eq 0 ]; then
        limit=(-runs=0)
    else
        limit=(-max_total_time="$secs")
    fi
    echo "== $target: $(find "$seeds" -type f | wc -l) seeds, $(find "$corpus" -type f | wc -l) corpus inputs, ${secs}s"
    started=$(date +%s)
    status=0
    (cd "$root" && cargo fuzz run "${sanitizer_args[@]}" "$target" "$corpus" "$seeds" -- \
        "${limit[@]}" -timeout=30 -print_final_stats=1 -artifact_prefix="$artifacts/") \
        >"$log" 2>&1 || status=$?
    took=$(($(date +%s) - started))
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    inputs=$(find "$corpus" -type f | wc -l)
    bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    line="$target: executions ${execs:-?}, ${rate:-?}/s, run time ${took}s, corpus $inputs inputs ($bytes bytes)"
    if [ "$status" -ne 0 ]; then
        crash=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/Test unit written to //')
        line="$line, FAILED (exit $status${crash:+, input $crash}; log $log)"
        failed+=("$target")
        grep -E '^(thread|==[0-9]+==ERROR|SUMMARY)' "$log" | head -5 >&2 || true
    else
        line="$line, ok"
    fi
    echo "$line"
    summary+=("$line")
done

echo "== summary (sanitizer $sanitizer)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failed: ${failed[*]}" >&2
    exit 1
fi
