#!/usr/bin/env bash
# Run a real, single-node Apache Kafka broker (KRaft, combined broker+controller)
# on 127.0.0.1 for logpipe's tests. No Docker: needs Java 17+, and Maven the
# first time only (jars come from Maven Central via scripts/kafka/pom.xml).
#
# Usage:
#   scripts/kafka.sh start        # fetch jars if needed, format storage once, start,
#                                 # wait until the broker answers; prints bootstrap=HOST:PORT
#                                 # (idempotent: instant if already running)
#   scripts/kafka.sh stop         # SIGTERM, wait up to 30 s, then SIGKILL (data is kept)
#   scripts/kafka.sh stop --wipe  # stop and delete the data dir (next start reformats)
#   scripts/kafka.sh wipe         # same as stop --wipe
#   scripts/kafka.sh status       # exit 0 + bootstrap=HOST:PORT if running, exit 3 if not
#   scripts/kafka.sh env          # LOGPIPE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:PORT, for: eval "$(scripts/kafka.sh env)"
#
# Environment (all optional):
#   LOGPIPE_SERVICES_KAFKA_PORT=19092             PLAINTEXT listener (client bootstrap)
#   LOGPIPE_SERVICES_KAFKA_CONTROLLER_PORT=19093  KRaft controller listener
#   LOGPIPE_SERVICES_KAFKA_PARTITIONS=3           num.partitions for auto-created topics
#   LOGPIPE_SERVICES_KAFKA_HEAP="-Xms256m -Xmx512m"
#   LOGPIPE_SERVICES_KAFKA_VERSION=4.1.1          org.apache.kafka:kafka_2.13 version
#   LOGPIPE_SERVICES_KAFKA_START_TIMEOUT=90       seconds to wait for the broker to answer
#   LOGPIPE_SERVICES_KAFKA_STOP_TIMEOUT=30        seconds to wait after SIGTERM before SIGKILL
#   LOGPIPE_SERVICES_DIR=<repo>/.services  state lives in $LOGPIPE_SERVICES_DIR/kafka
#                                          (server.properties, data/, kafka.log, kafka.pid)
#   LOGPIPE_CACHE_DIR=~/.cache/logpipe   jars cached in $LOGPIPE_CACHE_DIR/kafka-<version>/libs
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

