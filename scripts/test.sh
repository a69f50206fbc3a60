#!/usr/bin/env bash
# The tests: brings up the local stack (installing what is missing), then runs every unit
# and integration test of the workspace against the real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env

# The dashboard's browser test drives Debian's chromium through chromedriver.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  echo "installing chromium and chromium-driver (log: .stack/apt-chromium.log)"
  { apt-get update && apt-get install -y chromium chromium-driver; } >.stack/apt-chromium.log 2>&1 ||
    { echo "installing chromium failed; see .stack/apt-chromium.log" >&2; exit 1; }
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
