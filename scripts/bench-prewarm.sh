#!/usr/bin/env bash
# Benchmark of prewarm: HOT hot products (default 100,000) of a seeded catalogue, spread
# over TASKS hot lists, warmed into an empty Redis by
#   1. one `prewarm --once` process,
#   2. four `prewarm --once` processes started together (they share the tasks through locks),
#   3. the shell pipeline  mariadb --batch -e "SELECT … JSON_OBJECT(…)" | awk (RESP) | redis-cli --pipe
#      for the same rows (SET key value EX ttl NX, like prewarm),
#   4. the bare SELECT of the same rows to /dev/null: what the database alone can deliver.
# Prints rows/s of each (median of RUNS runs) and the ratios to the shell pipeline and to
# the bare SELECT. Target: one prewarm process at >= 1.0x the shell pipeline.
#
#   scripts/bench-prewarm.sh                 # 100,000 hot products over 20 tasks
#   HOT=50000 TASKS=10 RUNS=5 scripts/bench-prewarm.sh
#
# Needs the local stack (scripts/stack.sh up). Seeds CATALOGUE products (default 1,000,000,
# seed 1) into the configured database if it has fewer. Writes to Redis database BENCH_DB
# (default 8) and empties it before every run and at the end: keep nothing else there.
# Uses the ZooKeeper subtree of topology `bench-prewarm`, which it recreates each run.
# Environment: HOT, TASKS, RUNS, CATALOGUE, SEED, BENCH_DB, CONCURRENCY (per process, 4),
# NO_BUILD=1 (use the existing target/release binaries), BIN (a directory holding another build's
# prewarm, hotctl and examples/publish_hot, e.g. a release build of main; implies NO_BUILD).
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
if [[ -f .stack/env ]]; then
  # shellcheck disable=SC1091
  . .stack/env
fi

