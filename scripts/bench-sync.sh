#!/usr/bin/env bash
# Benchmark of the replication path: N small sets moved end to end by cache-sync (from the
# queue on the local Redis, through `ship` and `receive`, to applied on the remote Redis),
# beside the same N sets written straight to the remote Redis with `redis-cli --pipe` in the
# same run. Prints both rates and their ratio (target: >= 0.5). With BASELINE_BIN, another
# cache-sync binary (e.g. a build of main) moves the same operations in the same run, before
# this one, and two last lines compare the two rates.
#
#   scripts/bench-sync.sh            # 1,000,000 ops
#   OPS=200000 scripts/bench-sync.sh
#   BASELINE_BIN=/tmp/cache-sync-main scripts/bench-sync.sh
#
# Needs the local stack (scripts/stack.sh up) or Redis servers at HOTKEYS_REDIS_NODES (first
# node) and REMOTE_REDIS_URL. It uses database BENCH_DB (default 9) on both servers and
# empties that database before and after: keep nothing else there.
# Environment: OPS, BENCH_DB, BENCH_PORT (receiver port; default: a free one),
# BENCH_IN_FLIGHT (sync.in_flight; default: the topology default),
# NO_BUILD=1 (use the existing binary), CACHE_SYNC_BIN (default target/release/cache-sync),
# BASELINE_BIN (a second binary measured in the same run).
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
if [[ -f .stack/env ]]; then
  # shellcheck disable=SC1091
  . .stack/env
fi

