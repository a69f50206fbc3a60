#!/usr/bin/env bash
# Benchmark of `hotctl dashboard` against the targets of issue 19, for this build and, in
# the same run, a baseline build (BASELINE_BIN, e.g. a hotctl built from main):
#
#   concurrency  60 concurrent /api/tasks and /api/cache: answers 200, and the peak of the
#                process's ZooKeeper and Kafka connections (ss -tnp) and threads
#                (target: all 200, <= 2 ZooKeeper, <= 6 Kafka, <= 96 threads)
#   streams      STREAMS open SSE streams: /api/hot's time and the process's RSS
#                (target: 300 streams, /api/hot within 1 s, RSS under 256 MB)
#   history      ROWS history rows (7 days of snapshots of 100 keys): /api/top and the CSV
#                over all time (target: each within 5 s, or 400)
#   locked       hot_history locked by a second session (LOCK TABLES … WRITE): /hot's time,
#                then SIGTERM to exit (target: /hot within 5 s, exit within 15 s)
#
# Each figure prints one summary line per build: `<figure> <build>: …`.
#
#   scripts/bench-dashboard.sh
#   BASELINE_BIN=/tmp/hotctl-main ROWS=200000 scripts/bench-dashboard.sh
#
# Needs the local stack (scripts/stack.sh up; its .stack/env is read). History goes to the
# database hotkeys_bench_dashboard, the baseline's to hotkeys_bench_dashboard_baseline
# (created; the rows of this run are deleted at the end).
# Environment: HOTCTL_BIN (default target/release/hotctl), BASELINE_BIN (default: none),
# PUBLISH_BIN (default: examples/publish_hot beside HOTCTL_BIN), ROWS (1000000),
# STREAMS (300), NO_BUILD=1 (use the existing binaries).
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
if [[ -f .stack/env ]]; then
  # shellcheck disable=SC1091
  . .stack/env
fi

BIN=${HOTCTL_BIN:-target/release/hotctl}
BASELINE=${BASELINE_BIN:-}
ROWS=${ROWS:-1000000}
STREAMS=${STREAMS:-300}
PUBLISH=${PUBLISH_BIN:-$(dirname "$BIN")/examples/publish_hot}
DB=hotkeys_bench_dashboard
NAME="bench-dashboard-$$"

