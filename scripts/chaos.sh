#!/usr/bin/env bash
# Chaos run (issue 9; docs/RELIABILITY.md, "Chaos"):
#
#   scripts/chaos.sh SEED TRIALS [KILLS_PER_TRIAL]     e.g. scripts/chaos.sh 0x5eed 9 12
#
# Builds the release binary and the chaos test binary once, starts Azurite and an OpenSearch
# node with the project's own functions (scripts/lib/services.sh) in .run/chaos/, runs TRIALS
# trials of tests/chaos.rs seeded SEED (KILLS_PER_TRIAL SIGKILLs each, default 12, plus one
# SIGTERM per six kills), stops both servers by their process group ids, prints a summary
# (trials, seed, kills, faults injected per kind, tuples written / indexed / dead-lettered,
# lost, duplicated) and exits non-zero on any loss, duplicate or other failure.
#
# FLOWLOGD_TEST_CHAOS_MODE=ownership runs instead, TRIALS times with seeds SEED, SEED+1, …, the
# shared-ownership trial of tests/ownership.rs: three `flowlogd run` instances on one container
# under `[cluster] coordination_container`, KILLS_PER_TRIAL random SIGKILLs and restarts while
# blobs grow, every tuple indexed exactly once (issue 12). Logs in .run/chaos/SEED-…/.
#
# Each trial's plan, timeline, daemon logs, dead-letter file and verdict are kept in
# .run/chaos/SEED-TIMESTAMP/trial-N/. A failing trial is re-run alone with
#   FLOWLOGD_TEST_CHAOS_FIRST=N scripts/chaos.sh SEED 1 [KILLS_PER_TRIAL]
# (same seed, same kills: the same plan).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage="usage: scripts/chaos.sh SEED TRIALS [KILLS_PER_TRIAL]"
seed=${1:?$usage}
trials=${2:?$usage}
kills=${3:-12}
first=${FLOWLOGD_TEST_CHAOS_FIRST:-0}
command -v jq >/dev/null || { echo "chaos.sh: jq is needed for the summary" >&2; exit 1; }

# shellcheck source=scripts/deps.sh
. scripts/deps.sh

mode=${FLOWLOGD_TEST_CHAOS_MODE:-single}
case "$mode" in
    single) chaos_test=chaos ;;
    ownership) chaos_test=ownership ;;
    *) echo "chaos.sh: FLOWLOGD_TEST_CHAOS_MODE must be single or ownership, not $mode" >&2; exit 2 ;;
esac

echo "== build (release): flowlogd and the $chaos_test test binary"
# The test binary runs CARGO_BIN_EXE_flowlogd, the release binary built with it.
test_bin=$(cargo test --release --locked --test "$chaos_test" --no-run --message-format=json \
    | jq -r --arg t "$chaos_test" 'select(.reason == "compiler-artifact" and .profile.test and .target.name == $t) | .executable' \
    | tail -n 1)
[ -x "$test_bin" ] || { echo "chaos.sh: chaos test binary not found" >&2; exit 1; }

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh
# A run directory of its own: the quickstart's and the test suite's servers are left alone.
export FLOWLOGD_RUN_DIR="$PWD/.run/chaos"
export FLOWLOGD_OPENSEARCH_HOME="$FLOWLOGD_RUN_DIR/opensearch-home"
export FLOWLOGD_AZURITE_LOCATION="$FLOWLOGD_RUN_DIR/azurite-data"
flowlogd_stop_services
rm -rf "$FLOWLOGD_OPENSEARCH_HOME" "$FLOWLOGD_AZURITE_LOCATION"
trap 'flowlogd_stop_services' EXIT
echo "== starting Azurite and the OpenSearch node"
flowlogd_start_azurite
FLOWLOGD_OPENSEARCH_HEAP=${FLOWLOGD_OPENSEARCH_HEAP:-768m} flowlogd_start_opensearch
echo "   Azurite $FLOWLOGD_AZURITE_ENDPOINT, OpenSearch $FLOWLOGD_OPENSEARCH_URL"

