#!/usr/bin/env bash
# Accuracy of `lru` vs `space-saving` against exact counting: top-100 recall and mean relative
# count error for Zipf s in {0.8, 1.0, 1.2}, capacity in {1000, 10000}, 2M events over 1M keys.
# No Kafka needed: the counting code reads the same files access-producer would publish.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-2000000}
KEYS=${KEYS:-1000000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p access-producer
cargo bench -q -p hotkeys --bench accuracy --no-run 2>/dev/null
for s in 0.8 1.0 1.2; do
  file="$work/zipf-$s.jsonl"
  target/release/access-producer --quiet synthetic --events "$EVENTS" --keys "$KEYS" \
    --zipf "$s" --seed 42 --write "$file"
  echo "== zipf s=$s"
  cargo bench -q -p hotkeys --bench accuracy -- "$file" 100 2>/dev/null
done
