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

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_build_packages
# The dashboard's browser test drives Debian's chromium through chromedriver.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  apt_install chromium chromium-driver
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
