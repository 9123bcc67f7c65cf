#!/usr/bin/env bash
# Run a real three-node Apache Kafka cluster (KRaft; each node broker+controller, a 3-voter quorum)
# on 127.0.0.1 for logpipe's fault tests (tests/cluster/). Same jars and readiness checks as
# scripts/kafka.sh (scripts/kafka-lib.sh); its own ports, data dirs and small heaps, so it runs
# beside the single broker of scripts/kafka.sh.
#
# Usage:
#   scripts/kafka-cluster.sh start            # fetch jars if needed, format once, start the nodes that are
#                                             # not running, wait until all three answer; prints bootstrap=...
#   scripts/kafka-cluster.sh stop             # SIGTERM every node (controlled shutdown), SIGKILL after a timeout
#   scripts/kafka-cluster.sh stop --wipe      # stop and delete every node's data (next start reformats)
#   scripts/kafka-cluster.sh wipe             # same as stop --wipe
#   scripts/kafka-cluster.sh status           # exit 0 + bootstrap=... if all three answer, exit 3 if not;
#                                             # one "node N: ..." line per node on stderr
#   scripts/kafka-cluster.sh env              # LOGPIPE_TEST_KAFKA_CLUSTER_BOOTSTRAP=...
#   scripts/kafka-cluster.sh kill NODE        # kill -9 node NODE (1, 2 or 3): a crash, no controlled shutdown
#   scripts/kafka-cluster.sh stop-node NODE   # SIGTERM node NODE and wait until it is gone
#   scripts/kafka-cluster.sh start-node NODE  # start node NODE and wait until it answers
#   scripts/kafka-cluster.sh restart [NODE]   # stop-node + start-node; without NODE a rolling restart
#                                             # of 1, 2, 3, each once the replicas are in sync again
#   scripts/kafka-cluster.sh leader TOPIC PARTITION   # prints leader=N and isr=N,N,...
#   scripts/kafka-cluster.sh create-topic NAME PARTITIONS  # replication factor 3, min.insync.replicas=2
#   scripts/kafka-cluster.sh in-sync          # exit 0 when no partition has fewer in-sync replicas than replicas
#
# leader, create-topic, in-sync and restart use kafka-python's admin client (the broker jars carry no
# topic tool since Kafka 4.0): $LOGPIPE_PYTHON, else the repository's .venv/bin/python, else python3.
#
# Environment (all optional):
#   LOGPIPE_SERVICES_KAFKA_CLUSTER_PORT=21092             node N's client listener is PORT+N-1 (21092-21094)
#   LOGPIPE_SERVICES_KAFKA_CLUSTER_CONTROLLER_PORT=21095  node N's controller listener is PORT+N-1 (21095-21097)
#   LOGPIPE_SERVICES_KAFKA_CLUSTER_HEAP="-Xms128m -Xmx256m"
#   LOGPIPE_SERVICES_KAFKA_CLUSTER_PARTITIONS=3           num.partitions for auto-created topics
#   LOGPIPE_SERVICES_KAFKA_CLUSTER_SESSION_TIMEOUT_MS=4000  broker.session.timeout.ms: how soon a crashed
#                                                         node is fenced and its partitions move
#   LOGPIPE_SERVICES_KAFKA_VERSION=4.1.1                  org.apache.kafka:kafka_2.13 version (as kafka.sh)
#   LOGPIPE_SERVICES_KAFKA_START_TIMEOUT=120              seconds to wait for the nodes to answer
#   LOGPIPE_SERVICES_KAFKA_STOP_TIMEOUT=30                seconds to wait after SIGTERM before SIGKILL
#   LOGPIPE_SERVICES_DIR=<repo>/.services  state in $LOGPIPE_SERVICES_DIR/kafka-cluster/node{1,2,3}
#                                          (server.properties, data/, kafka.log and the 5 before it
#                                          as kafka.log.1-5, kafka.pid, hs_err_pid*.log if a JVM crashed)
#   LOGPIPE_CACHE_DIR=~/.cache/logpipe     jars shared with kafka.sh
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/kafka-lib.sh
source "$SCRIPT_DIR/kafka-lib.sh"

