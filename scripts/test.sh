#!/usr/bin/env bash
# Runs the whole test suite the way CI does: formatting, lints, then every unit, integration
# and end-to-end test. Installs what the tests need (Azurite from npm, osmem-server from PyPI)
# into .deps/ first; each test starts and stops its own servers on free loopback ports.
# Set ELASTICSEARCH_URL to also run the end-to-end tests against a real cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/deps.sh
. scripts/deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== deployment files (compose, systemd unit, dashboards)"
scripts/check-deploy.sh
echo "== cargo test"
# Benches are built and run once in test mode too, so they cannot rot.
cargo test --all-targets --locked "$@"
