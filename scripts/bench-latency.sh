#!/usr/bin/env bash
# Detection latency of one hot-counter worker at the topology defaults.
#
# The worker runs on its own topic and topology name; the latency probe
# (crates/hotkeys/examples/latency_probe.rs) sends a steady background stream (RATE events/s
# over 100,000 products) and CROWDS flash crowds of CROWD_SIZE events, each on a new product,
# one every SPACING (at a random point of its slot). For each crowd it prints the time from
# its first event sent to
#   (a) the whole crowd counted in a hot list in ZooKeeper (the znode's modification time),
#   (b) a subscriber (hotkeys::subscribe) seeing the whole crowd in the hot set,
# then one summary line per figure:
#   latency_zk_ms p50=… p99=… max=…
#   latency_subscriber_ms p50=… p99=… max=…
#   zk_write_bytes_per_s total=… per_task=…   (every write under the counter's tasks)
#
#   scripts/bench-latency.sh
#   CROWDS=10 RATE=5000 scripts/bench-latency.sh
#
# The topic and the ZooKeeper subtree are deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
CROWDS=${CROWDS:-5}
CROWD_SIZE=${CROWD_SIZE:-3000}
RATE=${RATE:-3000}
SPACING=${SPACING:-3s}

scripts/stack.sh up >/dev/null
# shellcheck source=/dev/null
. .stack/env
cargo build --release -q -p hot-counter
cargo build --release -q -p hotkeys --example latency_probe

run=bench-latency-$$-$(date +%s)
export HOTKEYS_NAME=$run HOTKEYS_KAFKA_TOPIC=$run HOTKEYS_KAFKA_GROUP=$run RUST_LOG=warn
PROBE=target/release/examples/latency_probe
worker=
cleanup() {
  if [[ -n $worker ]]; then
    kill -TERM "$worker" 2>/dev/null || true
    wait "$worker" 2>/dev/null || true
  fi
  $PROBE --topology topology/default.toml --cleanup || true
  scripts/stack.sh kafka-class org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$HOTKEYS_KAFKA_BROKERS" --delete --topic "$run" >/dev/null 2>&1 || true
}
trap cleanup EXIT

target/release/hot-counter --topology topology/default.toml &
worker=$!
$PROBE --topology topology/default.toml --crowds "$CROWDS" --crowd-size "$CROWD_SIZE" \
  --rate "$RATE" --spacing "$SPACING"
