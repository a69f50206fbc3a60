#!/usr/bin/env bash
# Local dependency stack on loopback, without Docker: Kafka (KRaft, from Maven Central jars),
# ZooKeeper, MariaDB and two Redis servers (6379 "local DC", 6380 "remote DC").
#
#   scripts/stack.sh up                  install what is missing, start everything, wait until ready
#   scripts/stack.sh down                stop what `up` started (data is kept under .stack/)
#   scripts/stack.sh status              one line per server; exit 3 if any is down
#   scripts/stack.sh start NAME...       start single servers  (kafka zookeeper mysql redis redis-remote)
#   scripts/stack.sh stop NAME...        stop single servers (only ones this script started)
#   scripts/stack.sh restart NAME...     stop then start
#   scripts/stack.sh topic NAME [PARTITIONS [TopicCommand options...]]
#                                        create a Kafka topic if it does not exist (default 1 partition)
#   scripts/stack.sh kafka-class CLASS [ARGS...]
#                                        run a Kafka CLI class from the stack's jars, e.g.
#                                        org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#   scripts/stack.sh env                 print the .stack/env file (`source .stack/env`)
#
# Everything downloaded or created lives under .stack/ at the repository root (STACK_DIR to
# override). Ports: KAFKA_PORT KAFKA_CONTROLLER_PORT ZK_PORT MYSQL_PORT REDIS_PORT
# REMOTE_REDIS_PORT. Waits: STACK_TIMEOUT (seconds per server), STOP_TIMEOUT.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"

STACK_DIR=${STACK_DIR:-$ROOT/.stack}
HOST=127.0.0.1
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
ZK_PORT=${ZK_PORT:-2181}
MYSQL_PORT=${MYSQL_PORT:-3306}
REDIS_PORT=${REDIS_PORT:-6379}
REMOTE_REDIS_PORT=${REMOTE_REDIS_PORT:-6380}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}

ALL_SERVERS=(zookeeper redis redis-remote mysql kafka)

KAFKA_DIR=$STACK_DIR/kafka
KAFKA_CLUSTER_ID=aG90a2V5cy1zdGFjay0wMQ # base64url("hotkeys-stack-01"); fixed so re-formatting is never needed
ZK_DIR=$STACK_DIR/zookeeper
MYSQL_DIR=$STACK_DIR/mariadb
MYSQL_SOCKET=$MYSQL_DIR/mysqld.sock
ZK_JARS=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar

# ---- per-server facts -----------------------------------------------------------------------

check_name() {
  case $1 in
    kafka | zookeeper | mysql | redis | redis-remote) ;;
    *) die "unknown server '$1' (expected: ${ALL_SERVERS[*]})" ;;
  esac
}

port_of() {
  case $1 in
    kafka) echo "$KAFKA_PORT" ;;
    zookeeper) echo "$ZK_PORT" ;;
    mysql) echo "$MYSQL_PORT" ;;
    redis) echo "$REDIS_PORT" ;;
    redis-remote) echo "$REMOTE_REDIS_PORT" ;;
  esac
}

dir_of() {
  case $1 in
    kafka) echo "$KAFKA_DIR" ;;
    zookeeper) echo "$ZK_DIR" ;;
    mysql) echo "$MYSQL_DIR" ;;
    redis | redis-remote) echo "$STACK_DIR/redis-$(port_of "$1")" ;;
  esac
}

# The pid file this script writes (and the only processes `stop`/`down` ever signal).
pidfile_of() { echo "$(dir_of "$1")/stack.pid"; }

# A string that is in the server's command line (the path of its own config or data).
marker_of() {
  case $1 in
    kafka) echo "$KAFKA_DIR/server.properties" ;;
    zookeeper) echo "$ZK_DIR/zoo.cfg" ;;
    mysql) echo "--datadir=$MYSQL_DIR/data" ;;
    redis | redis-remote) echo "$(dir_of "$1")/redis.conf" ;; # via proc-title-template
  esac
}

