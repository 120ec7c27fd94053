# shellcheck shell=bash
# MaxMind DB files for the enrichment tests and benchmarks, installed and written idempotently:
#   - mmdb-writer (PyPI) writes small databases whose every value the tests expect
#     (scripts/lib/make-test-mmdb.py): test-City.mmdb, test-Country.mmdb, test-City-ipv4.mmdb,
#     test-ASN.mmdb
#   - maxminddb-geolite2 (PyPI) ships a real GeoLite2-City database of July 2018 (~55 MB),
#     linked as GeoLite2-City.mmdb (the benchmark and a real-data test read it)
# Packages go into .deps/python (pip --target, no virtualenv needed), databases into
# .run/test-mmdb/ (both git-ignored; the databases are never committed).
#
# Source it and call flowlogd_test_mmdb: exports FLOWLOGD_TEST_MMDB_DIR (scripts/test.sh does).
# Run it: prints FLOWLOGD_TEST_MMDB_DIR=... (what the Rust tests do when the variable is unset).
# Idempotent: a second run with the same versions and generator changes nothing (well under a
# second); concurrent runs serialise on a lock.

FLOWLOGD_TEST_MMDB_WRITER_VERSION=0.2.7
FLOWLOGD_TEST_GEOLITE2_VERSION=2018.703

_flowlogd_test_mmdb_make() {
    local root=$1 deps=$1/.deps out=$1/.run/test-mmdb site=$1/.deps/python/site want log
    want="mmdb-writer==$FLOWLOGD_TEST_MMDB_WRITER_VERSION maxminddb-geolite2==$FLOWLOGD_TEST_GEOLITE2_VERSION"
    if [ "$(cat "$site/.flowlogd-installed" 2>/dev/null)" != "$want" ]; then
        command -v python3 >/dev/null || { echo "test-mmdb.sh: python3 not found" >&2; return 1; }
        echo "test-mmdb.sh: installing $want into .deps/python" >&2
        mkdir -p "$site" || return 1
        log="$deps/pip-install.log"
        # shellcheck disable=SC2086 # $want is two requirement words
        if ! python3 -m pip install --quiet --disable-pip-version-check --no-input --upgrade \
            --target "$site" $want </dev/null >"$log" 2>&1; then
            echo "test-mmdb.sh: pip install $want failed:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        echo "$want" >"$site/.flowlogd-installed" || return 1
    fi
    local generator=$root/scripts/lib/make-test-mmdb.py stamp=$out/.flowlogd-written
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ "$generator" -nt "$stamp" ]; then
        mkdir -p "$out" || return 1
        PYTHONPATH="$site" python3 "$generator" "$out" || {
            echo "test-mmdb.sh: writing the test databases failed" >&2
            return 1
        }
        echo "$want" >"$stamp" || return 1
    fi
    local geolite=$site/_maxminddb_geolite2/GeoLite2-City.mmdb
    [ -f "$geolite" ] || { echo "test-mmdb.sh: $geolite missing after install" >&2; return 1; }
    ln -sfn "$geolite" "$out/GeoLite2-City.mmdb" || return 1
}

flowlogd_test_mmdb() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)" || return 1
    mkdir -p "$root/.deps" || return 1
    (
        if command -v flock >/dev/null; then
            flock -w 600 9 || { echo "test-mmdb.sh: timed out waiting for .deps/.test-mmdb.lock" >&2; exit 1; }
        fi
        _flowlogd_test_mmdb_make "$root" || exit 1
    ) 9>"$root/.deps/.test-mmdb.lock" || return 1
    FLOWLOGD_TEST_MMDB_DIR="$root/.run/test-mmdb"
    export FLOWLOGD_TEST_MMDB_DIR
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    flowlogd_test_mmdb || { echo "test-mmdb.sh: failed" >&2; exit 1; }
    echo "FLOWLOGD_TEST_MMDB_DIR=$FLOWLOGD_TEST_MMDB_DIR"
fi
