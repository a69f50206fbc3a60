#!/usr/bin/env bash
# Publishing throughput: `access-producer replay` against `kcat -P`, same file, same broker,
# same run.
#
#   scripts/bench-produce.sh
#
# Writes a synthetic file once (`access-producer synthetic --seed --write`), then publishes it
# ROUNDS times with each tool, alternating which goes first, each to a fresh topic created
# beforehand with the same partition count. A rate is events / wall-clock seconds of the whole
# command, start-up and final flush included. Prints every round, the medians and the ratio
# access-producer / kcat (target: >= 1.0).
#
# The tools do not do the same work: access-producer validates every line as JSON, extracts
# its product id, keys the message by it (murmur2) and uses the topology's producer tuning
# (lz4, linger, idempotence); kcat sends the lines as they are, unkeyed, with librdkafka's
# defaults, as `kcat -P` is normally run. Each round also prints the CPU seconds each tool
# used, which is what decides the race when the machine's cores are busy. KCAT_OPTS adds kcat
# flags, e.g. KCAT_OPTS="-X linger.ms=20 -X compression.type=lz4" for a tuned baseline.
#
# Environment: EVENTS (1000000), ROUNDS (3), SEED (42), TOPOLOGY (topology/default.toml),
# HOTKEYS_KAFKA_BROKERS (from .stack/env, else 127.0.0.1:9092), HOTKEYS_KAFKA_PARTITIONS,
# KCAT_OPTS, BENCH_FILE (reuse this input instead of generating one), NO_BUILD=1 (use the
# existing release binary), KEEP_TOPICS=1 (do not delete the benchmark topics at the end).
# Exit: 0 measured; 1 a tool failed or a topic holds the wrong count; 3 Kafka unreachable.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [[ -z ${HOTKEYS_KAFKA_BROKERS:-} && -f .stack/env ]]; then
  # shellcheck source=/dev/null
  . .stack/env
fi
BROKERS=${HOTKEYS_KAFKA_BROKERS:-127.0.0.1:9092}
EVENTS=${EVENTS:-1000000}
ROUNDS=${ROUNDS:-3}
SEED=${SEED:-42}
TOPOLOGY=${TOPOLOGY:-topology/default.toml}
KCAT_OPTS=${KCAT_OPTS:-}
BIN=$ROOT/target/release/access-producer

log() { printf '%s\n' "$*" >&2; }
die() { # CODE MESSAGE
  printf 'bench-produce: %s\n' "$2" >&2
  exit "$1"
}

command -v kcat >/dev/null || die 1 "kcat is not installed (apt-get install kcat)"
[[ $EVENTS =~ ^[1-9][0-9]*$ && $ROUNDS =~ ^[1-9][0-9]*$ ]] || die 1 "EVENTS and ROUNDS must be positive integers"
kcat -b "$BROKERS" -L -m 10 >/dev/null 2>&1 || die 3 "Kafka at $BROKERS is unreachable (scripts/stack.sh up)"

if [[ ${NO_BUILD:-} != 1 ]]; then
  log "building access-producer (release)…"
  cargo build -q -p access-producer --release
fi
[[ -x $BIN ]] || die 1 "no binary at $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-produce.XXXXXX")
STAMP=$(date +%s)
PREFIX="bench-produce-$STAMP"
cleanup() {
  rm -rf -- "$WORK"
  if [[ ${KEEP_TOPICS:-} != 1 && -f .stack/kafka/libs/.pom-sha256 ]]; then
    # Each round leaves up to a few hundred MB in the broker; TopicCommand takes a regex.
    scripts/stack.sh kafka-class org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
      --delete --topic "$PREFIX-.*" >/dev/null 2>&1 || log "could not delete topics $PREFIX-*"
  fi
}
trap cleanup EXIT

producer() { "$BIN" --topology "$TOPOLOGY" --brokers "$BROKERS" "$@"; }