logs_of() {
  local d
  d=$(dir_of "$1")
  case $1 in
    kafka) echo "$d/stdout.log $d/server.log" ;;
    zookeeper) echo "$d/zookeeper.log" ;;
    mysql) echo "$d/error.log $d/mariadbd.log" ;;
    redis | redis-remote) echo "$d/redis.log" ;;
  esac
}

timeout_of() {
  if [[ -n ${STACK_TIMEOUT:-} ]]; then echo "$STACK_TIMEOUT"; return; fi
  case $1 in
    kafka) echo 120 ;;
    mysql) echo 90 ;;
    zookeeper) echo 60 ;;
    *) echo 30 ;;
  esac
}

our_pid() { pid_of "$(pidfile_of "$1")" "$(marker_of "$1")"; }

# ---- readiness --------------------------------------------------------------------------------

kafka_ready() {
  port_open "$HOST" "$KAFKA_PORT" || return 1
  local out
  out=$(timeout 10 kcat -b "$HOST:$KAFKA_PORT" -L -m 3 2>/dev/null) || return 1
  [[ $out == *"broker 1 at"* ]]
}

zookeeper_ready() {
  [[ $(zk_4lw "$HOST" "$ZK_PORT" ruok) == imok ]]
}

# A MariaDB/MySQL server answers (even if our user does not exist yet): root over our own
# unix socket, or any answer over TCP including "access denied"/"host not allowed" errors.
mysql_alive() {
  if [[ -S $MYSQL_SOCKET ]] &&
    timeout 5 mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" -uroot ping >/dev/null 2>&1; then
    return 0
  fi
  local out
  out=$(timeout 5 mariadb-admin --no-defaults --connect-timeout=2 -h"$HOST" -P"$MYSQL_PORT" ping 2>&1) && return 0
  [[ $out == *" 1045 "* || $out == *" 1130 "* || $out == *"Access denied"* || $out == *"is not allowed to connect"* ]]
}

# The hotkeys user can log in over TCP and use its database.
mysql_ready() {
  timeout 5 mariadb --no-defaults --connect-timeout=2 -h"$HOST" -P"$MYSQL_PORT" \
    -uhotkeys -photkeys -e 'select 1' hotkeys >/dev/null 2>&1
}

redis_ready_port() {
  [[ $(timeout 3 redis-cli -h "$HOST" -p "$1" ping 2>/dev/null) == PONG ]]
}

ready() {
  case $1 in
    kafka) kafka_ready ;;
    zookeeper) zookeeper_ready ;;
    mysql) mysql_ready ;;
    redis | redis-remote) redis_ready_port "$(port_of "$1")" ;;
  esac
}

# What `up` waits for before the post-start step.
started() {
  case $1 in
    mysql) mysql_alive ;;
    *) ready "$1" ;;
  esac
}

# ---- installation ---------------------------------------------------------------------------

java_ok() {
  command -v java >/dev/null || return 1
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [[ ${v%%.*} =~ ^[0-9]+$ ]] && ((${v%%.*} >= 17))
}

ensure_installed() { # SERVER...
  local s missing=() pkgs=()
  for s in "$@"; do
    case $s in
      kafka) pkgs+=(kcat) ;;
      zookeeper) pkgs+=(zookeeper libslf4j-java) ;;
      mysql) pkgs+=(mariadb-server mariadb-client) ;;
      # redis-sentinel: the Sentinel-mode tests start their own sentinels with it.
      redis | redis-remote) pkgs+=(redis-server redis-tools redis-sentinel) ;;
    esac
  done
  local p seen=" "
  for p in "${pkgs[@]}"; do
    [[ $seen == *" $p "* ]] && continue
    seen+="$p "
    pkg_installed "$p" || missing+=("$p")
  done
  if [[ " $* " == *" kafka "* ]] && ! java_ok; then missing+=(openjdk-17-jre-headless); fi
  apt_install "${missing[@]}"
  if [[ " $* " == *" kafka "* ]]; then
    java_ok || die "Kafka needs Java 17 or newer on PATH (java -version: $(java -version 2>&1 | head -n1))"
  fi
}

