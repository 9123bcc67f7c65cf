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
#
# Secured listeners (off unless LOGPIPE_SERVICES_KAFKA_SECURE=1; the plaintext one stays as is):
#   LOGPIPE_SERVICES_KAFKA_SECURE=1                 also listen with TLS and SASL, on:
#   LOGPIPE_SERVICES_KAFKA_SASL_SSL_PORT=PORT+2       SASL_SSL: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
#   LOGPIPE_SERVICES_KAFKA_SSL_PORT=PORT+3            SSL with client certificates required (mTLS)
#   LOGPIPE_SERVICES_KAFKA_MISMATCH_PORT=PORT+4       SASL_SSL with a certificate for another name
#                                                     (mismatch.invalid): hostname verification fails
# The CA, the broker and client certificates (SAN 127.0.0.1, localhost) and the test user's
# password are generated once into $STATE/secure/; SCRAM users are created when the storage is
# formatted (kafka-storage format --add-scram), so turn SECURE on before the first start (or wipe).
# start/status then also print secure_bootstrap=, ssl_bootstrap=, mismatch_bootstrap=, ca=,
# client_cert=, client_key=, client_key_password=, sasl_username=, sasl_password= (one per line).
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

SECURE=${LOGPIPE_SERVICES_KAFKA_SECURE:-0}
[[ "$SECURE" == 1 || "$SECURE" == 0 ]] || { echo "kafka.sh: LOGPIPE_SERVICES_KAFKA_SECURE must be 0 or 1" >&2; exit 2; }
SASL_SSL_PORT=${LOGPIPE_SERVICES_KAFKA_SASL_SSL_PORT:-$((PORT + 2))}
SSL_PORT=${LOGPIPE_SERVICES_KAFKA_SSL_PORT:-$((PORT + 3))}
MISMATCH_PORT=${LOGPIPE_SERVICES_KAFKA_MISMATCH_PORT:-$((PORT + 4))}
TLS=$STATE/secure
SASL_USER=logpipe

# shellcheck source=scripts/kafka-lib.sh
source "$SCRIPT_DIR/kafka-lib.sh"
JAVA=$(kafka_java)

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

port_open() { kafka_port_open "$HOST" "$1"; }

# Sends a Kafka ApiVersions request and checks the broker answers error_code 0.
api_versions_ok() { kafka_api_versions_ok "$HOST" "$PORT"; }

is_ready() {
  grep -q "Kafka Server started" "$LOG" 2>/dev/null && api_versions_ok && secure_ready
}

# --- setup -----------------------------------------------------------------

fetch_jars() { kafka_fetch_jars; }

write_config() {
  mkdir -p "$DATA"
  local more_listeners="" more_protocols=""
  if ((SECURE)); then
    more_listeners=",$(secure_listeners)"
    more_protocols=",SASL_SSL:SASL_SSL,SSL:SSL,MISMATCH:SASL_SSL"
  fi
  cat >"$PROPS" <<EOF
# Generated by scripts/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT$more_listeners
advertised.listeners=PLAINTEXT://$HOST:$PORT$more_listeners
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT$more_protocols
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
# The cleaner allocates its dedupe buffer (128 MiB by default) as one array at start-up; a quarter of
# a small heap in one piece can fail after a long test run (see kafka-cluster.sh). Only
# __consumer_offsets is compacted here.
log.cleaner.dedupe.buffer.size=8388608
EOF
  if ((SECURE)); then secure_config >>"$PROPS"; fi
  kafka_write_log4j "$LOG4J"
}

