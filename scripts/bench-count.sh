#!/usr/bin/env bash
# One hot-counter worker vs kcat reading the same pre-filled topic, in one run.
#
# For each key-space size (default 10^5, 10^6, 10^7 distinct products; 5M OpenResty events
# each) the topic is filled once by access-producer, then read to the end by
#   kcat -C -e -o beginning (to /dev/null)   and
#   hot-counter --until-caught-up            (counting every event, final publish included).
# Prints both rates, their ratio, and the worker's peak RSS, which must stay flat as the key
# space grows at fixed capacity.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-5000000}
KEY_SPACES=${KEY_SPACES:-"100000 1000000 10000000"}

scripts/stack.sh up >/dev/null
# shellcheck source=/dev/null
. .stack/env
command -v kcat >/dev/null || { apt-get update -qq && apt-get install -y -qq kcat >/dev/null; }
cargo build --release -q -p access-producer -p hot-counter

run=bench-count-$$-$(date +%s)
printf '%-10s %12s %12s %8s %10s\n' keys kcat_ev/s counter_ev/s ratio peak_rss
for keys in $KEY_SPACES; do
  topic="$run-$keys"
  target/release/access-producer --quiet --topic "$topic" synthetic \
    --events "$EVENTS" --keys "$keys" --seed 7
  start=$(date +%s.%N)
  kcat -C -b "$HOTKEYS_KAFKA_BROKERS" -t "$topic" -e -o beginning -q >/dev/null
  end=$(date +%s.%N)
  kcat_rate=$(echo "$EVENTS / ($end - $start)" | bc -l)
  out=$(HOTKEYS_KAFKA_TOPIC="$topic" HOTKEYS_NAME="$topic" HOTKEYS_KAFKA_GROUP="$topic" \
    RUST_LOG=warn /usr/bin/time -f 'rss_kb=%M' target/release/hot-counter --until-caught-up 2>&1)
  counter_rate=$(sed -n 's/.*: \([0-9]*\) events\/s.*/\1/p' <<<"$out")
  rss_kb=$(sed -n 's/^rss_kb=//p' <<<"$out")
  printf '%-10s %12.0f %12.0f %8.2f %8d MB\n' "$keys" "$kcat_rate" "$counter_rate" \
    "$(echo "$counter_rate / $kcat_rate" | bc -l)" "$((rss_kb / 1024))"
done
