#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests that run real containers and real
# engines through the release binary. Needs root. One build profile (release) for everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
cargo test --release --locked -- --test-threads=2