MYSQL_URL=${HOTKEYS_MYSQL_URL:-mysql://hotkeys@127.0.0.1:3306/hotkeys}
hp=${MYSQL_URL#*@}
hp=${hp%%/*}
MHOST=${hp%:*}
MPORT=${hp##*:}
MUSER=${MYSQL_URL#*://}
MUSER=${MUSER%%@*}
MUSER=${MUSER%%:*}
sql() { MYSQL_PWD=${HOTKEYS_MYSQL_PASSWORD:-} mariadb --no-defaults -h"$MHOST" -P"$MPORT" -u"$MUSER" -N "$@"; }
ZK_PORT_OF=${HOTKEYS_ZOOKEEPER_CONNECT:-127.0.0.1:2181}
ZK_PORT_OF=${ZK_PORT_OF##*:}
KAFKA_PORT_OF=${HOTKEYS_KAFKA_BROKERS:-127.0.0.1:9092}
KAFKA_PORT_OF=${KAFKA_PORT_OF%%,*}
KAFKA_PORT_OF=${KAFKA_PORT_OF##*:}

if ! sql -e "CREATE DATABASE IF NOT EXISTS $DB CHARACTER SET utf8mb4"; then
  echo "bench-dashboard: MySQL unreachable; start the stack: scripts/stack.sh up" >&2
  exit 3
fi
if [[ ${NO_BUILD:-0} != 1 ]]; then
  cargo build --release --locked -p hotctl >&2
  cargo build --release --locked -p prewarm --example publish_hot >&2
fi

WORK=$(mktemp -d)
DASH_PID=
LOCKER_ID=
HISTORY_DB=
clear_history() {
  if [[ -n $HISTORY_DB ]]; then
    sql "$HISTORY_DB" -e "DELETE FROM hot_history WHERE topology = '$NAME'" >/dev/null 2>&1 || true
  fi
}
cleanup() {
  stop_dashboard
  if [[ -n $LOCKER_ID ]]; then sql -e "KILL $LOCKER_ID" >/dev/null 2>&1 || true; fi
  clear_history
  rm -rf "$WORK"
}
trap cleanup EXIT

# The topology: the stack's, under a name of this run; its history database is set per build.
export HOTKEYS_NAME=$NAME
TOPOLOGY=topology/default.toml

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# `CODE in SECONDSs` of a GET, or that nothing answered within MAX seconds.
timed_get() { # URL MAX [OUTPUT]
  local out
  out=$(curl -s -o "${3:-/dev/null}" -m "$2" -w '%{http_code} %{time_total}' "$1" || true)
  case $out in
    200* | 4* | 5*) awk -v c="${out% *}" -v t="${out#* }" 'BEGIN { printf "%s in %.3fs", c, t }' ;;
    *) printf 'no answer within %ss' "$2" ;;
  esac
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_dashboard() { # BIN RECORD
  PORT=$(free_port)
  RUST_LOG=warn "$1" --topology "$TOPOLOGY" dashboard --listen "127.0.0.1:$PORT" --record "$2" \
    >/dev/null 2>"$WORK/dashboard.log" &
  DASH_PID=$!
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/recorder" && return 0
    sleep 0.1
  done
  echo "bench-dashboard: $1 did not start:" >&2
  cat "$WORK/dashboard.log" >&2
  exit 1
}

stop_dashboard() {
  if [[ -n $DASH_PID ]]; then
    kill -KILL "$DASH_PID" 2>/dev/null || true
    wait "$DASH_PID" 2>/dev/null || true
    DASH_PID=
  fi
}

# Connections of the dashboard to PORT now.
conns() { # PORT
  ss -tnpH state established "dport = :$1" 2>/dev/null | grep -c "pid=$DASH_PID," || true
}
threads() { awk '/^Threads:/ { print $2 }' "/proc/$DASH_PID/status"; }
rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$DASH_PID/status"; }

bench_concurrency() { # LABEL
  local base="http://127.0.0.1:$PORT" peak_zk=0 peak_kafka=0 peak_threads=0 z k t
  rm -f "$WORK/stop"
  (
    while [[ ! -e $WORK/stop ]]; do
      printf '%s %s %s\n' "$(conns "$ZK_PORT_OF")" "$(conns "$KAFKA_PORT_OF")" "$(threads)"
      sleep 0.02
    done
  ) >"$WORK/samples" &
  local sampler=$!
  for i in $(seq 60); do
    if ((i % 2)); then echo "$base/api/tasks"; else echo "$base/api/cache"; fi
  done | xargs -P 60 -n 1 curl -s -o /dev/null -m 60 -w '%{http_code}\n' >"$WORK/codes" || true
  touch "$WORK/stop"
  wait "$sampler" || true
  while read -r z k t; do
    ((z > peak_zk)) && peak_zk=$z
    ((k > peak_kafka)) && peak_kafka=$k
    ((t > peak_threads)) && peak_threads=$t
  done <"$WORK/samples"
  echo "concurrency $1: 60 requests, $(grep -c '^200$' "$WORK/codes" || true) answered 200," \
    "peak $peak_zk ZooKeeper / $peak_kafka Kafka connections, $peak_threads threads"
}

bench_streams() { # LABEL
  python3 - "$STREAMS" "$PORT" >"$WORK/streams" <<'EOF' &
import socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n\r\n" % port)
    held.append(s)
ok = 0
for s in held:
    s.settimeout(10)
    try:
        ok += s.recv(4096).startswith(b"HTTP/1.1 200")
    except OSError:
        pass
print(ok, flush=True)
time.sleep(600)
EOF
  local holder=$! open=
  for _ in $(seq 600); do
    open=$(head -n1 "$WORK/streams" 2>/dev/null || true)
    [[ -n $open ]] && break
    sleep 0.1
  done
  echo "streams $1: ${open:-0} of $STREAMS SSE streams open," \
    "/api/hot $(timed_get "http://127.0.0.1:$PORT/api/hot" 30), RSS $(rss_mb) MB"
  kill "$holder" 2>/dev/null || true
  wait "$holder" 2>/dev/null || true
}

bench_history() { # LABEL
  local base="http://127.0.0.1:$PORT" top day csv
  top=$(timed_get "$base/api/top?from=0&n=20" 60)
  day=$(timed_get "$base/api/top?from=-24h&n=20" 60)
  : >"$WORK/history.csv"
  csv=$(timed_get "$base/api/history.csv?from=0" 60 "$WORK/history.csv")
  echo "history $1: $ROWS rows, /api/top over all time $top, over 24h $day," \
    "CSV over all time $csv ($(wc -l <"$WORK/history.csv") lines, last: $(tail -n1 "$WORK/history.csv" | cut -c1-20))"
}

bench_locked() { # LABEL BIN
  start_dashboard "$2" 1s
  sleep 3
  sql --unbuffered "$HISTORY_DB" -e "SELECT CONNECTION_ID(); LOCK TABLES hot_history WRITE; SELECT SLEEP(600);" \
    >"$WORK/locker" 2>/dev/null &
  local locker=$!
  for _ in $(seq 100); do
    LOCKER_ID=$(head -n1 "$WORK/locker" 2>/dev/null || true)
    [[ -n $LOCKER_ID ]] && break
    sleep 0.1
  done
  sleep 1
  local hot start exited="no exit within 20s"
  hot=$(timed_get "http://127.0.0.1:$PORT/hot" 20)
  start=$(now)
  kill -TERM "$DASH_PID"
  for _ in $(seq 200); do
    if ! kill -0 "$DASH_PID" 2>/dev/null; then
      exited="exit in $(secs "$start" "$(now)")s"
      break
    fi
    sleep 0.1
  done
  stop_dashboard
  sql -e "KILL $LOCKER_ID" >/dev/null 2>&1 || true
  LOCKER_ID=
  wait "$locker" 2>/dev/null || true
  echo "locked $1: /hot $hot, SIGTERM $exited"
}

# The history of a run: each build migrates a database of its own (a baseline cannot start
# on a database a newer build has migrated), then ROWS rows, one snapshot of 100 keys a
# minute back from now, are written to it.
prepare_history() { # BIN DATABASE
  sql -e "CREATE DATABASE IF NOT EXISTS $2 CHARACTER SET utf8mb4"
  export HOTKEYS_MYSQL_URL=${MYSQL_URL%/*}/$2
  HISTORY_DB=$2
  start_dashboard "$1" 0
  stop_dashboard
  sql "$2" -e "INSERT INTO hot_history (topology, counter, taken_at, \`key\`, count, error)
    SELECT '$NAME', 'hot', $(date +%s%3N) - (seq DIV 100) * 60000, CONCAT('k', seq MOD 100),
           1000 - seq MOD 100 + seq DIV 100, NULL FROM seq_0_to_$((ROWS - 1))"
}

run_all() { # LABEL BIN DATABASE
  prepare_history "$2" "$3"
  start_dashboard "$2" 0
  bench_concurrency "$1"
  bench_streams "$1"
  bench_history "$1"
  stop_dashboard
  bench_locked "$1" "$2"
}

echo "publishing hot lists; $ROWS history rows per build..." >&2
seq 1 2000 | RUST_LOG=warn $PUBLISH --topology "$TOPOLOGY" --tasks 6 --fresh >/dev/null

if [[ -n $BASELINE ]]; then
  run_all baseline "$BASELINE" "${DB}_baseline" >"$WORK/baseline.out"
  clear_history
  cat "$WORK/baseline.out" >&2
fi
run_all this "$BIN" "$DB" >"$WORK/this.out"
cat "$WORK/this.out" >&2
echo "== summary (this build, then baseline when given) =="
cat "$WORK/this.out"
if [[ -n $BASELINE ]]; then cat "$WORK/baseline.out"; fi
