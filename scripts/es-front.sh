#!/usr/bin/env bash
# A real TLS + authentication front for the local Elasticsearch node: nginx as a
# reverse proxy, because the node from Maven Central has no security module
# (see scripts/elasticsearch.sh). For logpipe's tests of ca_certs, basic auth
# and API keys.
#
#   scripts/es-front.sh start    install nginx if missing (apt-get), make the certificate and
#                                credentials once, start, wait until it answers; prints
#                                url= ca= user= password= api_key= (one per line; idempotent)
#   scripts/es-front.sh stop     stop nginx (exit 0 if not running)
#   scripts/es-front.sh status   exit 0 and print the same lines when running, else exit 3
#   scripts/es-front.sh wipe     stop and delete the state (certificate, credentials)
#
# A request passes with either credential, anything else gets 401:
#   Authorization: Basic base64(user:password)   (auth_basic, generated htpasswd)
#   Authorization: ApiKey <api_key>              (api_key = base64(id:key), as Elasticsearch's)
# The certificate (SAN 127.0.0.1, localhost) is signed by a CA generated here (ca=).
#
# Environment:
#   LOGPIPE_SERVICES_DIR                 state root (default <repo>/.services); state in <root>/es-front
#   LOGPIPE_SERVICES_ES_FRONT_PORT       https port (default 19243)
#   LOGPIPE_SERVICES_ES_FRONT_UPSTREAM   the node behind it (default $LOGPIPE_TEST_ES_URL, else
#                                        http://127.0.0.1:${LOGPIPE_SERVICES_ES_PORT:-19200})
# nginx runs from its own prefix (config, logs, pid, temp dirs in the state dir); when started as
# root its workers run as nobody.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

HOST=127.0.0.1
PORT=${LOGPIPE_SERVICES_ES_FRONT_PORT:-19243}
UPSTREAM=${LOGPIPE_SERVICES_ES_FRONT_UPSTREAM:-${LOGPIPE_TEST_ES_URL:-http://127.0.0.1:${LOGPIPE_SERVICES_ES_PORT:-19200}}}
UPSTREAM=${UPSTREAM%/}
STATE=${LOGPIPE_SERVICES_DIR:-$REPO/.services}/es-front
CONF=$STATE/nginx.conf
PIDFILE=$STATE/nginx.pid
TLS=$STATE/tls
USER_NAME=logpipe
API_KEY_ID=logpipe-test

say() { echo "es-front.sh: $*" >&2; }
die() { say "$*"; exit 1; }

find_nginx() {
  local candidate
  for candidate in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx; do
    [[ -n "$candidate" && -x "$candidate" ]] && { echo "$candidate"; return 0; }
  done
  return 1
}

# Debian's nginx package, installed once (CI machines have nothing installed by hand).
install_nginx() {
  find_nginx >/dev/null && return 0
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "nginx is missing and installing it needs root (apt-get install nginx)"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null 2>&1 || die "nginx is missing and there is no apt-get: install nginx by hand"
  say "installing nginx (apt-get)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends nginx >&2
  find_nginx >/dev/null || die "apt-get install nginx did not provide an nginx binary"
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid=$(<"$PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF" || return 1
  fi
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# The CA, the server certificate and the test credentials; made once.
make_secrets() {
  [[ -f "$STATE/.complete" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl is needed"
  rm -rf "$TLS"
  mkdir -p "$TLS"
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$TLS/ca.key" -subj "/CN=logpipe es-front test CA" \
    -days 3650 -sha256 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$TLS/ca.pem" 2>/dev/null
  openssl req -new -newkey rsa:2048 -nodes -keyout "$TLS/server.key" -subj "/CN=127.0.0.1" \
    -out "$TLS/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
    >"$TLS/server.ext"
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 3650 \
    -sha256 -extfile "$TLS/server.ext" -out "$TLS/server.pem" 2>/dev/null
  rm -f "$TLS/server.csr" "$TLS/server.ext"
  chmod 600 "$TLS/ca.key" "$TLS/server.key"
  openssl rand -hex 16 >"$STATE/password"
  openssl rand -hex 16 >"$STATE/api_key.secret"
  printf '%s' "$API_KEY_ID:$(<"$STATE/api_key.secret")" | base64 -w0 >"$STATE/api_key"
  # Read by the workers at request time, so readable by them (nobody when started as root).
  printf '%s:%s\n' "$USER_NAME" "$(openssl passwd -apr1 "$(<"$STATE/password")")" >"$STATE/htpasswd"
  chmod 644 "$STATE/htpasswd"
  touch "$STATE/.complete"
}

write_config() {
  local user_line=""
  [[ $(id -u) == 0 ]] && user_line="user nobody nogroup;"
  mkdir -p "$STATE/logs" "$STATE/tmp"
  cat >"$CONF" <<EOF
# Generated by scripts/es-front.sh on every start; edits are overwritten.
$user_line
worker_processes 1;
pid $PIDFILE;
error_log $STATE/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log $STATE/logs/access.log;
  client_body_temp_path $STATE/tmp/body;
  proxy_temp_path $STATE/tmp/proxy;
  fastcgi_temp_path $STATE/tmp/fastcgi;
  uwsgi_temp_path $STATE/tmp/uwsgi;
  scgi_temp_path $STATE/tmp/scgi;
  client_max_body_size 200m;
  map_hash_bucket_size 256;
  # The right API key turns basic auth off for the request; any other header must be basic auth.
  map \$http_authorization \$es_front_realm {
    "ApiKey $(<"$STATE/api_key")" off;
    default "logpipe es-front";
  }
  server {
    listen $HOST:$PORT ssl;
    ssl_certificate $TLS/server.pem;
    ssl_certificate_key $TLS/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    auth_basic \$es_front_realm;
    auth_basic_user_file $STATE/htpasswd;
    location / {
      proxy_pass $UPSTREAM;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_read_timeout 300s;
    }
  }
}
EOF
}

ready() {
  curl -s -o /dev/null --max-time 3 --cacert "$TLS/ca.pem" -u "$USER_NAME:$(<"$STATE/password")" \
    -w '%{http_code}' "https://$HOST:$PORT/" | grep -q '^[2345]'
}

info() {
  echo "url=https://$HOST:$PORT"
  echo "ca=$TLS/ca.pem"
  echo "user=$USER_NAME"
  echo "password=$(<"$STATE/password")"
  echo "api_key=$(<"$STATE/api_key")"
  echo "upstream=$UPSTREAM"
}

cmd_start() {
  mkdir -p "$STATE"
  chmod 755 "$STATE"
  if running_pid >/dev/null; then
    info
    return 0
  fi
  install_nginx
  local nginx
  nginx=$(find_nginx)
  port_open && die "port $PORT is already in use by another process"
  make_secrets
  write_config
  "$nginx" -t -q -p "$STATE" -c "$CONF" -e "$STATE/logs/error.log" >&2 || die "nginx rejected $CONF"
  "$nginx" -p "$STATE" -c "$CONF" -e "$STATE/logs/error.log"
  local i
  for i in $(seq 100); do
    if running_pid >/dev/null && ready; then
      info
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$STATE/logs/error.log" >&2 || true
  die "nginx did not answer on https://$HOST:$PORT"
}

cmd_stop() {
  local pid
  if pid=$(running_pid); then
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    say "stopped (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  if running_pid >/dev/null; then
    info
    return 0
  fi
  say "not running"
  exit 3
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wipe) cmd_stop; rm -rf "$STATE"; say "wiped $STATE" ;;
  *) echo "usage: $0 {start|stop|status|wipe}" >&2; exit 2 ;;
esac