format_storage() {
  if [[ -f "$DATA/meta.properties" ]]; then
    if ((SECURE)) && [[ ! -f "$DATA/.scram-users" ]]; then
      die "$DATA was formatted without SCRAM users: run '$0 wipe' once, then start with LOGPIPE_SERVICES_KAFKA_SECURE=1"
    fi
    return 0
  fi
  local cid
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cid=$(<"$CLUSTER_ID_FILE")
  else
    cid=$("$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    [[ -n "$cid" ]] || die "StorageTool random-uuid produced no cluster id"
    echo "$cid" >"$CLUSTER_ID_FILE"
  fi
  say "formatting $DATA (cluster id $cid)"
  local extra=()
  if ((SECURE)); then mapfile -t extra < <(scram_args); fi
  "$JAVA" -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" kafka.tools.StorageTool \
    format -t "$cid" -c "$PROPS" --ignore-formatted "${extra[@]}" >"$STATE/format.log" 2>&1 \
    || { cat "$STATE/format.log" >&2; die "storage format failed"; }
  if ((SECURE)); then touch "$DATA/.scram-users"; fi
}

# --- secured listeners (LOGPIPE_SERVICES_KAFKA_SECURE=1) --------------------

secure_listeners() {
  echo "SASL_SSL://$HOST:$SASL_SSL_PORT,SSL://$HOST:$SSL_PORT,MISMATCH://$HOST:$MISMATCH_PORT"
}

# One certificate signed by the test CA: $1 = name, $2 = subjectAltName, $3 = extendedKeyUsage.
issue_cert() {
  local name=$1 san=$2 usage=$3
  openssl req -new -newkey rsa:2048 -nodes -keyout "$TLS/$name.key" -subj "/CN=$name" \
    -out "$TLS/$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$san" "$usage" >"$TLS/$name.ext"
  openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$TLS/$name.ext" -out "$TLS/$name.pem" 2>/dev/null
  rm -f "$TLS/$name.csr" "$TLS/$name.ext"
}

# A PKCS12 keystore for the broker from a key and its certificate chain.
keystore() {
  openssl pkcs12 -export -in "$TLS/$1.pem" -inkey "$TLS/$1.key" -certfile "$TLS/ca.pem" -name "$1" \
    -passout "pass:$(<"$TLS/store.password")" -out "$TLS/$1.p12"
}

# The CA, broker, mismatching-name and client certificates, and the passwords; made once.
make_tls() {
  [[ -f "$TLS/.complete" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl is needed for LOGPIPE_SERVICES_KAFKA_SECURE=1"
  rm -rf "$TLS"
  mkdir -p "$TLS"
  chmod 700 "$TLS"
  openssl rand -hex 16 >"$TLS/store.password"
  openssl rand -hex 16 >"$TLS/sasl.password"
  openssl rand -hex 16 >"$TLS/client-key.password"
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$TLS/ca.key" -subj "/CN=logpipe test CA" \
    -days 3650 -sha256 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$TLS/ca.pem" 2>/dev/null
  issue_cert broker "IP:127.0.0.1,DNS:localhost" serverAuth
  issue_cert mismatch "DNS:mismatch.invalid" serverAuth
  issue_cert client "DNS:logpipe-client" clientAuth
  keystore broker
  keystore mismatch
  # The client key is encrypted, so ssl_key_password / ssl.key.password is exercised too.
  openssl pkey -in "$TLS/client.key" -aes256 -passout "pass:$(<"$TLS/client-key.password")" \
    -out "$TLS/client.key.enc"
  mv -f "$TLS/client.key.enc" "$TLS/client.key"
  chmod 600 "$TLS"/*
  touch "$TLS/.complete"
}

secure_config() {
  local store jaas_plain mech listener
  store=$(<"$TLS/store.password")
  jaas_plain="org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER=\"$(<"$TLS/sasl.password")\";"
  echo "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
  echo "ssl.keystore.type=PKCS12"
  echo "ssl.keystore.location=$TLS/broker.p12"
  echo "ssl.keystore.password=$store"
  echo "ssl.key.password=$store"
  echo "ssl.truststore.type=PEM"
  echo "ssl.truststore.location=$TLS/ca.pem"
  echo "listener.name.ssl.ssl.client.auth=required"
  echo "listener.name.mismatch.ssl.keystore.type=PKCS12"
  echo "listener.name.mismatch.ssl.keystore.location=$TLS/mismatch.p12"
  echo "listener.name.mismatch.ssl.keystore.password=$store"
  echo "listener.name.mismatch.ssl.key.password=$store"
  for listener in sasl_ssl mismatch; do
    echo "listener.name.$listener.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    echo "listener.name.$listener.plain.sasl.jaas.config=$jaas_plain"
    for mech in scram-sha-256 scram-sha-512; do
      echo "listener.name.$listener.$mech.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    done
  done
}

# kafka-storage format arguments that create the SCRAM users.
scram_args() {
  local password mech
  password=$(<"$TLS/sasl.password")
  for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
    printf '%s\n' --add-scram "$mech=[name=$SASL_USER,password=$password]"
  done
}

# What a client needs to use the secured listeners (one key=value a line).
secure_info() {
  echo "secure_bootstrap=$HOST:$SASL_SSL_PORT"
  echo "ssl_bootstrap=$HOST:$SSL_PORT"
  echo "mismatch_bootstrap=$HOST:$MISMATCH_PORT"
  echo "ca=$TLS/ca.pem"
  echo "client_cert=$TLS/client.pem"
  echo "client_key=$TLS/client.key"
  echo "client_key_password=$(<"$TLS/client-key.password")"
  echo "sasl_username=$SASL_USER"
  echo "sasl_password=$(<"$TLS/sasl.password")"
}

secure_ready() {
  ((SECURE)) || return 0
  port_open "$SASL_SSL_PORT" && port_open "$SSL_PORT" && port_open "$MISMATCH_PORT"
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
      if ((SECURE)); then secure_info; fi
      return 0
    fi
    if ((SECURE)) && grep -q "Kafka Server started" "$LOG" 2>/dev/null && ! secure_ready; then
      die "running without the secured listeners (pid $pid): stop it, then start with LOGPIPE_SERVICES_KAFKA_SECURE=1"
    fi
    say "pid $pid is up but not answering yet; waiting"
  else
    rm -f "$PIDFILE"
    if port_open "$PORT"; then die "port $PORT is already in use by another process (not $STATE)"; fi
    if port_open "$CONTROLLER_PORT"; then die "controller port $CONTROLLER_PORT is already in use by another process"; fi
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found (need Java 17+)"
    fetch_jars
    if ((SECURE)); then make_tls; fi
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
      if ((SECURE)); then secure_info; fi
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
    rm -rf "$DATA" "$CLUSTER_ID_FILE" "$TLS"
    say "wiped $DATA"
  fi
}

cmd_status() {
  local pid
  if pid=$(running_pid) && is_ready; then
    echo "bootstrap=$BOOTSTRAP"
    if ((SECURE)); then secure_info; fi
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