HOST=127.0.0.1
# Below Linux's ephemeral range (32768-60999): a port in it can be some client socket's source port.
BASE_PORT=${LOGPIPE_SERVICES_KAFKA_CLUSTER_PORT:-21092}
BASE_CONTROLLER_PORT=${LOGPIPE_SERVICES_KAFKA_CLUSTER_CONTROLLER_PORT:-21095}
HEAP=${LOGPIPE_SERVICES_KAFKA_CLUSTER_HEAP:--Xms128m -Xmx256m}
PARTITIONS=${LOGPIPE_SERVICES_KAFKA_CLUSTER_PARTITIONS:-3}
SESSION_TIMEOUT_MS=${LOGPIPE_SERVICES_KAFKA_CLUSTER_SESSION_TIMEOUT_MS:-4000}
VERSION=${LOGPIPE_SERVICES_KAFKA_VERSION:-4.1.1}
START_TIMEOUT=${LOGPIPE_SERVICES_KAFKA_START_TIMEOUT:-120}
STOP_TIMEOUT=${LOGPIPE_SERVICES_KAFKA_STOP_TIMEOUT:-30}

STATE=${LOGPIPE_SERVICES_DIR:-$REPO/.services}/kafka-cluster
CLUSTER_ID_FILE=$STATE/cluster.id
LOG4J=$STATE/log4j2.properties
LIBS=${LOGPIPE_CACHE_DIR:-$HOME/.cache/logpipe}/kafka-$VERSION/libs
POM=$SCRIPT_DIR/kafka/pom.xml
JAVA=$(kafka_java)
NODES=(1 2 3)

say() { echo "kafka-cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

port_of() { echo $((BASE_PORT + $1 - 1)); }
controller_port_of() { echo $((BASE_CONTROLLER_PORT + $1 - 1)); }
node_dir() { echo "$STATE/node$1"; }

bootstrap() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("$HOST:$(port_of "$n")"); done
  (IFS=,; echo "${out[*]}")
}

voters() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("$n@$HOST:$(controller_port_of "$n")"); done
  (IFS=,; echo "${out[*]}")
}

check_node() {
  [[ "${1:-}" =~ ^[123]$ ]] || die "NODE must be 1, 2 or 3 (got '${1:-}')"
}

# --- process / readiness checks ----------------------------------------------

