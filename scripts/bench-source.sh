#!/usr/bin/env bash
# Blob-source figures for docs/PERFORMANCE.md ("Blob source"): read amplification and List
# Blobs requests per poll. They are counts, not timings, taken from the storage client's own
# counters (StorageStats) and from `flowlogd once` summaries, by the measuring tests of
# tests/source_azurite.rs against a local Azurite (and the OpenSearch test node for the `once`
# runs);
# this script runs those tests and prints the lines they mark `MEASURE`.
#
# Usage: scripts/bench-source.sh            (installs Azurite and builds the OpenSearch node if missing)
# Exits non-zero when a measuring test fails (its assertions are the acceptance bounds, e.g.
# read amplification <= 1.01).
set -euo pipefail
# Some code builds errors that capture backtraces when this is set: measure without it.
unset RUST_BACKTRACE
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/deps.sh
. scripts/deps.sh >/dev/null

tests=(
    a_blob_growing_over_60_appends_is_read_exactly_once_per_byte
    restart_from_the_registry_resumes_without_rereading
    rerunning_once_downloads_nothing_and_then_only_what_was_appended
    steady_state_polls_list_as_many_partitions_with_30_days_of_history_as_with_1
    discovery_finds_nsg_and_vnet_resources_and_prefix_and_filter_restrict_them
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! cargo test --locked --test source_azurite -- --nocapture --test-threads=2 "${tests[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    echo "bench-source: a measuring test failed" >&2
    exit 1
fi

measures=$(grep '^MEASURE ' "$log" | sed 's/^MEASURE //' | sort)
echo "$measures"
echo

# The headline figures, from the key=value pairs above.
field() { # field LINE KEY
    tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}
growth=$(grep '^growth ' <<<"$measures")
day1=$(grep '^walker history_days=1 ' <<<"$measures")
day30=$(grep '^walker history_days=30 ' <<<"$measures")
once=$(grep '^once_restarts ' <<<"$measures")
printf '%-52s %s  (%s bytes downloaded / %s appended, %s GETs)\n' \
    "read amplification, 60 appends (library reader):" "$(field "$growth" read_amplification)" "$(field "$growth" bytes_downloaded)" \
    "$(field "$growth" bytes_appended)" "$(field "$growth" get_requests)"
printf '%-52s %s  (2nd run downloaded %s bytes)\n' \
    "read amplification, 3 x flowlogd once:" "$(field "$once" read_amplification)" "$(field "$once" second_run_bytes_downloaded)"
printf '%-52s %s / %s  (discovery, on its own interval: %s / %s)\n' \
    "List Blobs per steady-state poll, 1 day / 30 days:" "$(field "$day1" steady_poll_list_requests)" "$(field "$day30" steady_poll_list_requests)" \
    "$(field "$day1" discovery_list_requests)" "$(field "$day30" discovery_list_requests)"
printf '%-52s %s / %s List Blobs (discovery included)\n' \
    "flowlogd once, steady-state run, 1 day / 30 days:" "$(field "$day1" once_list_requests | cut -d/ -f3)" "$(field "$day30" once_list_requests | cut -d/ -f3)"
