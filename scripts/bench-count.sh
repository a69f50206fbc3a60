#!/usr/bin/env bash
# One hot-counter worker vs kcat reading the same pre-filled topic, in one run.
#
# For each key-space size (default 10^5, 10^6, 10^7 distinct products; 5M OpenResty events
# each) the topic is filled once by access-producer, then read to the end by
#   kcat -C -e -o beginning (to /dev/null)   and
#   hot-counter --until-caught-up            (counting every event, final publish included).
# Prints both rates, their ratio, and the worker's peak RSS, which must stay flat as the key
# space grows at fixed capacity. Every key space is read RUNS times (default 3), kcat and the
# worker back to back, so that each ratio compares two reads under the same load. Two
# summary lines follow the table:
#   ratio_vs_kcat median=… min=… max=… runs=…   (worker / plain kcat, every row)
#   peak_rss_mb max=… at_largest_key_space=…
# The topics and the workers' ZooKeeper subtrees are deleted as the script goes.
#
# kcat runs twice: as normally run (librdkafka's defaults), and tuned with the fetch-queue
# settings hot-counter uses (hotkeys::kafka::consumer_config), so the second ratio compares
# the consumers rather than their defaults. kcat's time is its whole run, start-up included;
# the worker's is from its first message to its last counted (its whole run is printed too).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-5000000}
KEY_SPACES=${KEY_SPACES:-"100000 1000000 10000000"}
RUNS=${RUNS:-3}
# BIN: a directory holding another build's hot-counter (and hotctl), e.g. a release build of
# main, to compare two trees under the same load; the topic is still filled by this tree's
# access-producer. Without it this tree's release build is used. NO_BUILD=1 uses the existing
# target/release binaries instead of building them.

scripts/stack.sh up >/dev/null
# shellcheck source=/dev/null
. .stack/env
command -v kcat >/dev/null || { apt-get update -qq && apt-get install -y -qq kcat >/dev/null; }
[[ ${NO_BUILD:-0} == 1 ]] || cargo build --release -q -p access-producer -p hot-counter -p hotctl
BIN=${BIN:-target/release}

run=bench-count-$$-$(date +%s)
# Debian's kcat links a librdkafka older than fetch.queue.backoff.ms (2.4), which idles a
# partition's fetcher for a fixed second whenever its queue is full: with our small queues
# this kcat waits most of the time (about 180k events/s), so ratio_t overstates the worker.
KCAT_TUNED=(-X queued.min.messages=20000 -X queued.max.messages.kbytes=8192
  -X fetch.message.max.bytes=1048576 -X fetch.wait.max.ms=100)
kcat_rate() { # TOPIC [kcat options…]: events/s of one full read
  local topic=$1 start end
  shift
  start=$(date +%s.%N)
  kcat -C -b "$HOTKEYS_KAFKA_BROKERS" -t "$topic" -e -o beginning -q "$@" >/dev/null
  end=$(date +%s.%N)
  echo "$EVENTS / ($end - $start)" | bc -l
}
trap 'scripts/stack.sh kafka-class org.apache.kafka.tools.TopicCommand \
  --bootstrap-server "$HOTKEYS_KAFKA_BROKERS" --delete --topic "$run-.*" >/dev/null 2>&1 || true' EXIT

printf '%-9s %10s %10s %10s %11s %6s %7s %9s\n' keys kcat kcat_tuned counter counter_run \
  ratio ratio_t peak_rss
ratios=() rss_largest=0 rss_max=0
for keys in $KEY_SPACES; do
  target/release/access-producer --quiet --topic "$run-$keys" synthetic \
    --events "$EVENTS" --keys "$keys" --seed 7
done
for ((r = 1; r <= RUNS; r++)); do
  for keys in $KEY_SPACES; do
    topic="$run-$keys"
    group="$topic-$r"
    kcat_plain=$(kcat_rate "$topic")
    kcat_tuned=$(kcat_rate "$topic" "${KCAT_TUNED[@]}")
    start=$(date +%s.%N)
    out=$(HOTKEYS_KAFKA_TOPIC="$topic" HOTKEYS_NAME="$group" HOTKEYS_KAFKA_GROUP="$group" \
      RUST_LOG=warn /usr/bin/time -f 'rss_kb=%M' "$BIN"/hot-counter --until-caught-up 2>&1)
    end=$(date +%s.%N)
    HOTKEYS_NAME="$group" "$BIN"/hotctl reset --yes >/dev/null
    counter_rate=$(sed -n 's/.*: \([0-9]*\) events\/s.*/\1/p' <<<"$out")
    rss_kb=$(sed -n 's/^rss_kb=//p' <<<"$out")
    ratio=$(echo "$counter_rate / $kcat_plain" | bc -l)
    ratios+=("$ratio")
    rss_max=$((rss_kb > rss_max ? rss_kb : rss_max))
    [[ $keys == "${KEY_SPACES##* }" ]] && rss_largest=$((rss_kb > rss_largest ? rss_kb : rss_largest))
    printf '%-9s %10.0f %10.0f %10.0f %11.0f %6.2f %7.2f %6d MB\n' "$keys" "$kcat_plain" \
      "$kcat_tuned" "$counter_rate" "$(echo "$EVENTS / ($end - $start)" | bc -l)" \
      "$ratio" "$(echo "$counter_rate / $kcat_tuned" | bc -l)" "$((rss_kb / 1024))"
  done
done
printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END {
  printf "ratio_vs_kcat median=%.2f min=%.2f max=%.2f runs=%d\n", v[int((NR + 1) / 2)], v[1], v[NR], NR }'
echo "peak_rss_mb max=$((rss_max / 1024)) at_largest_key_space=$((rss_largest / 1024))"