# Prints node N's pid if its pid file names a live kafka.Kafka process of its state dir.
running_pid() {
  local dir pid
  dir=$(node_dir "$1")
  [[ -f "$dir/kafka.pid" ]] || return 1
  pid=$(<"$dir/kafka.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "kafka.Kafka $dir/server.properties" || return 1
  fi
  echo "$pid"
}

is_ready() {
  grep -q "Kafka Server started" "$(node_dir "$1")/kafka.log" 2>/dev/null && kafka_api_versions_ok "$HOST" "$(port_of "$1")"
}

# --- setup ---------------------------------------------------------------------

write_config() {
  local n=$1 dir
  dir=$(node_dir "$n")
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<CONF
# Generated by scripts/kafka-cluster.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://$HOST:$(port_of "$n"),CONTROLLER://$HOST:$(controller_port_of "$n")
advertised.listeners=PLAINTEXT://$HOST:$(port_of "$n")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
num.partitions=$PARTITIONS
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
# A crashed node is fenced (and its partitions get new leaders) after this long without a heartbeat.
broker.session.timeout.ms=$SESSION_TIMEOUT_MS
broker.heartbeat.interval.ms=500
# Three JVMs share a small machine.
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
log.cleaner.threads=1
# The cleaner allocates its dedupe buffer (128 MiB by default) as one array when it starts. In a
# 256 MiB heap that has just loaded the logs of a long test campaign, G1 may find no 128 contiguous
# free regions, and the node dies at start-up with "OutOfMemoryError: Java heap space" (CI, stop 18).
# Only __consumer_offsets is compacted here; 8 MiB holds its keys many times over.
log.cleaner.dedupe.buffer.size=8388608
CONF
}

format_storage() {
  local n=$1 dir cid
  dir=$(node_dir "$n")
  [[ -f "$dir/data/meta.properties" ]] && return 0
  cid=$(<"$CLUSTER_ID_FILE")
  say "formatting node $n's $dir/data (cluster id $cid)"
  "$JAVA" -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" kafka.tools.StorageTool \
    format -t "$cid" -c "$dir/server.properties" --ignore-formatted >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; die "storage format of node $n failed"; }
}

prepare() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (need Java 17+)"
  kafka_fetch_jars
  mkdir -p "$STATE"
  kafka_write_log4j "$LOG4J"
  if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
    local cid
    cid=$("$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    [[ -n "$cid" ]] || die "StorageTool random-uuid produced no cluster id"
    echo "$cid" >"$CLUSTER_ID_FILE"
  fi
}

# kafka.log -> kafka.log.1 -> ... -> kafka.log.5: a campaign restarts each node several times, and
# the log of the run before the last one is often the one that says why a node died.
rotate_log() {
  local i
  for i in 4 3 2 1; do [[ -f "$1.$i" ]] && mv -f "$1.$i" "$1.$((i + 1))"; done
  [[ -f "$1" ]] && mv -f "$1" "$1.1"
  return 0
}

# Launches node N unless it runs (does not wait for it).
launch() {
  local n=$1 dir pid
  dir=$(node_dir "$n")
  if pid=$(running_pid "$n"); then return 0; fi
  rm -f "$dir/kafka.pid"
  if kafka_port_open "$HOST" "$(port_of "$n")"; then die "port $(port_of "$n") (node $n) is already in use by another process"; fi
  if kafka_port_open "$HOST" "$(controller_port_of "$n")"; then
    die "controller port $(controller_port_of "$n") (node $n) is already in use by another process"
  fi
  write_config "$n"
  format_storage "$n"
  rotate_log "$dir/kafka.log"
  # shellcheck disable=SC2086  # HEAP is a list of JVM flags
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/kafka.pid" \
    "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -XX:ErrorFile="$dir/hs_err_pid%p.log" \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$dir" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$dir/kafka.log" 2>&1 9>&- &
  local i
  for i in $(seq 100); do [[ -s "$dir/kafka.pid" ]] && break; sleep 0.1; done
  [[ -s "$dir/kafka.pid" ]] || die "node $n did not start; see $dir/kafka.log"
  say "started node $n (pid $(<"$dir/kafka.pid"), $HOST:$(port_of "$n"))"
}

# Waits until every node named in the arguments answers.
wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) n pending
  while ((SECONDS < deadline)); do
    pending=()
    for n in "$@"; do
      if ! running_pid "$n" >/dev/null; then
        say "node $n exited during startup; last lines of $(node_dir "$n")/kafka.log:"
        tail -n 60 "$(node_dir "$n")/kafka.log" >&2 || true
        rm -f "$(node_dir "$n")/kafka.pid"
        exit 1
      fi
      is_ready "$n" || pending+=("$n")
    done
    ((${#pending[@]} == 0)) && return 0
    sleep 0.5
  done
  say "timed out after ${START_TIMEOUT}s waiting for node(s) ${pending[*]}"
  for n in "${pending[@]}"; do tail -n 30 "$(node_dir "$n")/kafka.log" >&2 || true; done
  exit 1
}

# SIGTERM (controlled shutdown: leadership moves first), SIGKILL after STOP_TIMEOUT.
stop_node() {
  local n=$1 pid
  if pid=$(running_pid "$n"); then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "node $n (pid $pid) still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    say "stopped node $n (pid $pid)"
  else
    say "node $n not running"
  fi
  rm -f "$(node_dir "$n")/kafka.pid"
}

# --- the admin client (kafka-python) ----------------------------------------------

admin() {
  local py=${LOGPIPE_PYTHON:-}
  if [[ -z "$py" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then py=$REPO/.venv/bin/python; else py=python3; fi
  fi
  "$py" -c 'import kafka' 2>/dev/null || die "$py cannot import kafka (kafka-python); run make .venv/.installed or set LOGPIPE_PYTHON"
  "$py" - "$(bootstrap)" "$@" <<'PY'
import sys
import time

from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, command, *args = sys.argv[1:]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="logpipe-kafka-cluster-sh", request_timeout_ms=10000)


def partitions(topics=None):
    for topic in admin.describe_topics(topics):
        for p in topic["partitions"]:
            yield topic["name"], p


try:
    if command == "create-topic":
        name, count = args[0], int(args[1])
        topic = NewTopic(name, count, 3, topic_configs={"min.insync.replicas": "2"})
        admin.create_topics([topic], timeout_ms=30000)
        deadline = time.monotonic() + 30
        while True:  # every partition has a leader and three in-sync replicas
            ready = [p for _, p in partitions([name]) if p["leader_id"] >= 0 and len(p["isr_nodes"]) == 3]
            if len(ready) == count:
                break
            if time.monotonic() > deadline:
                sys.exit(f"topic {name}: partitions not ready within 30 s")
            time.sleep(0.2)
        print(f"topic={name}")
    elif command == "leader":
        name, index = args[0], int(args[1])
        found = [p for _, p in partitions([name]) if p["partition_index"] == index]
        if not found:
            sys.exit(f"no partition {index} in topic {name}")
        print(f"leader={found[0]['leader_id']}")
        print("isr=" + ",".join(str(n) for n in found[0]["isr_nodes"]))
    elif command == "in-sync":
        lagging = [f"{t}-{p['partition_index']}" for t, p in partitions() if len(p["isr_nodes"]) < len(p["replica_nodes"])]
        if lagging:
            print("under-replicated=" + ",".join(sorted(lagging)))
            sys.exit(3)
    else:
        sys.exit(f"unknown admin command {command}")
finally:
    admin.close()
PY
}

# Waits until no partition is under-replicated (after a node came back).
wait_in_sync() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until admin in-sync >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "replicas not in sync within ${START_TIMEOUT}s: $(admin in-sync 2>&1 || true)"
    sleep 0.5
  done
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
  prepare
  local n
  for n in "${NODES[@]}"; do launch "$n"; done
  wait_ready "${NODES[@]}"
  echo "bootstrap=$(bootstrap)"
}

cmd_stop() {
  local wipe=0
  case "${1:-}" in
    --wipe) wipe=1 ;;
    "") ;;
    *) die "unknown option for stop: $1" ;;
  esac
  with_lock
  local n pids=()
  # All at once: a node that stops alone waits for a quorum that the others' stop would remove.
  for n in "${NODES[@]}"; do stop_node "$n" & pids+=($!); done
  wait "${pids[@]}"
  if ((wipe)); then
    rm -rf "$STATE"/node* "$CLUSTER_ID_FILE"
    say "wiped $STATE"
  fi
}

