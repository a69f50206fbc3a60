#!/usr/bin/env bash
# The tests: brings up the local stack (installing what is missing), then runs every unit
# and integration test of the workspace against the real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env
# Tests that need a server fail instead of skipping when it is unreachable.
export CI=${CI:-true}

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
