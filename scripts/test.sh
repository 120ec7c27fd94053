#!/usr/bin/env bash
# Runs the whole test suite the way CI does: formatting, lints, then every unit, integration
# and end-to-end test. Installs what the tests need first (Azurite from npm, the OpenSearch test
# node built with Maven from Maven Central jars).
#
# Search engine: one real OpenSearch node is started here for the whole run and shared by every
# test binary (FLOWLOGD_TEST_SEARCH_URL); tests isolate themselves by index and template names.
# It is stopped by its own process group when this script exits. Set ELASTICSEARCH_URL (and
# ELASTICSEARCH_USERNAME/_PASSWORD or _API_KEY, _CA_FILE or _INSECURE=1) to run those tests
# against another cluster instead. Azurite is started per test, on free loopback ports.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# The MaxMind test databases of the enrichment tests (PyPI packages into .deps/python).
# shellcheck source=scripts/lib/test-mmdb.sh
. scripts/lib/test-mmdb.sh
flowlogd_test_mmdb

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== deployment files (compose, systemd unit, dashboards)"
scripts/check-deploy.sh
echo "== cargo test (build)"
cargo test --all-targets --locked --no-run "$@"

if [ -z "${ELASTICSEARCH_URL:-}" ]; then
    # shellcheck source=scripts/lib/services.sh
    . scripts/lib/services.sh
    # A run directory of its own: a quickstart node in .run/ is left alone.
    export FLOWLOGD_RUN_DIR="$PWD/.run/test"
    export FLOWLOGD_OPENSEARCH_HOME="$FLOWLOGD_RUN_DIR/opensearch-home"
    flowlogd_stop_opensearch
    rm -rf "$FLOWLOGD_OPENSEARCH_HOME"
    trap 'flowlogd_stop_opensearch' EXIT
    started=$SECONDS
    echo "== starting the shared OpenSearch test node"
    FLOWLOGD_OPENSEARCH_HEAP=${FLOWLOGD_OPENSEARCH_HEAP:-768m} flowlogd_start_opensearch
    echo "   $FLOWLOGD_OPENSEARCH_URL ready in $((SECONDS - started)) s"
    export FLOWLOGD_TEST_SEARCH_URL=$FLOWLOGD_OPENSEARCH_URL
fi

echo "== cargo test"
# Benches are built and run once in test mode too, so they cannot rot.
cargo test --all-targets --locked "$@"
