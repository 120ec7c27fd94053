#!/usr/bin/env bash
# Installs the servers that the tests and the quickstart run against, into the
# git-ignored, project-local .deps/ folder:
#   - Azurite (npm), the Azure Blob Storage emulator  -> .deps/node
#   - osmem-server (PyPI), in-memory OpenSearch-compatible server -> .deps/venv
# Idempotent: when the pinned versions are already present it does nothing and
# prints nothing but the result. Safe with CI=true and no stdin.
#
# Run it:     scripts/deps.sh          prints FLOWLOGD_AZURITE_BIN=... and FLOWLOGD_OSMEM_BIN=...
# Source it:  . scripts/deps.sh        exports FLOWLOGD_AZURITE_BIN and FLOWLOGD_OSMEM_BIN
# The Rust test harness (tests/common/servers.rs) reads those variables and
# falls back to the same .deps/ paths when they are unset.

# Azurite 3.36+ declares node >= 21; this machine kind ships node 20, so stay on
# the last release that supports it.
FLOWLOGD_AZURITE_VERSION=3.35.0
FLOWLOGD_OSMEM_VERSION=0.1.6

_flowlogd_deps_main() {
    local root deps
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)" || return 1
    deps="$root/.deps"

    local azurite_pkg="$deps/node/node_modules/azurite/package.json"
    local azurite_bin="$deps/node/node_modules/.bin/azurite-blob"
    # The wheel bundles a static binary under site-packages and declares no
    # console script, so a stable symlink is made in .deps/bin.
    local osmem_link="$deps/bin/osmem-server"

    mkdir -p "$deps" || return 1

    # --- Azurite -----------------------------------------------------------
    if ! grep -q "\"version\": \"$FLOWLOGD_AZURITE_VERSION\"" "$azurite_pkg" 2>/dev/null \
        || [ ! -x "$azurite_bin" ]; then
        command -v npm >/dev/null || { echo "deps.sh: npm not found (needed for Azurite)" >&2; return 1; }
        echo "deps.sh: installing azurite@$FLOWLOGD_AZURITE_VERSION into .deps/node" >&2
        mkdir -p "$deps/node"
        # An own package.json keeps npm from walking up to some parent project.
        [ -f "$deps/node/package.json" ] || echo '{"name":"flowlogd-deps","private":true}' >"$deps/node/package.json"
        local log="$deps/npm-install.log"
        if ! npm install --prefix "$deps/node" --no-audit --no-fund --no-update-notifier \
            --loglevel=error --save-exact "azurite@$FLOWLOGD_AZURITE_VERSION" \
            </dev/null >"$log" 2>&1; then
            echo "deps.sh: npm install azurite@$FLOWLOGD_AZURITE_VERSION failed:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
    fi

    # --- osmem-server --------------------------------------------------------
    local venv="$deps/venv"
    local dist
    dist=$(ls -d "$venv"/lib/python3*/site-packages/osmem_server-"$FLOWLOGD_OSMEM_VERSION".dist-info 2>/dev/null | head -n 1 || true)
    if [ -z "$dist" ] || [ ! -x "$venv/bin/python" ]; then
        local py
        py=$(command -v python3) || { echo "deps.sh: python3 not found (needed for osmem-server)" >&2; return 1; }
        echo "deps.sh: installing osmem-server==$FLOWLOGD_OSMEM_VERSION into .deps/venv" >&2
        local log="$deps/pip-install.log"
        if [ ! -x "$venv/bin/python" ]; then
            "$py" -m venv "$venv" >"$log" 2>&1 || {
                echo "deps.sh: python3 -m venv failed:" >&2; tail -n 30 "$log" >&2; return 1; }
        fi
        if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet \
            --no-input "osmem-server==$FLOWLOGD_OSMEM_VERSION" </dev/null >>"$log" 2>&1; then
            echo "deps.sh: pip install osmem-server==$FLOWLOGD_OSMEM_VERSION failed:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        dist=$(ls -d "$venv"/lib/python3*/site-packages/osmem_server-"$FLOWLOGD_OSMEM_VERSION".dist-info 2>/dev/null | head -n 1 || true)
        [ -n "$dist" ] || { echo "deps.sh: osmem-server installed but not found in $venv" >&2; return 1; }
    fi
    local osmem_real
    osmem_real="$(dirname "$dist")/osmem_server/bin/osmem-server"
    [ -x "$osmem_real" ] || { echo "deps.sh: $osmem_real missing or not executable" >&2; return 1; }
    if [ "$(readlink "$osmem_link" 2>/dev/null)" != "$osmem_real" ]; then
        mkdir -p "$deps/bin"
        ln -sfn "$osmem_real" "$osmem_link"
    fi

    FLOWLOGD_AZURITE_BIN="$azurite_bin"
    FLOWLOGD_OSMEM_BIN="$osmem_link"
    return 0
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: export, do not exit the caller's shell.
    if _flowlogd_deps_main; then
        export FLOWLOGD_AZURITE_BIN FLOWLOGD_OSMEM_BIN
    else
        echo "deps.sh: failed" >&2
        return 1
    fi
else
    set -euo pipefail
    _flowlogd_deps_main
    echo "FLOWLOGD_AZURITE_BIN=$FLOWLOGD_AZURITE_BIN"
    echo "FLOWLOGD_OSMEM_BIN=$FLOWLOGD_OSMEM_BIN"
fi
