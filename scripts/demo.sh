#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: a cold cache warmed with exactly the rows
# that are hot right now.
#
#   stack up → migrate + seed 100,000 products → two hot-counter workers →
#   access-producer: 2M Zipf events with a flash crowd → every task publishes →
#   three prewarm processes in parallel → cache-sync replicates the warmed keys to the
#   remote data centre's Redis → what ZooKeeper and Redis now hold. A second counter over
#   the same events counts callers (x-real-ip) and blacklists the ones over its threshold.
#   Last, hotctl dashboard serves it all on http://127.0.0.1:8490/, a second wave makes
#   product 777 go viral while `prewarm --watch` runs (the demo prints how soon its row was
#   in Redis), and headless Chromium saves a screenshot of the hot-keys page under
#   .stack/demo/<run>/.
#
# Every run uses its own topic, consumer group and ZooKeeper subtree, so it can be run
# again; it empties the demo's cache keys (product:*) in both data centres first, as a cold
# start would find them. It stops the processes it started (the stack stays up:
# scripts/stack.sh down).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-2000000}
PRODUCTS=${PRODUCTS:-100000}

t0=$(date +%s.%N)
stage_start=$t0
stages=()
stage() {
  local now; now=$(date +%s.%N)
  stages+=("$(printf '%-34s %7.1f s' "$1" "$(echo "$now - $stage_start" | bc -l)")")
  stage_start=$now
}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# await_http URL PID LOG WHAT: waits until URL answers, or fails with LOG's tail when the
# process PID dies or 30 s pass.
await_http() {
  local deadline=$((SECONDS + 30))
  until curl -fsS "$1" >/dev/null 2>&1; do
    if ! kill -0 "$2" 2>/dev/null || ((SECONDS > deadline)); then
      echo "$4 is not answering on $1:" >&2; tail -n 20 "$3" >&2; exit 1
    fi
    sleep 0.2
  done
}

say "local stack (Kafka, ZooKeeper, MariaDB, Redis ×2)"
scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env
stage "stack up"

say "build (release)"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_build_packages
cargo build --release --locked -q -p access-producer -p hot-counter -p prewarm -p hotctl -p cache-sync
bin=target/release
stage "build"

run=demo-$(date +%Y%m%d-%H%M%S)
export HOTKEYS_NAME=$run HOTKEYS_KAFKA_TOPIC=$run-access HOTKEYS_KAFKA_GROUP=$run-counters
export HOTKEYS_COUNT_PUBLISH_EVERY=2s
logs=.stack/demo/$run
mkdir -p "$logs"
# The shipped topology plus a caller counter with a threshold rule.
topology=$logs/topology.toml
cat topology/default.toml - >"$topology" <<'EOF'

[[counter]]
name = "caller-ip"
key = "/headers/x-real-ip"
top_n = 200
threshold = 100000
action = "blacklist"
ban_for = "10m"
EOF
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

say "catalogue: migrate and seed $PRODUCTS products"
$bin/hotctl --topology $topology db migrate
RUST_LOG=warn $bin/hotctl --topology $topology db seed --products "$PRODUCTS"
stage "migrate + seed"

say "cold cache: removing product:* from Redis (local and remote data centre)"
redis_port=${REDIS_PORT:-6379}
remote_port=${REMOTE_REDIS_PORT:-6380}
for port in "$redis_port" "$remote_port"; do
  redis-cli -p "$port" --scan --pattern 'product:*' | xargs -r -n 1000 redis-cli -p "$port" DEL >/dev/null
done
stage "empty the cache"

say "two hot-counter workers (logs in $logs)"
for i in 1 2; do
  $bin/hot-counter --topology $topology >"$logs/hot-counter-$i.log" 2>&1 &
  pids+=($!)
done

say "access-producer: $EVENTS Zipf events from 5,000 callers, product 4242 flash crowd from event 1,000,000"
$bin/access-producer --topology $topology synthetic --events "$EVENTS" --keys "$PRODUCTS" \
  --zipf 1.0 --seed 42 --burst "4242@1000000:0.2" --callers 5000
stage "produce $EVENTS events"

say "waiting until every task has published all $EVENTS events"
deadline=$((SECONDS + 300))
until $bin/hotctl --topology $topology tasks --json 2>/dev/null | python3 -c '
import json, sys
tasks = json.load(sys.stdin)
sys.exit(0 if sum(t["events"] or 0 for t in tasks) >= int(sys.argv[1]) else 1)' "$EVENTS"; do
  if ((SECONDS > deadline)); then echo "tasks did not publish in time; see $logs" >&2; exit 1; fi
  sleep 1
done
stage "count + publish"