OPS=${OPS:-1000000}
DB=${BENCH_DB:-9}
LOCAL_URL=${HOTKEYS_REDIS_NODES:-redis://127.0.0.1:6379}
LOCAL_URL=${LOCAL_URL%%,*}
REMOTE_URL=${REMOTE_REDIS_URL:-redis://127.0.0.1:6380}
BIN=${CACHE_SYNC_BIN:-target/release/cache-sync}

# host and port of a redis:// URL (no credentials in the stack's URLs).
host_of() { local hp=${1#*://}; hp=${hp%%/*}; echo "${hp%:*}"; }
port_of() { local hp=${1#*://}; hp=${hp%%/*}; echo "${hp##*:}"; }
LHOST=$(host_of "$LOCAL_URL"); LPORT=$(port_of "$LOCAL_URL")
RHOST=$(host_of "$REMOTE_URL"); RPORT=$(port_of "$REMOTE_URL")
local_cli() { redis-cli -h "$LHOST" -p "$LPORT" -n "$DB" "$@"; }
remote_cli() { redis-cli -h "$RHOST" -p "$RPORT" -n "$DB" "$@"; }

for cli in local_cli remote_cli; do
  if [[ $($cli PING 2>/dev/null) != PONG ]]; then
    echo "bench-sync: Redis unreachable ($cli); start the stack: scripts/stack.sh up" >&2
    exit 3
  fi
done

if [[ ${NO_BUILD:-0} != 1 ]]; then
  cargo build --release -p cache-sync >&2
fi

WORK=$(mktemp -d)
RECEIVER_PID=
cleanup() {
  if [[ -n $RECEIVER_PID ]]; then
    kill "$RECEIVER_PID" 2>/dev/null || true
    wait "$RECEIVER_PID" 2>/dev/null || true
  fi
  local_cli FLUSHDB >/dev/null 2>&1 || true
  remote_cli FLUSHDB >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=${BENCH_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
QUEUE="bench:FIFO:$$"
SECRET=bench-secret
now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }

# The operations: SET bench:<i> {"id":<i>,"v":"small-value"} with a one-hour TTL.
echo "generating $OPS operations..." >&2
awk -v n="$OPS" 'BEGIN {
  for (i = 1; i <= n; i++) {
    k = "bench:" i; v = "{\"id\":" i ",\"v\":\"small-value\"}"
    printf "*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$4\r\n3600\r\n", length(k), k, length(v), v
  }
}' >"$WORK/direct.resp"
AT_MS=$(date +%s%3N)
awk -v n="$OPS" -v q="$QUEUE" -v at="$AT_MS" 'BEGIN {
  per = 500
  for (i = 1; i <= n; i += per) {
    m = (i + per - 1 <= n) ? per : n - i + 1
    printf "*%d\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n", m + 2, length(q), q
    for (j = i; j < i + m; j++) {
      op = "{\"op\":\"set\",\"key\":\"bench:" j "\",\"value\":\"{\\\"id\\\":" j ",\\\"v\\\":\\\"small-value\\\"}\",\"ttl_ms\":3600000,\"at_ms\":" at "}"
      printf "$%d\r\n%s\r\n", length(op), op
    }
  }
}' >"$WORK/queue.resp"

local_cli FLUSHDB >/dev/null
remote_cli FLUSHDB >/dev/null

# 1. Straight to the remote Redis.
t0=$(now)
remote_cli --pipe <"$WORK/direct.resp" >"$WORK/pipe.log"
t1=$(now)
direct_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
direct_keys=$(remote_cli DBSIZE)
if [[ $direct_keys != "$OPS" ]]; then
  echo "bench-sync: redis-cli --pipe stored $direct_keys keys, expected $OPS" >&2
  cat "$WORK/pipe.log" >&2
  exit 1
fi
remote_cli FLUSHDB >/dev/null

# 2. Through the queue, ship and receive, with the binary $1: sets sync_s and enqueue_s.
measure_sync() {
  local bin=$1 t0 t1 queued stream applied_ops sync_keys
  local_cli FLUSHDB >/dev/null
  remote_cli FLUSHDB >/dev/null
  t0=$(now)
  local_cli --pipe <"$WORK/queue.resp" >"$WORK/enqueue.log"
  t1=$(now)
  enqueue_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  queued=$(local_cli LLEN "$QUEUE")
  [[ $queued == "$OPS" ]] || { echo "bench-sync: queued $queued, expected $OPS" >&2; exit 1; }

  cat >"$WORK/topology.toml" <<EOF
[redis]
nodes = ["redis://$LHOST:$LPORT/$DB"]
[sync]
queue = "$QUEUE"
remote = "http://127.0.0.1:$PORT/sync"
listen = "127.0.0.1:$PORT"
apply_nodes = ["redis://$RHOST:$RPORT/$DB"]
${BENCH_IN_FLIGHT:+in_flight = $BENCH_IN_FLIGHT}
EOF
  # A clean environment: the stack's HOTKEYS_* overrides must not redirect the benchmark.
  # exec: $! must be the receiver itself, so that the trap stops it and nothing else.
  (exec env -i PATH="$PATH" HOTKEYS_SYNC_SECRET="$SECRET" RUST_LOG=warn "$bin" --topology "$WORK/topology.toml" receive >"$WORK/receive.log" 2>&1) &
  RECEIVER_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.05
  done

  local_cli CONFIG RESETSTAT >/dev/null
  remote_cli CONFIG RESETSTAT >/dev/null
  t0=$(now)
  env -i PATH="$PATH" HOTKEYS_SYNC_SECRET="$SECRET" RUST_LOG=warn "$bin" --topology "$WORK/topology.toml" ship --until-empty 2>"$WORK/ship.log"
  t1=$(now)
  if [[ ${BENCH_STATS:-0} == 1 ]]; then
    # Where the time went inside the servers: calls, total and per-call microseconds.
    for cli in local_cli remote_cli; do
      echo "$cli:" >&2
      $cli INFO commandstats | grep -E '^cmdstat_(evalsha|eval|set|hget|hset|hmget|ping|select|client)' >&2 || true
    done
  fi
  sync_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  kill "$RECEIVER_PID" 2>/dev/null || true
  wait "$RECEIVER_PID" 2>/dev/null || true
  RECEIVER_PID=

  stream=$(local_cli HGET "{$QUEUE}:meta" stream)
  applied_ops=$(remote_cli HGET "cache-sync:stream:$stream" applied_ops)
  sync_keys=$(remote_cli DBSIZE)
  # The stream record is one key of the database too.
  if [[ $applied_ops != "$OPS" || $sync_keys != $((OPS + 1)) ]]; then
    echo "bench-sync: $bin applied $applied_ops ops, $sync_keys keys on the remote; expected $OPS" >&2
    cat "$WORK/ship.log" "$WORK/receive.log" >&2
    exit 1
  fi
}

if [[ -n ${BASELINE_BIN:-} ]]; then
  measure_sync "$BASELINE_BIN"
  baseline_s=$sync_s
fi
measure_sync "$BIN"

direct_rate=$(rate "$OPS" "$direct_s")
sync_rate=$(rate "$OPS" "$sync_s")
ratio=$(awk -v s="$sync_rate" -v d="$direct_rate" 'BEGIN { printf "%.2f", s / d }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.5) ? "met" : "NOT met" }')
printf '%-44s %12s ops/s  (%.2f s)\n' "redis-cli --pipe straight to $RHOST:$RPORT" "$direct_rate" "$direct_s"
printf '%-44s %12s ops/s  (%.2f s)\n' "cache-sync queue -> ship -> receive -> $RHOST:$RPORT" "$sync_rate" "$sync_s"
printf '%-44s %12s ops/s  (%.2f s, not part of the ratio)\n' "enqueue (redis-cli --pipe RPUSH to the queue)" "$(rate "$OPS" "$enqueue_s")" "$enqueue_s"
printf 'ratio cache-sync / direct: %s (target >= 0.5: %s), %d ops\n' "$ratio" "$verdict" "$OPS"
if [[ -n ${BASELINE_BIN:-} ]]; then
  baseline_rate=$(rate "$OPS" "$baseline_s")
  printf '%-44s %12s ops/s  (%.2f s)\n' "baseline $BASELINE_BIN" "$baseline_rate" "$baseline_s"
  printf 'ratio cache-sync / baseline: %s, %d ops\n' "$(awk -v s="$sync_rate" -v b="$baseline_rate" 'BEGIN { printf "%.2f", s / b }')" "$OPS"
fi