# Kafka's runtime jars, resolved from Maven Central into .stack/kafka/libs (again only when
# scripts/kafka-pom.xml changes). Maven's local repository is .stack/m2.
kafka_libs() {
  local pom=$SCRIPT_DIR/kafka-pom.xml want
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  if [[ -f $KAFKA_DIR/libs/.pom-sha256 && $(<"$KAFKA_DIR/libs/.pom-sha256") == "$want" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || apt_install maven
  local t0
  t0=$(now_us)
  log "stack.sh: resolving Kafka jars from Maven Central ($pom)"
  mkdir -p "$KAFKA_DIR"
  rm -rf "$KAFKA_DIR/libs.tmp"
  if ! mvn -q -B -f "$pom" -Dmaven.repo.local="${MAVEN_REPO_LOCAL:-$STACK_DIR/m2}" \
    dependency:copy-dependencies -DoutputDirectory="$KAFKA_DIR/libs.tmp" >"$KAFKA_DIR/mvn.log" 2>&1; then
    tail_logs "$KAFKA_DIR/mvn.log"
    die "mvn could not resolve the Kafka jars (log: $KAFKA_DIR/mvn.log)"
  fi
  ls "$KAFKA_DIR/libs.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "mvn finished but no kafka_2.13 jar in $KAFKA_DIR/libs.tmp"
  printf '%s\n' "$want" >"$KAFKA_DIR/libs.tmp/.pom-sha256"
  rm -rf "$KAFKA_DIR/libs"
  mv "$KAFKA_DIR/libs.tmp" "$KAFKA_DIR/libs"
  log "stack.sh: Kafka jars ready ($(ls "$KAFKA_DIR/libs" | wc -l) jars, $(since "$t0"))"
}

# ---- configuration and launch ---------------------------------------------------------------

kafka_write_config() {
  mkdir -p "$KAFKA_DIR/data"
  cat >"$KAFKA_DIR/server.properties.tmp" <<EOF
# Written by scripts/stack.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.retention.bytes=1073741824
log.segment.bytes=67108864
log.retention.check.interval.ms=60000
EOF
  mv "$KAFKA_DIR/server.properties.tmp" "$KAFKA_DIR/server.properties"

  local pattern='[%d] %p %m (%c)%n'
  cat >"$KAFKA_DIR/log4j2.properties" <<EOF
# Written by scripts/stack.sh. Broker log: $KAFKA_DIR/server.log
status = warn
name = kafka-stack
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $KAFKA_DIR/server.log
appender.file.filePattern = $KAFKA_DIR/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = $pattern
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF
  # For CLI tools (topic, kafka-class): warnings to stderr only.
  cat >"$KAFKA_DIR/tools-log4j2.properties" <<EOF
status = warn
name = kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = $pattern
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

kafka_launch() {
  kafka_write_config
  if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
    # Static controller.quorum.voters, so no --standalone.
    if ! java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" -cp "$KAFKA_DIR/libs/*" \
      kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" -c "$KAFKA_DIR/server.properties" \
      >"$KAFKA_DIR/format.log" 2>&1 9>&-; then
      tail_logs "$KAFKA_DIR/format.log"
      die "kafka: formatting the storage in $KAFKA_DIR/data failed"
    fi
  fi
  start_bg "$KAFKA_DIR/stdout.log" "$(pidfile_of kafka)" \
    java -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Dkafka.logs.dir="$KAFKA_DIR" \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_DIR/libs/*" kafka.Kafka "$KAFKA_DIR/server.properties"
}

zookeeper_launch() {
  mkdir -p "$ZK_DIR/data"
  cat >"$ZK_DIR/zoo.cfg" <<EOF
# Written by scripts/stack.sh; rewritten on every start.
# tickTime 500 ms: sessions may be as short as minSessionTimeout (tests expire 2 s sessions).
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=60000
initLimit=10
syncLimit=5
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=$HOST
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
  # Debian's zookeeper.jar lists its dependencies (netty, jetty, slf4j-api, ...) in its
  # manifest Class-Path; slf4j-simple is the logging backend (stderr -> zookeeper.log).
  start_bg "$ZK_DIR/zookeeper.log" "$(pidfile_of zookeeper)" \
    java -Xmx256m -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dzookeeper.admin.enableServer=false -Dzookeeper.jmx.log4j.disable=true \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
    '-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS' \
    -cp "$ZK_JARS" org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_DIR/zoo.cfg"
}

mysql_launch() {
  local data=$MYSQL_DIR/data
  mkdir -p "$MYSQL_DIR"
  if [[ ! -f $MYSQL_DIR/.installed ]]; then
    # A previous install that did not finish leaves no marker: start over.
    rm -rf "$data"
    mkdir -p "$data"
    if ! mariadb-install-db --no-defaults --datadir="$data" --user=root \
      --auth-root-authentication-method=socket --skip-test-db \
      >"$MYSQL_DIR/install-db.log" 2>&1 9>&-; then
      tail_logs "$MYSQL_DIR/install-db.log"
      die "mysql: mariadb-install-db failed (log: $MYSQL_DIR/install-db.log)"
    fi
    touch "$MYSQL_DIR/.installed"
  fi
  rm -f "$MYSQL_SOCKET"
  # --no-defaults: ignore /etc/mysql (its datadir, socket and bind-address).
  start_bg "$MYSQL_DIR/mariadbd.log" "$(pidfile_of mysql)" \
    mariadbd --no-defaults --datadir="$data" --socket="$MYSQL_SOCKET" \
    --port="$MYSQL_PORT" --bind-address="$HOST" --pid-file="$MYSQL_DIR/mariadbd.pid" \
    --user=root --log-error="$MYSQL_DIR/error.log" --skip-name-resolve \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    --max-connections=500 --innodb-buffer-pool-size=128M --innodb-log-file-size=48M \
    --innodb-flush-log-at-trx-commit=2 --tmpdir="$MYSQL_DIR"
}

MYSQL_SETUP_SQL="
CREATE DATABASE IF NOT EXISTS hotkeys CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'hotkeys'@'%' IDENTIFIED BY 'hotkeys';
CREATE USER IF NOT EXISTS 'hotkeys'@'localhost' IDENTIFIED BY 'hotkeys';
CREATE USER IF NOT EXISTS 'hotkeys'@'127.0.0.1' IDENTIFIED BY 'hotkeys';
GRANT ALL PRIVILEGES ON hotkeys.* TO 'hotkeys'@'%', 'hotkeys'@'localhost', 'hotkeys'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`hotkeys\\_%\`.* TO 'hotkeys'@'%', 'hotkeys'@'localhost', 'hotkeys'@'127.0.0.1';
"

# Create the database and user as root over a unix socket (root has socket auth on Debian).
mysql_setup() {
  mysql_ready && return 0
  local sock err=""
  for sock in "$MYSQL_SOCKET" /run/mysqld/mysqld.sock; do
    [[ -S $sock ]] || continue
    if err=$(timeout 20 mariadb --no-defaults --socket="$sock" -uroot -e "$MYSQL_SETUP_SQL" 2>&1); then
      mysql_ready && return 0
    fi
  done
  die "mysql: something answers on $HOST:$MYSQL_PORT but user hotkeys/hotkeys cannot use database hotkeys,
and root over a unix socket could not create them${err:+ ($err)}. Run as a MariaDB admin:
$MYSQL_SETUP_SQL"
}

redis_launch() { # NAME
  local d port
  d=$(dir_of "$1")
  port=$(port_of "$1")
  mkdir -p "$d"
  cat >"$d/redis.conf" <<EOF
# Written by scripts/stack.sh; rewritten on every start.
port $port
bind $HOST
protected-mode yes
dir $d
daemonize no
logfile ""
save ""
appendonly yes
appendfsync everysec
proc-title-template "{title} {listen-addr} {config-file}"
EOF
  start_bg "$d/redis.log" "$(pidfile_of "$1")" redis-server "$d/redis.conf"
}

launch() {
  case $1 in
    kafka) kafka_launch ;;
    zookeeper) zookeeper_launch ;;
    mysql) mysql_launch ;;
    redis | redis-remote) redis_launch "$1" ;;
  esac
}

post_start() {
  case $1 in
    mysql) mysql_setup ;;
  esac
}

# ---- verbs ----------------------------------------------------------------------------------

take_lock() {
  mkdir -p "$STACK_DIR"
  exec 9>"$STACK_DIR/.lock"
  flock -w 600 9 || die "another stack.sh holds $STACK_DIR/.lock"
}

write_env() {
  {
    echo "# Written by scripts/stack.sh; source it: . .stack/env"
    local kv
    for kv in "STACK_DIR=$STACK_DIR" \
      "KAFKA_PORT=$KAFKA_PORT" "KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT" "ZK_PORT=$ZK_PORT" \
      "MYSQL_PORT=$MYSQL_PORT" "REDIS_PORT=$REDIS_PORT" "REMOTE_REDIS_PORT=$REMOTE_REDIS_PORT" \
      "HOTKEYS_KAFKA_BROKERS=$HOST:$KAFKA_PORT" \
      "HOTKEYS_ZOOKEEPER_CONNECT=$HOST:$ZK_PORT" \
      "HOTKEYS_MYSQL_URL=mysql://hotkeys@$HOST:$MYSQL_PORT/hotkeys" \
      "HOTKEYS_MYSQL_PASSWORD=hotkeys" \
      "HOTKEYS_REDIS_NODES=redis://$HOST:$REDIS_PORT" \
      "REMOTE_REDIS_URL=redis://$HOST:$REMOTE_REDIS_PORT" \
      "HOTKEYS_SYNC_SECRET=dev-secret-change-me"; do
      printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
  } >"$STACK_DIR/env.tmp"
  mv "$STACK_DIR/env.tmp" "$STACK_DIR/env"
}

line() { # NAME STATE DETAIL
  printf '%-13s %-5s %-21s %s\n' "$1" "$2" "$HOST:$(port_of "$1")" "$3"
}

cmd_start() { # SERVER...
  local s
  for s in "$@"; do check_name "$s"; done
  take_lock
  ensure_installed "$@"
  if [[ " $* " == *" kafka "* ]]; then kafka_libs; fi

  # Launch everything first, then wait: the servers start in parallel.
  local -A t0 how
  local pid order=()
  # Launch the ones with slow preparation (storage format, install-db) first.
  for s in kafka mysql zookeeper redis redis-remote; do
    if [[ " $* " == *" $s "* ]]; then order+=("$s"); fi
  done
  for s in "${order[@]}"; do
    t0[$s]=$(now_us)
    if pid=$(our_pid "$s"); then
      how[$s]="running (pid $pid)"
    elif started "$s"; then
      how[$s]="external"
    elif port_open "$HOST" "$(port_of "$s")"; then
      die "$s: port $HOST:$(port_of "$s") is taken by something that does not answer like $s"
    else
      launch "$s"
      how[$s]="started"
    fi
  done

  # Wait for all of them at once, each with its own deadline.
  PENDING=()
  for s in "$@"; do [[ ${how[$s]} == external ]] || PENDING+=("$s"); done
  local -A failure=() took=()
  poll_pending() {
    local s still=()
    for s in "${PENDING[@]}"; do
      if started "$s"; then
        took[$s]=$(($(now_us) - ${t0[$s]}))
      elif ! our_pid "$s" >/dev/null; then
        failure[$s]="the process exited after $(since "${t0[$s]}")"
      elif (($(now_us) - ${t0[$s]} >= $(timeout_of "$s") * 1000000)); then
        failure[$s]="not ready after $(since "${t0[$s]}")"
      else
        still+=("$s")
      fi
    done
    PENDING=(${still[@]+"${still[@]}"})
    ((${#PENDING[@]} == 0))
  }
  wait_for 3600 "" "" poll_pending

  local failed=0
  for s in "$@"; do
    if [[ -n ${failure[$s]:-} ]]; then
      line "$s" FAIL "${failure[$s]}" >&2
      # shellcheck disable=SC2046
      tail_logs $(logs_of "$s")
      failed=1
      continue
    fi
    local p0
    p0=$(now_us)
    post_start "$s"
    # Time from launch (or first check) until ready, plus the post-start step.
    local t=$((${took[$s]:-0} + $(now_us) - p0))
    if [[ ${how[$s]} == started ]]; then
      pid=$(our_pid "$s" || true)
      line "$s" up "started in $(fmt_us "$t") (pid $pid)"
    else
      line "$s" up "${how[$s]}, checked in $(fmt_us "$t")"
    fi
  done
  write_env
  ((failed == 0)) || die "some servers did not start; logs are under $STACK_DIR"
}

cmd_stop() { # SERVER...
  local s pid pids=() names=() external=()
  for s in "$@"; do check_name "$s"; done
  take_lock
  for s in "$@"; do
    if pid=$(our_pid "$s"); then
      pids+=("$pid")
      names+=("$s")
    else
      rm -f "$(pidfile_of "$s")"
      if ready "$s"; then external+=("$s"); fi
    fi
  done
  local t0
  t0=$(now_us)
  stop_pids "$STOP_TIMEOUT" "${pids[@]}" || die "could not stop: ${names[*]}"
  for s in "$@"; do
    if [[ " ${names[*]} " == *" $s "* ]]; then
      rm -f "$(pidfile_of "$s")"
      line "$s" down "stopped in $(since "$t0")"
    elif [[ " ${external[*]} " == *" $s "* ]]; then
      line "$s" up "not started by stack.sh; left running"
    else
      line "$s" down "was not running"
    fi
  done
  if ((${#external[@]})) && [[ ${STACK_STOP_MODE:-} != down ]]; then
    die "cannot stop ${external[*]}: not started by stack.sh (no pid file of ours)"
  fi
}

cmd_status() {
  local s pid any_down=0
  for s in "${ALL_SERVERS[@]}"; do
    if ready "$s"; then
      if pid=$(our_pid "$s"); then line "$s" up "pid $pid"; else line "$s" up "external"; fi
    elif pid=$(our_pid "$s"); then
      line "$s" down "pid $pid is running but not answering"
      any_down=1
    else
      line "$s" down ""
      any_down=1
    fi
  done
  ((any_down == 0)) || exit 3
}

kafka_class() { # CLASS ARGS...
  [[ -f $KAFKA_DIR/libs/.pom-sha256 ]] || die "no Kafka jars yet: run scripts/stack.sh up"
  [[ -f $KAFKA_DIR/tools-log4j2.properties ]] || kafka_write_config
  java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
    -cp "$KAFKA_DIR/libs/*" "$@"
}

cmd_topic() { # NAME [PARTITIONS [OPTIONS...]]
  (($# >= 1)) || die "usage: stack.sh topic NAME [PARTITIONS [TopicCommand options...]]"
  local name=$1 partitions=${2:-1}
  shift $(($# >= 2 ? 2 : 1))
  [[ $partitions =~ ^[1-9][0-9]*$ ]] || die "PARTITIONS must be a positive integer, got '$partitions'"
  kafka_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" \
    --create --if-not-exists --topic "$name" --partitions "$partitions" --replication-factor 1 "$@"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

main() {
  local verb=${1:-}
  (($#)) && shift
  case $verb in
    up) (($# == 0)) || die "usage: stack.sh up"; cmd_start "${ALL_SERVERS[@]}" ;;
    down)
      (($# == 0)) || die "usage: stack.sh down"
      STACK_STOP_MODE=down cmd_stop kafka zookeeper mysql redis redis-remote
      ;;
    status) cmd_status ;;
    start) (($#)) || die "usage: stack.sh start NAME... (${ALL_SERVERS[*]})"; cmd_start "$@" ;;
    stop) (($#)) || die "usage: stack.sh stop NAME... (${ALL_SERVERS[*]})"; cmd_stop "$@" ;;
    restart)
      (($#)) || die "usage: stack.sh restart NAME... (${ALL_SERVERS[*]})"
      (cmd_stop "$@")
      cmd_start "$@"
      ;;
    topic) cmd_topic "$@" ;;
    kafka-class) (($#)) || die "usage: stack.sh kafka-class CLASS [ARGS...]"; kafka_class "$@" ;;
    env) [[ -f $STACK_DIR/env ]] || die "no $STACK_DIR/env yet: run scripts/stack.sh up"; cat "$STACK_DIR/env" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