say "three prewarm processes in parallel"
ppids=()
for i in 1 2 3; do
  $bin/prewarm --topology $topology --once >"$logs/prewarm-$i.out" 2>"$logs/prewarm-$i.log" &
  ppids+=($!)
done
status=0
for pid in "${ppids[@]}"; do wait "$pid" || status=$?; done
for i in 1 2 3; do echo "-- prewarm $i"; cat "$logs/prewarm-$i.out"; done
[ "$status" -eq 0 ] || { echo "a prewarm process failed ($status); see $logs" >&2; exit "$status"; }
stage "prewarm (3 processes)"

say "replication: cache-sync receive (remote DC, Redis :$remote_port) and ship --until-empty"
replicated=$(cat "$logs"/prewarm-*.out | grep -o '[0-9]* replicated' | awk '{n += $1} END {print n + 0}')
listen=127.0.0.1:8480 # sync.listen of $topology
if (exec 3<>"/dev/tcp/${listen%:*}/${listen#*:}") 2>/dev/null; then
  echo "something already listens on $listen; stop it first" >&2; exit 1
fi
HOTKEYS_SYNC_APPLY_NODES=redis://127.0.0.1:$remote_port \
  $bin/cache-sync --topology $topology receive >"$logs/cache-sync-receive.log" 2>&1 &
receiver=$!
pids+=($receiver)
await_http "http://$listen/healthz" "$receiver" "$logs/cache-sync-receive.log" "cache-sync receive"
echo "receiver listening on $listen; queued: $($bin/cache-sync --topology $topology status --json | python3 -c '
import json, sys; print(json.load(sys.stdin)["length"])') operations (prewarm replicated $replicated)"
timeout 300 $bin/cache-sync --topology $topology ship --until-empty 2>"$logs/cache-sync-ship.log" ||
  { echo "cache-sync ship failed; see $logs/cache-sync-ship.log" >&2; exit 1; }