HOT=${HOT:-100000}
TASKS=${TASKS:-20}
RUNS=${RUNS:-3}
CATALOGUE=${CATALOGUE:-1000000}
SEED=${SEED:-1}
DB=${BENCH_DB:-8}
CONCURRENCY=${CONCURRENCY:-4}
TTL=3600
MYSQL_URL=${HOTKEYS_MYSQL_URL:-mysql://hotkeys@127.0.0.1:3306/hotkeys}
REDIS_URL=${HOTKEYS_REDIS_NODES:-redis://127.0.0.1:6379}
REDIS_URL=${REDIS_URL%%,*}
REDIS_URL=${REDIS_URL%/}

((HOT <= CATALOGUE)) || { echo "bench-prewarm: HOT ($HOT) exceeds CATALOGUE ($CATALOGUE)" >&2; exit 2; }
((HOT / TASKS <= 5000)) || { echo "bench-prewarm: more than 5000 keys per task; raise TASKS" >&2; exit 2; }

# mysql://user[:password]@host:port/database; HOTKEYS_MYSQL_PASSWORD (mysql.password_env)
# wins over a password in the URL, as it does for the binaries.
url=${MYSQL_URL#*://}
userinfo=${url%%@*}; url=${url#*@}
MY_USER=${userinfo%%:*}
MY_PASS=${HOTKEYS_MYSQL_PASSWORD:-}
if [[ -z $MY_PASS && $userinfo == *:* ]]; then MY_PASS=${userinfo#*:}; fi
MY_HOST=${url%%:*}; url=${url#*:}
MY_PORT=${url%%/*}; MY_DB=${url#*/}; MY_DB=${MY_DB%%\?*}
# The password goes through the environment, never the command line (visible in ps).
sql() { MYSQL_PWD=$MY_PASS mariadb --no-defaults -h "$MY_HOST" -P "$MY_PORT" -u "$MY_USER" "$MY_DB" "$@"; }

hp=${REDIS_URL#*://}; hp=${hp%%/*}
R_HOST=${hp%:*}; R_PORT=${hp##*:}
rcli() { redis-cli -h "$R_HOST" -p "$R_PORT" -n "$DB" "$@"; }

[[ $(rcli PING 2>/dev/null) == PONG ]] || { echo "bench-prewarm: Redis unreachable; scripts/stack.sh up" >&2; exit 3; }
sql -e 'SELECT 1' >/dev/null || { echo "bench-prewarm: MySQL unreachable; scripts/stack.sh up" >&2; exit 3; }

if [[ ${NO_BUILD:-0} != 1 && -z ${BIN:-} ]]; then
  cargo build --release -p prewarm -p hotctl --bins --examples >&2
fi
BIN=${BIN:-target/release}
PREWARM=$BIN/prewarm
PUBLISH=$BIN/examples/publish_hot
HOTCTL=$BIN/hotctl

WORK=$(mktemp -d)
cleanup() {
  rcli FLUSHDB >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now_ns() { date +%s%N; }

# ---- catalogue and hot set ----------------------------------------------------------------
have=$(sql -N -e "SELECT COUNT(*) FROM products WHERE id BETWEEN 1 AND $CATALOGUE" 2>/dev/null || echo 0)
if ((have < CATALOGUE)); then
  echo "seeding $CATALOGUE products (seed $SEED)..." >&2
  t0=$(now_ns)
  RUST_LOG=warn $HOTCTL db seed --products "$CATALOGUE" --seed "$SEED" >&2
  echo "seeded in $(((($(now_ns) - t0) / 1000000)))ms" >&2
fi
# A fixed random sample, the same in every run.
shuf -i "1-$CATALOGUE" -n "$HOT" --random-source=<(yes bench-prewarm) >"$WORK/ids"
ids=$(paste -sd, "$WORK/ids")
COLUMNS_SQL="id, shop_id, name, price, stock, attributes, updated_at"
printf 'SELECT %s FROM products WHERE id IN (%s);\n' "$COLUMNS_SQL" "$ids" >"$WORK/bare.sql"
printf "SELECT CONCAT('product:', id), JSON_OBJECT('id', id, 'shop_id', shop_id, 'name', name, \
'price', price, 'stock', stock, 'attributes', JSON_EXTRACT(attributes, '\$'), \
'updated_at', DATE_FORMAT(updated_at, '%%Y-%%m-%%dT%%H:%%i:%%s.%%fZ')) FROM products WHERE id IN (%s);\n" \
  "$ids" >"$WORK/shell.sql"

cat >"$WORK/topology.toml" <<EOF
name = "bench-prewarm"
[redis]
nodes = ["$REDIS_URL/$DB"]
key = "product:{key}"
ttl = "${TTL}s"
[sync]
replicate = []
EOF
# The file names the Redis database; the stack's override would point elsewhere.
unset HOTKEYS_REDIS_NODES

publish() { RUST_LOG=warn $PUBLISH --topology "$WORK/topology.toml" --tasks "$TASKS" --fresh <"$WORK/ids" 2>/dev/null; }
count_keys() { rcli DBSIZE; }

# ---- the contenders ------------------------------------------------------------------------
run_prewarm() { # PROCESSES
  local n=$1 pids=() i
  for ((i = 0; i < n; i++)); do
    RUST_LOG=warn $PREWARM --topology "$WORK/topology.toml" --once --concurrency "$CONCURRENCY" \
      >"$WORK/prewarm.$i.out" 2>"$WORK/prewarm.$i.err" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { cat "$WORK/prewarm.$i.err" >&2; echo "bench-prewarm: prewarm failed" >&2; exit 1; }
  done
}

run_shell() {
  sql --batch -N --raw <"$WORK/shell.sql" |
    awk -F '\t' -v ttl="$TTL" '{
      printf "*6\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$%d\r\n%s\r\n$2\r\nNX\r\n",
        length($1), $1, length($2), $2, length(ttl), ttl
    }' |
    rcli --pipe >"$WORK/pipe.out"
}

run_bare() { sql --batch -N --raw <"$WORK/bare.sql" >/dev/null; }

# Runs one contender once on an empty Redis and a fresh set of hot lists; prints rows/s.
measure() { # NAME
  rcli FLUSHDB >/dev/null
  publish
  local t0 t1 rows
  t0=$(now_ns)
  case $1 in
    prewarm1) run_prewarm 1 ;;
    prewarm4) run_prewarm 4 ;;
    shell) run_shell ;;
    bare) run_bare ;;
  esac
  t1=$(now_ns)
  if [[ $1 != bare ]]; then
    rows=$(count_keys)
    ((rows == HOT)) || { echo "bench-prewarm: $1 left $rows keys, expected $HOT" >&2; exit 1; }
  fi
  awk -v n="$HOT" -v ns="$((t1 - t0))" 'BEGIN { printf "%.0f %.3f\n", n / (ns / 1e9), ns / 1e9 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A RATE SECS
for name in bare shell prewarm1 prewarm4; do
  : >"$WORK/$name.rates"
  for ((r = 1; r <= RUNS; r++)); do
    measure "$name" >"$WORK/measured"
    read -r rate secs <"$WORK/measured"
    echo "$rate $secs" >>"$WORK/$name.rates"
    echo "  $name run $r: $rate rows/s (${secs}s)" >&2
  done
  RATE[$name]=$(cut -d' ' -f1 "$WORK/$name.rates" | median)
done

label() {
  case $1 in
    prewarm1) echo "prewarm, 1 process" ;;
    prewarm4) echo "prewarm, 4 processes" ;;
    shell) echo "mariadb | awk | redis-cli --pipe" ;;
    bare) echo "bare SELECT > /dev/null" ;;
  esac
}

echo
echo "$HOT hot products over $TASKS tasks, catalogue $CATALOGUE, median of $RUNS runs, $(nproc) cores"
printf '%-34s %12s %10s %14s\n' "" "rows/s" "vs shell" "vs bare SELECT"
for name in prewarm1 prewarm4 shell bare; do
  awk -v l="$(label "$name")" -v r="${RATE[$name]}" -v s="${RATE[shell]}" -v b="${RATE[bare]}" \
    'BEGIN { printf "%-34s %12.0f %9.2fx %13.2fx\n", l, r, r / s, r / b }'
done
