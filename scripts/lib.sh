# shellcheck shell=bash
# Helper functions for scripts/stack.sh (sourced, not executed).

# ---- messages -------------------------------------------------------------------------------

log() { printf '%s\n' "$*" >&2; }

die() {
  printf 'stack.sh: error: %s\n' "$*" >&2
  exit 1
}

# Print the last lines of each existing file, for error messages.
tail_logs() { # FILE...
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    printf -- '---- last lines of %s ----\n' "$f" >&2
    tail -n 40 -- "$f" >&2 || true
  done
}

# ---- time -----------------------------------------------------------------------------------

# Microseconds since the epoch (bash 5 EPOCHREALTIME; the decimal separator follows the locale).
now_us() {
  local t=${EPOCHREALTIME/[.,]/}
  printf '%s' "$((10#$t))"
}

# Microseconds as seconds with one decimal: "3.2s".
fmt_us() { # MICROSECONDS
  printf '%d.%ds' "$(($1 / 1000000))" "$(($1 % 1000000 / 100000))"
}

# Seconds since a now_us value: "3.2s".
since() { # START_US
  fmt_us "$(($(now_us) - $1))"
}

# ---- probes ---------------------------------------------------------------------------------

# Does something accept TCP connections on HOST:PORT? (bash /dev/tcp, bounded by timeout)
port_open() { # HOST PORT
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# Send a ZooKeeper four-letter word and print the answer.
zk_4lw() { # HOST PORT WORD
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "%s" "$3" >&3 && cat <&3' _ "$1" "$2" "$3" 2>/dev/null
}

# ---- processes ------------------------------------------------------------------------------

# Print the pid recorded in PIDFILE if that process is alive and its command line contains
# MARKER (guards against pid reuse and zombies, whose cmdline is empty).
pid_of() { # PIDFILE MARKER
  local f=$1 marker=$2 pid cmd
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmd=$(tr '\0' ' ' 2>/dev/null </proc/"$pid"/cmdline) || return 1
  [[ $cmd == *"$marker"* ]] || return 1
  printf '%s' "$pid"
}

# Start a command in the background, detached from this script: its own session (setsid, so
# no SIGHUP/SIGINT from the caller's terminal or process group), stdin from /dev/null, output
# appended to LOGFILE, the lock fd 9 closed. setsid does not fork here (the background child
# is not a process-group leader), so $! is the server's own pid.
start_bg() { # LOGFILE PIDFILE CMD...
  local logf=$1 pidf=$2
  shift 2
  printf '\n==== %s starting: %s\n' "$(date '+%F %T')" "$*" >>"$logf"
  setsid nohup "$@" </dev/null >>"$logf" 2>&1 9>&- &
  printf '%s\n' "$!" >"$pidf"
}

# Poll CMD... until it succeeds (every 0.2 s), up to DEADLINE seconds. Fails early when the
# process in PIDFILE (matched by MARKER) is gone; PIDFILE may be "" for no such check.
wait_for() { # DEADLINE PIDFILE MARKER CMD...
  local deadline=$1 pidf=$2 marker=$3
  shift 3
  local end=$(($(now_us) + deadline * 1000000))
  while true; do
    if "$@"; then return 0; fi
    if [[ -n $pidf ]] && ! pid_of "$pidf" "$marker" >/dev/null; then
      WAIT_FAILURE="the process exited"
      return 1
    fi
    if (($(now_us) >= end)); then
      WAIT_FAILURE="not ready after ${deadline}s"
      return 1
    fi
    sleep 0.2
  done
}

# SIGTERM the given pids, wait up to DEADLINE seconds for them to exit, then SIGKILL the rest
# and wait up to 10 s more.
stop_pids() { # DEADLINE PID...
  local deadline=$1 pid killed=0 left
  shift
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local end=$(($(now_us) + deadline * 1000000))
  while true; do
    left=()
    for pid in "$@"; do
      # A zombie (state Z) has exited already; its parent reaps it.
      if [[ -e /proc/$pid ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
        left+=("$pid")
      fi
    done
    ((${#left[@]})) || return 0
    if (($(now_us) >= end)); then
      if ((killed)); then
        log "stack.sh: could not stop pids: ${left[*]}"
        return 1
      fi
      log "stack.sh: still running after ${deadline}s, sending SIGKILL to pids: ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      killed=1
      end=$(($(now_us) + 10 * 1000000))
    fi
    sleep 0.2
    set -- "${left[@]}"
  done
}

# ---- packages -------------------------------------------------------------------------------

pkg_installed() { # PACKAGE
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# apt-get install the given packages (update once per run), quietly: apt's and dpkg's output
# goes to $STACK_DIR/apt.log, shown (its end and path) only when the install fails. Service
# autostart is suppressed with a temporary policy-rc.d so packaged daemons (mariadb, redis)
# do not take our ports.
APT_UPDATED=0
apt_install() { # PACKAGE...
  (($#)) || return 0
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "need root (or sudo) to install: $*"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null || die "apt-get not found; install these yourself: $*"
  local apt_log=${STACK_DIR:-.stack}/apt.log
  mkdir -p "$(dirname "$apt_log")"
  log "stack.sh: installing: $* (log: $apt_log)"
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    made_policy=1
  fi
  local rc=0
  if ((APT_UPDATED == 0)); then
    "${sudo[@]}" apt-get update -qq >>"$apt_log" 2>&1 || rc=$?
    APT_UPDATED=1
  fi
  if ((rc == 0)); then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      >>"$apt_log" 2>&1 || rc=$?
  fi
  if ((made_policy)); then "${sudo[@]}" rm -f "$policy"; fi
  if ((rc != 0)); then
    tail_logs "$apt_log"
    die "apt-get install failed (exit $rc) for: $* (log: $apt_log)"
  fi
}

# Debian packages the workspace's build needs besides Rust, a C compiler and make: zstd-sys
# and librdkafka link the system libzstd (found with pkg-config) instead of compiling zstd,
# and librdkafka the system OpenSSL for Kafka over TLS and SASL.
BUILD_PACKAGES=(pkg-config libzstd-dev libssl-dev)

# Installs the missing BUILD_PACKAGES (quietly, as apt_install does).
ensure_build_packages() {
  local p missing=()
  for p in "${BUILD_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  apt_install "${missing[@]}"
}