$bin/cache-sync --topology $topology status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["length"] == 0 and s["in_flight"] is None else "queue not drained: %s" % s)'
$bin/cache-sync --topology $topology status
scan() { redis-cli -p "$1" --scan --pattern 'product:*' | sort; }
local_keys=$(scan "$redis_port" | wc -l)
remote_keys=$(scan "$remote_port" | wc -l)
missing=$(comm -23 <(scan "$redis_port") <(scan "$remote_port") | wc -l)
echo "remote DC holds $remote_keys product:* keys (local DC: $local_keys; missing on the remote: $missing)"
hot=product:$($bin/hotctl --topology $topology hot --top 1 --json | python3 -c '
import json, sys; print(json.load(sys.stdin)[0]["key"])')
local_value=$(redis-cli -p "$redis_port" GET "$hot")
remote_value=$(redis-cli -p "$remote_port" GET "$hot")
printf '%s local  (ttl %ss) = %s\n' "$hot" "$(redis-cli -p "$redis_port" TTL "$hot")" "${local_value:0:100}"
printf '%s remote (ttl %ss) = %s\n' "$hot" "$(redis-cli -p "$remote_port" TTL "$hot")" "${remote_value:0:100}"
if [ "$missing" -ne 0 ] || [ -z "$local_value" ] || [ "$local_value" != "$remote_value" ]; then
  echo "the remote DC does not hold the warmed keys; see $logs" >&2; exit 1
fi
echo "$hot: identical in both data centres"
stage "replicate to the remote DC"

say "hotctl tasks"
$bin/hotctl --topology $topology tasks
say "the merged hot list"
$bin/hotctl --topology $topology hot --top 10
say "callers over 100,000 requests in the window, blacklisted by the caller-ip counter"
deadline=$((SECONDS + 60))
until [ "$($bin/hotctl --topology $topology blacklist caller-ip --json | python3 -c '
import json, sys; print(len(json.load(sys.stdin)))')" -gt 0 ]; do
  if ((SECONDS > deadline)); then echo "no caller was blacklisted; see $logs" >&2; exit 1; fi
  sleep 0.5
done
$bin/hotctl --topology $topology hot --counter caller-ip --top 4
$bin/hotctl --topology $topology blacklist
echo "applications check a caller with: redis-cli ZSCORE hotkeys:$run:blacklist:caller-ip <ip> (banned while > now in ms)"

say "a few warmed values in Redis"
for key in $($bin/hotctl --topology $topology hot --top 3 --json | python3 -c '
import json, sys
print(" ".join(i["key"] for i in json.load(sys.stdin)))'); do
  printf 'product:%s (ttl %ss) = %s\n' "$key" "$(redis-cli -p "$redis_port" TTL "product:$key")" \
    "$(redis-cli -p "$redis_port" GET "product:$key" | cut -c1-160)"
done
echo "warmed keys in Redis: $(redis-cli -p "$redis_port" --scan --pattern 'product:*' | wc -l)"

say "dashboard: web UI, JSON API and SSE stream (hotctl dashboard)"
dashboard_addr=127.0.0.1:${DASHBOARD_PORT:-8490}
if (exec 3<>"/dev/tcp/${dashboard_addr%:*}/${dashboard_addr#*:}") 2>/dev/null; then
  echo "something already listens on $dashboard_addr; stop it or set DASHBOARD_PORT" >&2; exit 1
fi
$bin/hotctl --topology $topology dashboard --listen "$dashboard_addr" --record 2s >"$logs/dashboard.log" 2>&1 &
dashboard=$!
pids+=($dashboard)
await_http "http://$dashboard_addr/api/recorder" "$dashboard" "$logs/dashboard.log" "the dashboard"
echo "dashboard: http://$dashboard_addr/ (logs: $logs/dashboard.log)"
echo "  curl 'http://$dashboard_addr/api/hot?top=3'"
curl -fsS "http://$dashboard_addr/api/hot?top=3" | python3 -c '
import json, sys
print("  " + ", ".join("%s: %d" % (i["key"], i["count"]) for i in json.load(sys.stdin)["items"]))'
stage "dashboard"

say "flash crowd: product 777 goes viral while prewarm --watch runs"
# prewarm --watch warms a task as soon as it publishes a new hot-list version; a worker
# publishes at once when a key enters its top N.
$bin/prewarm --topology $topology --watch >"$logs/prewarm-watch.out" 2>"$logs/prewarm-watch.log" &
pids+=($!)
sleep 2 # its first pass over every task
if $bin/hotctl --topology $topology hot --json | python3 -c '
import json, sys; sys.exit(0 if any(i["key"] == "777" for i in json.load(sys.stdin)) else 1)'; then
  echo "note: product 777 is hot already; its row comes back with the next publish of its task"
fi
redis-cli -p "$redis_port" DEL product:777 >/dev/null
wave_start=$(date +%s%3N)
(
  until [ "$(redis-cli -p "$redis_port" EXISTS product:777)" = 1 ]; do sleep 0.01; done
  echo $(($(date +%s%3N) - wave_start)) >"$logs/777-in-redis-ms"
) &
warm_wait=$!
# The dashboard records the second wave: product 777 goes viral, the rest rises a little.
echo "a second wave of 150,000 events at 25,000/s: product 777 goes viral; the dashboard records every 2s"
RUST_LOG=warn $bin/access-producer --topology $topology synthetic --events 150000 --keys "$PRODUCTS" \
  --zipf 1.0 --seed 7 --burst "777@0:0.4" --callers 5000 --rate 25000 >"$logs/second-wave.log" 2>&1
if ! timeout 30 tail --pid="$warm_wait" -f /dev/null; then
  kill "$warm_wait" 2>/dev/null || true
  echo "product 777's row did not reach Redis; see $logs/prewarm-watch.log" >&2; exit 1
fi
echo "product:777 was in Redis $(cat "$logs/777-in-redis-ms") ms after the wave started (MySQL -> Redis by prewarm --watch)"
stage "flash crowd warmed"
deadline=$((SECONDS + 60))
until curl -fsS "http://$dashboard_addr/api/history?key=777&from=-5m" | python3 -c '
import json, sys
points = json.load(sys.stdin)["points"]
sys.exit(0 if len(points) >= 3 and points[-1][1] > 50000 else 1)'; do
  if ((SECONDS > deadline)); then echo "the dashboard recorded no history of 777; see $logs/dashboard.log" >&2; exit 1; fi
  sleep 0.5
done
if ! command -v chromium >/dev/null; then
  apt_install chromium fonts-liberation
fi
chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking \
  --no-first-run --hide-scrollbars --window-size=1200,900 --screenshot="$logs/dashboard-hot.png" \
  "http://$dashboard_addr/hot?top=12" >"$logs/chromium.log" 2>&1 ||
  { echo "chromium could not take the screenshot; see $logs/chromium.log" >&2; exit 1; }
echo "screenshot of the hot-keys page: $logs/dashboard-hot.png"
stage "history + screenshot"

say "time per stage"
printf '%s\n' "${stages[@]}"
printf '%-34s %7.1f s\n' "total" "$(echo "$(date +%s.%N) - $t0" | bc -l)"
if [ -t 0 ]; then
  read -r -p "The dashboard stays up at http://$dashboard_addr/ until you press Enter. "
fi