INPUT=${BENCH_FILE:-$WORK/events.jsonl}
if [[ -z ${BENCH_FILE:-} ]]; then
  log "writing $EVENTS synthetic events (seed $SEED)…"
  producer --quiet synthetic --events "$EVENTS" --seed "$SEED" --write "$INPUT"
fi
LINES=$(wc -l <"$INPUT")
log "input: $INPUT, $LINES lines, $(($(stat -c %s "$INPUT") / 1048576)) MiB"
# Both tools start with the file in the page cache.
cat -- "$INPUT" >/dev/null

now_us() { local t=${EPOCHREALTIME/[.,]/}; printf '%s' "$((10#$t))"; }

# Messages in TOPIC: the sum of the end offsets of its partitions.
topic_count() { # TOPIC PARTITIONS
  local args=() p
  for ((p = 0; p < $2; p++)); do args+=(-t "$1:$p:-1"); done
  kcat -b "$BROKERS" -Q "${args[@]}" | awk '{ n += $NF } END { print n + 0 }'
}

# Creates TOPIC with the topology's partitions (publishing nothing) and prints its count.
make_topic() { # TOPIC
  producer --quiet --topic "$1" replay /dev/null 2>/dev/null
  kcat -b "$BROKERS" -L -t "$1" -J | grep -o '"partition":' | wc -l
}

# Publishes the input with TOOL to a fresh topic; prints "events/s cpu-seconds", the CPU
# being the tool's own (user + system), when /usr/bin/time is there to measure it.
publish() { # TOOL ROUND
  local topic="$PREFIX-$1-$2" partitions start end count cpu=- timer=()
  partitions=$(make_topic "$topic")
  [[ -x /usr/bin/time ]] && timer=(/usr/bin/time -f '%U %S' -o "$WORK/cpu")
  start=$(now_us)
  case $1 in
    access-producer) "${timer[@]}" "$BIN" --topology "$TOPOLOGY" --brokers "$BROKERS" --quiet \
      --topic "$topic" replay "$INPUT" ;;
    # shellcheck disable=SC2086 # KCAT_OPTS is a list of flags
    kcat) "${timer[@]}" kcat -P -b "$BROKERS" -t "$topic" $KCAT_OPTS -l "$INPUT" ;;
  esac || die 1 "$1 failed in round $2"
  end=$(now_us)
  [[ -s $WORK/cpu ]] && cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$WORK/cpu")
  count=$(topic_count "$topic" "$partitions")
  ((count == LINES)) || die 1 "$1 round $2: topic $topic holds $count messages, expected $LINES"
  awk -v n="$LINES" -v us="$((end - start))" -v cpu="$cpu" 'BEGIN { printf "%.0f %s\n", n / (us / 1e6), cpu }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

ap_rates=() kcat_rates=()
for ((round = 1; round <= ROUNDS; round++)); do
  if ((round % 2)); then order=(access-producer kcat); else order=(kcat access-producer); fi
  for tool in "${order[@]}"; do
    read -r rate cpu < <(publish "$tool" "$round") || die 1 "$tool failed in round $round"
    if [[ $tool == kcat ]]; then kcat_rates+=("$rate"); else ap_rates+=("$rate"); fi
    printf 'round %d  %-16s %9d events/s  (%s s CPU)\n' "$round" "$tool" "$rate" "$cpu"
  done
done

ap=$(printf '%s\n' "${ap_rates[@]}" | median)
kc=$(printf '%s\n' "${kcat_rates[@]}" | median)
printf '\n%s events (%s), %d rounds, median events/s:\n' "$LINES" "$(basename -- "$INPUT")" "$ROUNDS"
printf '  access-producer replay  %9.0f\n' "$ap"
printf '  %-23s %9.0f\n' "kcat -P${KCAT_OPTS:+ $KCAT_OPTS}" "$kc"
awk -v a="$ap" -v k="$kc" 'BEGIN { printf "  ratio                   %9.2f  (target >= 1.0)\n", a / k }'