cmd_status() {
  local n ok=1 pid
  for n in "${NODES[@]}"; do
    if pid=$(running_pid "$n"); then
      if is_ready "$n"; then say "node $n: running (pid $pid, $HOST:$(port_of "$n"))"; else say "node $n: starting (pid $pid)"; ok=0; fi
    else
      say "node $n: not running"; ok=0
    fi
  done
  ((ok)) || exit 3
  echo "bootstrap=$(bootstrap)"
}

cmd_kill() {
  check_node "${1:-}"
  local pid
  pid=$(running_pid "$1") || die "node $1 is not running"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$(node_dir "$1")/kafka.pid"
  say "killed node $1 (pid $pid, SIGKILL)"
}

cmd_start_node() {
  check_node "${1:-}"
  with_lock
  prepare
  launch "$1"
  wait_ready "$1"
  echo "bootstrap=$(bootstrap)"
}

cmd_restart() {
  local n nodes
  if [[ -n "${1:-}" ]]; then check_node "$1"; nodes=("$1"); else nodes=("${NODES[@]}"); fi
  with_lock
  prepare
  for n in "${nodes[@]}"; do
    wait_in_sync
    stop_node "$n"
    launch "$n"
    wait_ready "$n"
  done
  wait_in_sync
  echo "bootstrap=$(bootstrap)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) shift; cmd_stop "$@" ;;
  wipe) cmd_stop --wipe ;;
  status) cmd_status ;;
  env) echo "LOGPIPE_TEST_KAFKA_CLUSTER_BOOTSTRAP=$(bootstrap)" ;;
  kill) cmd_kill "${2:-}" ;;
  stop-node) check_node "${2:-}"; with_lock; stop_node "$2" ;;
  start-node) cmd_start_node "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  leader) [[ $# -eq 3 ]] || die "usage: $0 leader TOPIC PARTITION"; admin leader "$2" "$3" ;;
  create-topic) [[ $# -eq 3 ]] || die "usage: $0 create-topic NAME PARTITIONS"; admin create-topic "$2" "$3" ;;
  in-sync) admin in-sync ;;
  *)
    echo "usage: $0 {start|stop [--wipe]|wipe|status|env|kill NODE|stop-node NODE|start-node NODE|restart [NODE]|leader TOPIC PARTITION|create-topic NAME PARTITIONS|in-sync}" >&2
    exit 2
    ;;
esac
