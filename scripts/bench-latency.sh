#!/usr/bin/env bash
# Flash-crowd latency of one hot-counter worker and one `prewarm --watch`, both at the
# topology defaults.
#
# The worker runs on its own topic and topology name; the latency probe
# (crates/hotkeys/examples/latency_probe.rs) sends a steady background stream (RATE events/s
# over products 1..100,000) and CROWDS flash crowds of CROWD_SIZE events, each on a new
# product (100,001, 100,002, …), one every SPACING (at a random point of its slot). The
# catalogue in MySQL is seeded with every one of those products, and the crowds' cache keys
# are deleted first. For each crowd it prints the time from its first event sent to
#   (a) its key first in a hot list in ZooKeeper (the znode's modification time),
#   (b) the whole crowd counted in a hot list in ZooKeeper,
#   (c) a subscriber (hotkeys::subscribe) seeing the whole crowd in the hot set,
#   (d) its row in Redis, written by prewarm --watch,
# then one summary line per figure:
#   latency_zk_ms p50=… p99=… max=…
#   latency_subscriber_ms p50=… p99=… max=…
#   zk_write_bytes_per_s total=… per_task=…   (hot-counter's writes: hot lists, checkpoints)
#   zk_write_bytes_per_s_by_node per_task_hot=… per_task_checkpoint=…   (the same, split)
#   latency_zk_enter_ms p50=… p99=… max=…
#   latency_redis_ms p50=… p99=… max=…
#   zk_writes_per_s total=… per_task=… min_gap_ms=…   (min_gap_ms: one task's hot list)
#   zk_checkpoint_bytes mean=… every_s=… per_task_per_s=…   (a task's checkpoint bytes at
#                                           steady state: the mean checkpoint written while
#                                           measuring, once per count.checkpoint_every)
#
#   scripts/bench-latency.sh
#   CROWDS=10 RATE=5000 scripts/bench-latency.sh
#   WARMUP=330s scripts/bench-latency.sh   (a window of background first: the steady state,
#                                           where zk_write_bytes_per_s is compared)
#   BIN=/path/to/other/release scripts/bench-latency.sh   (another build's hot-counter and
#                                                          prewarm, e.g. a baseline)
#   TOPOLOGY=/path/to/its/default.toml BIN=…              (that build's own topology file)
#   NO_BUILD=1 …                                          (use the existing target/release)
#
# The topic and the ZooKeeper subtree are deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
CROWDS=${CROWDS:-20}
CROWD_SIZE=${CROWD_SIZE:-3000}
RATE=${RATE:-3000}
SPACING=${SPACING:-3s}
WARMUP=${WARMUP:-0s}
BACKGROUND_KEYS=100000

scripts/stack.sh up >/dev/null
# shellcheck source=/dev/null
. .stack/env
if [[ ${NO_BUILD:-0} != 1 ]]; then
  # One command per target kind: `--example` would otherwise limit every package to it.
  cargo build --release -q -p hotkeys --example latency_probe
  cargo build --release -q -p hotctl
  [[ -n ${BIN:-} ]] || cargo build --release -q -p hot-counter -p prewarm
fi
BIN=${BIN:-target/release}

run=bench-latency-$$-$(date +%s)
export HOTKEYS_NAME=$run HOTKEYS_KAFKA_TOPIC=$run HOTKEYS_KAFKA_GROUP=$run RUST_LOG=warn
PROBE=target/release/examples/latency_probe
topology=${TOPOLOGY:-topology/default.toml}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  $PROBE --topology $topology --cleanup || true
  scripts/stack.sh kafka-class org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$HOTKEYS_KAFKA_BROKERS" --delete --topic "$run" >/dev/null 2>&1 || true
}
trap cleanup EXIT

target/release/hotctl --topology $topology db migrate >/dev/null
target/release/hotctl --topology $topology db seed --products $((BACKGROUND_KEYS + CROWDS)) >/dev/null

$BIN/hot-counter --topology $topology &
pids+=($!)
$BIN/prewarm --topology $topology --watch >/dev/null &
pids+=($!)
$PROBE --topology $topology --crowds "$CROWDS" --crowd-size "$CROWD_SIZE" \
  --rate "$RATE" --spacing "$SPACING" --background-keys "$BACKGROUND_KEYS" --warmup "$WARMUP" --redis