out="$FLOWLOGD_RUN_DIR/$seed-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
if [ "$mode" = ownership ]; then
    echo "== ownership chaos: seeds $seed+$first..$((first + trials - 1)), $kills SIGKILLs per trial; logs in $out"
    failed=0
    for trial in $(seq "$first" $((first + trials - 1))); do
        if ! FLOWLOGD_TEST_SEARCH_URL=$FLOWLOGD_OPENSEARCH_URL \
            FLOWLOGD_TEST_OWNERSHIP_SEED=$((seed + trial)) \
            FLOWLOGD_TEST_OWNERSHIP_KILLS=$kills \
            "$test_bin" --exact random_sigkills_and_restarts_of_three_instances_lose_and_duplicate_no_tuple \
            --nocapture --test-threads=1 >"$out/trial-$trial.log" 2>&1; then
            failed=$((failed + 1))
            echo "FAILED trial $trial (seed $((seed + trial))); see $out/trial-$trial.log"
        fi
        grep -h "ownership chaos:" "$out/trial-$trial.log" | sed "s/^/trial $trial: /"
    done
    echo "== ownership chaos: $trials trial(s), $failed failed"
    [ "$failed" -eq 0 ]
    exit
fi
echo "== chaos: seed $seed, trials $first..$((first + trials - 1)), $kills SIGKILLs per trial; artifacts in $out"
started=$SECONDS
set +e
FLOWLOGD_TEST_SEARCH_URL=$FLOWLOGD_OPENSEARCH_URL \
    FLOWLOGD_TEST_CHAOS_AZURITE_PORT=$FLOWLOGD_AZURITE_PORT \
    FLOWLOGD_TEST_CHAOS_SEED=$seed \
    FLOWLOGD_TEST_CHAOS_TRIALS=$trials \
    FLOWLOGD_TEST_CHAOS_FIRST=$first \
    FLOWLOGD_TEST_CHAOS_KILLS=$kills \
    FLOWLOGD_TEST_CHAOS_OUT=$out \
    "$test_bin" --exact \
    flowlogd_run_under_sigkills_sigterms_and_storage_and_engine_faults_loses_and_duplicates_no_tuple \
    --nocapture --test-threads=1 2>&1 | tee "$out/chaos.log"
status=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - started))

report="$out/report.jsonl"
echo
echo "== summary (seed $seed, ${elapsed} s)"
if [ ! -s "$report" ]; then
    echo "no trial finished; see $out/chaos.log"
    exit 1
fi
jq -s -r '
  def total(f): map(f) | add;
  "trials             \(length) (\(map(select(.passed)) | length) passed)",
  "seed               \(.[0].seed)",
  "SIGKILLs           \(total(.kills))",
  "SIGTERMs           \(total(.terms))",
  "faults injected:",
  ((map(.faults | to_entries) | add | group_by(.key)
    | map("  \(.[0].key | . + " " * (22 - length)) \(map(.value) | add)"))[]),
  "bulk requests      \(total(.bulk_requests)) (\(total(.replayed_409)) items answered 409: replays)",
  "tuples written     \(total(.written))",
  "tuples indexed     \(total(.indexed))",
  "dead-lettered      \(total(.dead_lettered)) (all with a persistent item error: \(total(.unaccounted_dead_letters)) unaccounted, \(total(.poisoned_not_dead_lettered)) missing)",
  "lost               \(total(.lost))",
  "duplicated         \(total(.duplicated))",
  "other findings     \(total(.findings | length))",
  (map(select(.passed | not)) | .[] | "FAILED trial \(.trial) (trial seed \(.trial_seed)): lost \(.lost), duplicated \(.duplicated), findings \(.findings); kept in \(.kept)")
' "$report"
bad=$(jq -s '[.[] | .lost + .duplicated + .unaccounted_dead_letters + .poisoned_not_dead_lettered + .problems + (.findings | length)] | add' "$report")
if [ "$status" -ne 0 ] || [ "$bad" -ne 0 ]; then
    echo "chaos: FAILED (test exit $status); see $out"
    exit 1
fi
echo "chaos: 0 lost, 0 duplicated"