HOST=127.0.0.1
PORT=${LOGPIPE_SERVICES_KAFKA_PORT:-19092}
CONTROLLER_PORT=${LOGPIPE_SERVICES_KAFKA_CONTROLLER_PORT:-19093}
PARTITIONS=${LOGPIPE_SERVICES_KAFKA_PARTITIONS:-3}
HEAP=${LOGPIPE_SERVICES_KAFKA_HEAP:--Xms256m -Xmx512m}
VERSION=${LOGPIPE_SERVICES_KAFKA_VERSION:-4.1.1}
START_TIMEOUT=${LOGPIPE_SERVICES_KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${LOGPIPE_SERVICES_KAFKA_STOP_TIMEOUT:-30}

STATE=${LOGPIPE_SERVICES_DIR:-$REPO/.services}/kafka
DATA=$STATE/data
LOG=$STATE/kafka.log
PIDFILE=$STATE/kafka.pid
PROPS=$STATE/server.properties
LOG4J=$STATE/log4j2.properties
CLUSTER_ID_FILE=$STATE/cluster.id
LIBS=${LOGPIPE_CACHE_DIR:-$HOME/.cache/logpipe}/kafka-$VERSION/libs
POM=$SCRIPT_DIR/kafka/pom.xml
BOOTSTRAP=$HOST:$PORT

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA=$JAVA_HOME/bin/java; else JAVA=java; fi

say() { echo "kafka.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# --- process / readiness checks --------------------------------------------

# Prints the broker's pid if the pid file names a live kafka.Kafka process of this state dir.
running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid=$(<"$PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: the process must be our broker.
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "kafka.Kafka $PROPS" || return 1
  fi
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Sends a Kafka ApiVersions request and checks the broker answers error_code 0.
api_versions_ok() {
  if ! command -v python3 >/dev/null 2>&1; then port_open "$PORT"; return; fi
  python3 - "$HOST" "$PORT" <<'PY' 2>/dev/null
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
client = b"logpipe-kafka-sh"
# header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id; empty body
req = struct.pack(">hhih", 18, 0, 7, len(client)) + client
with socket.create_connection((host, port), timeout=3) as s:
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(req)) + req)
    buf = b""
    while len(buf) < 10:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit(1)
        buf += chunk
corr, err = struct.unpack(">ih", buf[4:10])
sys.exit(0 if corr == 7 and err == 0 else 1)
PY
}

is_ready() {
  grep -q "Kafka Server started" "$LOG" 2>/dev/null && api_versions_ok
}

# --- setup -----------------------------------------------------------------

fetch_jars() {
  if [[ -f "$LIBS/.complete" ]]; then return 0; fi
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is needed once to fetch Kafka $VERSION jars into $LIBS"
  say "fetching Kafka $VERSION jars from Maven Central into $LIBS"
  local parent tmp
  parent=$(dirname "$LIBS")
  mkdir -p "$parent"
  tmp=$(mktemp -d "$parent/libs.tmp.XXXXXX")
  if ! mvn -q -B -Dstyle.color=never -f "$POM" -Dkafka.version="$VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >"$tmp.mvn.log" 2>&1; then
    cat "$tmp.mvn.log" >&2
    rm -rf "$tmp" "$tmp.mvn.log"
    die "mvn failed to fetch Kafka $VERSION"
  fi
  rm -f "$tmp.mvn.log"
  ls "$tmp"/kafka_2.13-"$VERSION".jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "kafka_2.13-$VERSION.jar missing after mvn"; }
  touch "$tmp/.complete"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

write_config() {
  mkdir -p "$DATA"
  cat >"$PROPS" <<EOF
# Generated by scripts/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA
num.partitions=$PARTITIONS
default.replication.factor=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$LOG4J" <<'EOF'
# Generated by scripts/kafka.sh: everything to stdout, which is $STATE/kafka.log.
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

format_storage() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  local cid
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cid=$(<"$CLUSTER_ID_FILE")
  else
    cid=$("$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    [[ -n "$cid" ]] || die "StorageTool random-uuid produced no cluster id"
    echo "$cid" >"$CLUSTER_ID_FILE"
  fi
  say "formatting $DATA (cluster id $cid)"
  "$JAVA" -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" kafka.tools.StorageTool \
    format -t "$cid" -c "$PROPS" --ignore-formatted >"$STATE/format.log" 2>&1 \
    || { cat "$STATE/format.log" >&2; die "storage format failed"; }
}

# --- subcommands -------------------------------------------------------------

with_lock() {
  mkdir -p "$STATE"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STATE/.lock"
    flock -w $((START_TIMEOUT + STOP_TIMEOUT + 600)) 9 || die "could not lock $STATE/.lock"
  fi
}

cmd_start() {
  with_lock
  local pid
  if pid=$(running_pid); then
    if is_ready; then
      say "already running (pid $pid)"
      echo "bootstrap=$BOOTSTRAP"
      return 0
    fi
    say "pid $pid is up but not answering yet; waiting"
  else
    rm -f "$PIDFILE"
    if port_open "$PORT"; then die "port $PORT is already in use by another process (not $STATE)"; fi
    if port_open "$CONTROLLER_PORT"; then die "controller port $CONTROLLER_PORT is already in use by another process"; fi
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found (need Java 17+)"
    fetch_jars
    write_config
    format_storage
    [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
    # shellcheck disable=SC2086  # HEAP is a list of JVM flags
    nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
      "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$STATE" \
      -cp "$LIBS/*" kafka.Kafka "$PROPS" \
      </dev/null >"$LOG" 2>&1 9>&- &
    local i
    for i in $(seq 100); do [[ -s "$PIDFILE" ]] && break; sleep 0.1; done
    [[ -s "$PIDFILE" ]] || die "broker did not start; see $LOG"
    pid=$(<"$PIDFILE")
    say "started pid $pid, waiting for $BOOTSTRAP (up to ${START_TIMEOUT}s)"
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! running_pid >/dev/null; then
      say "broker exited during startup; last lines of $LOG:"
      tail -n 60 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if is_ready; then
      echo "bootstrap=$BOOTSTRAP"
      return 0
    fi
    sleep 0.5
  done
  say "timed out after ${START_TIMEOUT}s waiting for $BOOTSTRAP; last lines of $LOG:"
  tail -n 60 "$LOG" >&2 || true
  exit 1
}

cmd_stop() {
  local wipe=0
  case "${1:-}" in
    --wipe) wipe=1 ;;
    "") ;;
    *) die "unknown option for stop: $1" ;;
  esac
  with_lock
  local pid
  if pid=$(running_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "pid $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    say "stopped (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$PIDFILE"
  if ((wipe)); then
    rm -rf "$DATA" "$CLUSTER_ID_FILE"
    say "wiped $DATA"
  fi
}

cmd_status() {
  local pid
  if pid=$(running_pid) && is_ready; then
    echo "bootstrap=$BOOTSTRAP"
    return 0
  fi
  say "not running"
  exit 3
}

case "${1:-}" in
  start) cmd_start ;;
  stop) shift; cmd_stop "$@" ;;
  wipe) cmd_stop --wipe ;;
  status) cmd_status ;;
  env) echo "LOGPIPE_TEST_KAFKA_BOOTSTRAP=$BOOTSTRAP" ;;
  *) echo "usage: $0 {start|stop [--wipe]|wipe|status|env}" >&2; exit 2 ;;
esac
