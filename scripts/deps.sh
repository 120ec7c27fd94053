#!/usr/bin/env bash
# Installs the servers that the tests and the quickstart run against, into the
# git-ignored, project-local .deps/ folder:
#   - Azurite (npm), the Azure Blob Storage emulator           -> .deps/node
# and builds the real search engine the tests run against:
#   - OpenSearch 2.19 from Maven Central jars, started in-process by tests/opensearch
#     (`mvn -q package`; jars cached in ~/.m2)        -> tests/opensearch/target/flowlogd-opensearch.jar
# Idempotent: when the pinned versions are present and the launcher jar is newer than its
# sources it installs nothing and prints only the result (well under a second). Works with
# CI=true and no stdin.
#
# Run it:     scripts/deps.sh     prints FLOWLOGD_AZURITE_BIN=... and FLOWLOGD_OPENSEARCH_JAR=...
# Source it:  . scripts/deps.sh   exports both
# The Rust test harness (tests/common/servers.rs) and scripts/lib/services.sh
# read those variables and fall back to the same .deps/ paths when unset.

# Azurite 3.36+ declares node >= 21; this machine kind ships node 20, so stay on
# the last release that supports it.
FLOWLOGD_AZURITE_VERSION=3.35.0

_flowlogd_deps_azurite_ok() {
    grep -q "\"version\": \"$FLOWLOGD_AZURITE_VERSION\"" \
        "$1/node/node_modules/azurite/package.json" 2>/dev/null \
        && [ -x "$1/node/node_modules/.bin/azurite-blob" ]
}

# Installs whatever is missing. Logs go to .deps/*.log, shown only on failure.
_flowlogd_deps_install() {
    local deps=$1 log
    if ! _flowlogd_deps_azurite_ok "$deps"; then
        command -v npm >/dev/null || { echo "deps.sh: npm not found (needed for Azurite)" >&2; return 1; }
        echo "deps.sh: installing azurite@$FLOWLOGD_AZURITE_VERSION into .deps/node" >&2
        mkdir -p "$deps/node" || return 1
        # An own package.json keeps npm from walking up into some parent project.
        [ -f "$deps/node/package.json" ] \
            || echo '{"name":"flowlogd-deps","private":true}' >"$deps/node/package.json" || return 1
        log="$deps/npm-install.log"
        if ! npm install --prefix "$deps/node" --no-audit --no-fund --no-update-notifier \
            --loglevel=error --save-exact "azurite@$FLOWLOGD_AZURITE_VERSION" \
            </dev/null >"$log" 2>&1; then
            echo "deps.sh: npm install azurite@$FLOWLOGD_AZURITE_VERSION failed:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        _flowlogd_deps_azurite_ok "$deps" \
            || { echo "deps.sh: azurite installed but not found in .deps/node" >&2; return 1; }
    fi

}

# Whether the launcher jar exists and is newer than its pom and sources.
_flowlogd_deps_opensearch_ok() {
    local dir=$1/tests/opensearch jar=$1/tests/opensearch/target/flowlogd-opensearch.jar
    [ -f "$jar" ] && [ -z "$(find "$dir/pom.xml" "$dir/src" -newer "$jar" -print -quit 2>/dev/null)" ]
}

_flowlogd_deps_build_opensearch() {
    local root=$1 deps=$2 log started
    command -v java >/dev/null || { echo "deps.sh: java not found (needed for the OpenSearch test node; JDK 17)" >&2; return 1; }
    command -v mvn >/dev/null || { echo "deps.sh: mvn not found (needed to build the OpenSearch test node)" >&2; return 1; }
    echo "deps.sh: building the OpenSearch test node (tests/opensearch, mvn package; first run downloads ~70 MB into ~/.m2)" >&2
    log="$deps/mvn-package.log"
    started=$SECONDS
    # `clean` so jars of an older dependency set never linger in target/lib.
    if ! (cd "$root/tests/opensearch" && mvn -B -q clean package) </dev/null >"$log" 2>&1; then
        echo "deps.sh: mvn package in tests/opensearch failed:" >&2
        tail -n 40 "$log" >&2
        return 1
    fi
    echo "deps.sh: OpenSearch test node built in $((SECONDS - started)) s" >&2
}

_flowlogd_deps_main() {
    local root deps
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)" || return 1
    deps="$root/.deps"
    mkdir -p "$deps" || return 1

    if ! _flowlogd_deps_azurite_ok "$deps" || ! _flowlogd_deps_opensearch_ok "$root"; then
        # The lock serialises concurrent first runs (two test runs on a fresh machine);
        # the installer re-checks under it.
        (
            if command -v flock >/dev/null; then
                flock -w 900 9 || { echo "deps.sh: timed out waiting for $deps/.install.lock" >&2; exit 1; }
            fi
            _flowlogd_deps_install "$deps" || exit 1
            if ! _flowlogd_deps_opensearch_ok "$root"; then
                _flowlogd_deps_build_opensearch "$root" "$deps" || exit 1
            fi
        ) 9>"$deps/.install.lock" || return 1
    fi


    FLOWLOGD_AZURITE_BIN="$deps/node/node_modules/.bin/azurite-blob"
    FLOWLOGD_OPENSEARCH_JAR="$root/tests/opensearch/target/flowlogd-opensearch.jar"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: export into the caller's shell, never exit it.
    if _flowlogd_deps_main; then
        export FLOWLOGD_AZURITE_BIN FLOWLOGD_OPENSEARCH_JAR
    else
        echo "deps.sh: failed" >&2
        return 1
    fi
else
    set -euo pipefail
    if ! _flowlogd_deps_main; then
        echo "deps.sh: failed" >&2
        exit 1
    fi
    echo "FLOWLOGD_AZURITE_BIN=$FLOWLOGD_AZURITE_BIN"
    echo "FLOWLOGD_OPENSEARCH_JAR=$FLOWLOGD_OPENSEARCH_JAR"
fi
