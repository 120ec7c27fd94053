#!/usr/bin/env bash
# Decode → NDJSON cost of one or more builds, as `flowlogd decode` runs it, on the decode bench's
# blobs (VNet v4 and NSG v2, 60 records × 200 tuples, seed 42: 12,000 tuples each), in two
# measures:
#   - instructions per tuple, counted by valgrind's cachegrind over the file 5 times (start-up
#     included, ~1% of it): deterministic, whatever the machine's load, and the way to compare
#     builds on a shared or throttled VM (no hardware counters there);
#   - CPU time (perf's task-clock) of the file 20 times over (240,000 tuples), ROUNDS rounds with
#     the builds interleaved: the least and the median, and tuples per CPU-second from the least.
# Instructions are not time (a change can add instructions and save time, e.g. fewer
# mispredicted branches); report both. docs/PERFORMANCE.md, "Decoding", has the figures.
#
#   scripts/bench-decode.sh                                     # head = a release build of the tree
#   COMPARE_BINS="base=/tmp/base/target/release/flowlogd head=target/release/flowlogd" scripts/bench-decode.sh
#   ROUNDS=15 KINDS="vnet" scripts/bench-decode.sh
#
# Needs perf (linux-perf); valgrind is optional (the instruction column is skipped without it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
unset RUST_BACKTRACE
ROUNDS=${ROUNDS:-11}
KINDS=${KINDS:-"vnet nsg2"}

if [ -z "${COMPARE_BINS:-}" ]; then
    if [ -z "${FLOWLOGD_BIN:-}" ]; then
        echo "== cargo build --release" >&2
        cargo build --release --locked --bin flowlogd >&2
        FLOWLOGD_BIN=target/release/flowlogd
    fi
    COMPARE_BINS="head=$FLOWLOGD_BIN"
fi
command -v perf >/dev/null || { echo "bench-decode.sh: perf not found" >&2; exit 1; }
for pair in $COMPARE_BINS; do
    [ -x "${pair#*=}" ] || { echo "bench-decode.sh: ${pair#*=} is not an executable" >&2; exit 1; }
done
first_bin=${COMPARE_BINS%% *}
first_bin=${first_bin#*=}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The tuples per file, from `gen`'s summary line ("(12000 tuples, … bytes)").
declare -A tuples
for kind in $KINDS; do
    line=$("$first_bin" gen --kind "$kind" --records 60 --tuples 200 --seed 42 --out "$work/$kind.json" 2>&1 >/dev/null | tail -n 1)
    tuples[$kind]=$(sed -n 's/.*(\([0-9]*\) tuples.*/\1/p' <<<"$line")
    [ -n "${tuples[$kind]}" ] || { echo "bench-decode.sh: cannot read the tuple count from: $line" >&2; exit 1; }
done

decode_args() { # FILE COPIES: the arguments of `flowlogd decode` of FILE COPIES times over
    local file=$1 copies=$2
    printf '%s\n' decode --container insights-logs-flowlogflowevent --blob bench/PT1H.json
    for _ in $(seq "$copies"); do printf '%s\n' "$file"; done
}

printf '%-10s %-6s %12s %12s %12s %16s\n' build kind Ir/tuple least_ms median_ms "M tuples/CPU-s"
for kind in $KINDS; do
    file=$work/$kind.json
    mapfile -t args20 < <(decode_args "$file" 20)
    mapfile -t args5 < <(decode_args "$file" 5)
    declare -A times=()
    for round in $(seq "$ROUNDS"); do
        for pair in $COMPARE_BINS; do
            label=${pair%%=*} bin=${pair#*=}
            ms=$(perf stat -e task-clock -x, "$bin" "${args20[@]}" 2>&1 >/dev/null | grep task-clock | cut -d, -f1)
            times[$label]="${times[$label]:-} $ms"
        done
        echo "round $round/$ROUNDS ($kind) done" >&2
    done
    for pair in $COMPARE_BINS; do
        label=${pair%%=*} bin=${pair#*=}
        ir=-
        if command -v valgrind >/dev/null; then
            refs=$(valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
                "$bin" "${args5[@]}" 2>&1 >/dev/null | grep -E "I +refs" | awk '{print $NF}' | tr -d , | tail -n 1)
            [ -n "$refs" ] && ir=$(( refs / (5 * tuples[$kind]) ))
        fi
        read -r least median < <(tr ' ' '\n' <<<"${times[$label]}" | grep . | sort -n |
            awk '{v[NR]=$1} END {print v[1], v[int((NR+1)/2)]}')
        rate=$(awk -v n="${tuples[$kind]}" -v ms="$least" 'BEGIN {printf "%.2f", n * 20 / ms / 1000}')
        printf '%-10s %-6s %12s %12s %12s %16s\n' "$label" "$kind" "$ir" "$least" "$median" "$rate"
    done
    unset times
done
echo "$(nproc) cores; $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg); ROUNDS=$ROUNDS"
