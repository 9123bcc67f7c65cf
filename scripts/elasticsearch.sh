#!/usr/bin/env bash
# Run a real Elasticsearch 8 node on 127.0.0.1 for logpipe's tests, without
# Docker and without the elastic.co tarball: every jar comes from Maven
# Central (see scripts/elasticsearch/pom.xml) and a small launcher, compiled
# here on first use, starts org.elasticsearch.node.Node in one JVM with the
# netty4 HTTP/transport plugin on the class path.
#
#   scripts/elasticsearch.sh start    fetch jars (first time), start, wait for yellow/green,
#                                     print url=http://127.0.0.1:PORT (idempotent)
#   scripts/elasticsearch.sh stop     SIGTERM, up to 30 s, then SIGKILL (exit 0 if not running)
#   scripts/elasticsearch.sh status   exit 0 and print url=... when healthy, else exit 3
#   scripts/elasticsearch.sh env      print LOGPIPE_TEST_ES_URL=http://127.0.0.1:PORT
#
# Environment:
#   LOGPIPE_SERVICES_DIR        state root (default: <repo>/.services); state in <root>/elasticsearch
#   LOGPIPE_CACHE_DIR           jar cache root (default: ~/.cache/logpipe)
#   LOGPIPE_SERVICES_ES_PORT             HTTP port (default 19200)
#   LOGPIPE_SERVICES_ES_TRANSPORT_PORT   transport port (default HTTP port + 100)
#   LOGPIPE_SERVICES_ES_HEAP             heap size for -Xms/-Xmx (default 512m)
#   LOGPIPE_SERVICES_ES_START_TIMEOUT    seconds to wait for yellow/green (default 180)
#   LOGPIPE_SERVICES_ES_JAVA_OPTS        extra JVM options
#   JAVA_HOME                   JDK to use (default: java/javac on PATH; needs 17+)
#
# Data lives in <state>/data and is kept across stop/start; delete the state
# directory (while stopped) to start from an empty cluster.
#
# What this node has (Elasticsearch 8.14.3 server + transport-netty4): the
# server's features (mappings incl. flattened, bulk, search, aggregations,
# composable index templates, delete index by wildcard, _analyze with the
# server's analyzers standard/simple/whitespace/stop/keyword and the
# lowercase filter), plus, from the launcher, the "smartcn" analyzer and
# "smartcn_tokenizer" (Lucene's Smart Chinese analyzer) and GET|HEAD /
# (info/ping). It lacks the distribution's other modules, which are not on
# Maven Central for 8.x: analysis-common (language analyzers, most
# tokenizers and filters), painless, ingest processors, reindex /
# update_by_query / delete_by_query, the data stream APIs (a data stream
# can be created by indexing, but not listed or deleted), mapper-extras,
# and x-pack (so there is no security at all: plain http, no auth).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

ES_VERSION=8.14.3 # keep in step with scripts/elasticsearch/pom.xml
POM="$SCRIPT_DIR/elasticsearch/pom.xml"
STATE="${LOGPIPE_SERVICES_DIR:-$REPO/.services}/elasticsearch"
CACHE="${LOGPIPE_CACHE_DIR:-$HOME/.cache/logpipe}/elasticsearch-$ES_VERSION"
LIBS="$CACHE/libs"
PORT="${LOGPIPE_SERVICES_ES_PORT:-19200}"
TPORT="${LOGPIPE_SERVICES_ES_TRANSPORT_PORT:-$((PORT + 100))}"
HEAP="${LOGPIPE_SERVICES_ES_HEAP:-512m}"
START_TIMEOUT="${LOGPIPE_SERVICES_ES_START_TIMEOUT:-180}"
STOP_TIMEOUT=30
HOST=127.0.0.1
MAIN_CLASS=org.elasticsearch.node.LogpipeTestNode

PIDFILE="$STATE/elasticsearch.pid"
LOGFILE="$STATE/elasticsearch.log"
PORTFILE="$STATE/port"

if [[ -n "${JAVA_HOME:-}" ]]; then
  JAVA="$JAVA_HOME/bin/java"
  JAVAC="$JAVA_HOME/bin/javac"
else
  JAVA=java
  JAVAC=javac
fi

log() { echo "elasticsearch.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- process state

# pid of our running node, or nothing (checks that the pid is really ours).
running_pid() {
  local pid
  [[ -f "$PIDFILE" ]] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$MAIN_CLASS" || return 1
  echo "$pid"
}

# Port of the running node (as written at start), else the configured one.
current_port() {
  if running_pid >/dev/null && [[ -s "$PORTFILE" ]]; then
    cat "$PORTFILE"
  else
    echo "$PORT"
  fi
}

healthy() { # $1 = port
  curl -fsS -m 3 "http://$HOST:$1/_cluster/health" 2>/dev/null | grep -Eq '"status":"(green|yellow)"'
}

port_answers() { # something (anything) listening on $HOST:$1 ?
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# ---------------------------------------------------------------- jars + launcher

fetch_libs() {
  local want have=""
  want=$(sha256sum "$POM" | cut -d' ' -f1)
  [[ -f "$LIBS/.complete" ]] && have=$(cat "$LIBS/.complete")
  [[ "$have" == "$want" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch the Elasticsearch jars)"
  log "fetching Elasticsearch $ES_VERSION jars from Maven Central into $LIBS"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime >"$tmp.mvn.log" 2>&1; then
    cat "$tmp.mvn.log" >&2
    rm -rf "$tmp" "$tmp.mvn.log"
    die "could not fetch the Elasticsearch jars"
  fi
  rm -f "$tmp.mvn.log"
  echo "$want" >"$tmp/.complete"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

# The launcher: a Node whose PluginsService also takes plugin classes from the
# class path (the distribution loads them from modules/ directories instead).
write_launcher_sources() { # $1 = source root
  mkdir -p "$1/org/elasticsearch/plugins" "$1/org/elasticsearch/node"
  cat >"$1/org/elasticsearch/plugins/LogpipeClasspathPluginsService.java" <<'JAVA'
package org.elasticsearch.plugins;

import org.elasticsearch.Version;
import org.elasticsearch.action.admin.cluster.node.info.PluginsAndModules;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.jdk.ModuleQualifiedExportsService;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;

/** PluginsService that also loads plugin classes already on the class path (no plugin directories needed). */
public class LogpipeClasspathPluginsService extends PluginsService {
    private final List<LoadedPlugin> all;
    private final PluginsAndModules allInfo;

    public LogpipeClasspathPluginsService(Settings settings, Environment env, Collection<Class<? extends Plugin>> classes) {
        super(settings, env.configFile(), env.modulesFile(), env.pluginsFile());
        List<LoadedPlugin> loaded = new ArrayList<>();
        List<PluginRuntimeInfo> infos = new ArrayList<>(super.info().getPluginInfos());
        for (Class<? extends Plugin> c : classes) {
            PluginDescriptor d = new PluginDescriptor(c.getSimpleName(), "class path plugin (logpipe test node)", "NA",
                Version.CURRENT.toString(), Integer.toString(Runtime.version().feature()),
                c.getName(), null, List.of(), false, false, false, false);
            loaded.add(new LoadedPlugin(d, loadPlugin(c, settings, env.configFile())));
            infos.add(new PluginRuntimeInfo(d));
        }
        loaded.addAll(super.plugins());
        this.all = List.copyOf(loaded);
        this.allInfo = new PluginsAndModules(infos, super.info().getModuleInfos());
    }

    @Override
    protected final List<LoadedPlugin> plugins() {
        return all;
    }

    @Override
    public PluginsAndModules info() {
        return allInfo;
    }

    @Override
    protected void addServerExportsService(Map<String, List<ModuleQualifiedExportsService>> qualifiedExports) {
        // the server runs on the class path here, not as a named module
    }
}
JAVA
  cat >"$1/org/elasticsearch/node/LogpipeTestNode.java" <<'JAVA'
package org.elasticsearch.node;

import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.cn.smart.HMMChineseTokenizer;
import org.apache.lucene.analysis.cn.smart.SmartChineseAnalyzer;
import org.elasticsearch.Build;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.env.Environment;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.index.IndexVersion;
import org.elasticsearch.index.analysis.AbstractIndexAnalyzerProvider;
import org.elasticsearch.index.analysis.AnalyzerProvider;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.LogpipeClasspathPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsService;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.transport.netty4.Netty4Plugin;
import org.elasticsearch.xcontent.XContentBuilder;

import java.nio.file.Path;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * Starts one Elasticsearch node in this JVM. Usage: LogpipeTestNode HOME (settings in HOME/config/elasticsearch.yml,
 * logging in HOME/config/log4j2.properties). SIGTERM closes the node cleanly.
 */
public final class LogpipeTestNode {

    /** Lucene's Smart Chinese analyzer as "smartcn" / "smartcn_tokenizer" (what the analysis-smartcn plugin offers). */
    public static final class SmartCnPlugin extends Plugin implements AnalysisPlugin {
        @Override
        public Map<String, AnalysisProvider<AnalyzerProvider<? extends Analyzer>>> getAnalyzers() {
            return Map.of("smartcn", (indexSettings, env, name, settings) -> new AbstractIndexAnalyzerProvider<SmartChineseAnalyzer>(name, settings) {
                private final SmartChineseAnalyzer analyzer = new SmartChineseAnalyzer();

                @Override
                public SmartChineseAnalyzer get() {
                    return analyzer;
                }
            });
        }

        @Override
        public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
            return Map.of("smartcn_tokenizer", (indexSettings, env, name, settings) -> TokenizerFactory.newFactory(name, HMMChineseTokenizer::new));
        }
    }

    /** GET|HEAD / (info and ping): in the distribution this is the rest-root module, which is not on Maven Central. */
    public static final class RootInfoPlugin extends Plugin implements ActionPlugin {
        private volatile ClusterService clusterService;

        @Override
        public Collection<?> createComponents(PluginServices services) {
            clusterService = services.clusterService();
            return List.of();
        }

        @Override
        public List<RestHandler> getRestHandlers(Settings settings, NamedWriteableRegistry registry, RestController restController,
            ClusterSettings clusterSettings, IndexScopedSettings indexScopedSettings, SettingsFilter settingsFilter,
            IndexNameExpressionResolver resolver, Supplier<DiscoveryNodes> nodes, Predicate<NodeFeature> clusterSupportsFeature) {
            return List.of(new BaseRestHandler() {
                @Override
                public String getName() {
                    return "logpipe_root_info";
                }

                @Override
                public List<Route> routes() {
                    return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
                }

                @Override
                protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
                    return channel -> {
                        Build build = Build.current();
                        XContentBuilder b = channel.newBuilder();
                        b.startObject();
                        b.field("name", Node.NODE_NAME_SETTING.get(settings));
                        b.field("cluster_name", clusterService.getClusterName().value());
                        b.field("cluster_uuid", clusterService.state().metadata().clusterUUID());
                        b.startObject("version");
                        b.field("number", build.qualifiedVersion());
                        b.field("build_flavor", build.flavor());
                        b.field("build_type", build.type().displayName());
                        b.field("build_hash", build.hash());
                        b.field("build_date", build.date());
                        b.field("build_snapshot", build.isSnapshot());
                        b.field("lucene_version", IndexVersion.current().luceneVersion().toString());
                        b.field("minimum_wire_compatibility_version", build.minWireCompatVersion());
                        b.field("minimum_index_compatibility_version", build.minIndexCompatVersion());
                        b.endObject();
                        b.field("tagline", "You Know, for Search");
                        b.endObject();
                        channel.sendResponse(new RestResponse(RestStatus.OK, b));
                    };
                }
            });
        }
    }

    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        Environment env = InternalSettingsPreparer.prepareEnvironment(
            Settings.builder().put("path.home", home.toString()).build(), Map.of(), home.resolve("config"), () -> "logpipe-es");
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(env.settings()));
        LogConfigurator.configure(env, true);

        List<Class<? extends Plugin>> classpathPlugins = List.of(Netty4Plugin.class, SmartCnPlugin.class, RootInfoPlugin.class);
        Node node = new Node(NodeConstruction.prepareConstruction(env, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment environment, Settings settings) {
                return new LogpipeClasspathPluginsService(settings, environment, classpathPlugins);
            }
        }, true));

        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.prepareForClose();
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "logpipe-es-shutdown"));
        node.start();
        closed.await(); // a live non-daemon thread until the node is closed
    }
}
JAVA
}

# Prints the class path (launcher classes + jars); compiles the launcher when its source changed.
build_launcher() {
  local src hash dir
  src=$(mktemp -d)
  write_launcher_sources "$src"
  hash=$( (cd "$src" && find . -name '*.java' | sort | xargs cat; echo "$ES_VERSION") | sha256sum | cut -c1-16)
  dir="$CACHE/launcher/$hash"
  if [[ ! -f "$dir/.complete" ]]; then
    command -v "$JAVAC" >/dev/null || die "javac not found (a JDK 17+ is needed)"
    log "compiling the node launcher into $dir"
    rm -rf "$dir"
    mkdir -p "$dir/classes"
    if ! "$JAVAC" -nowarn -encoding UTF-8 -d "$dir/classes" -cp "$LIBS/*" \
        "$src/org/elasticsearch/plugins/LogpipeClasspathPluginsService.java" \
        "$src/org/elasticsearch/node/LogpipeTestNode.java" >&2; then
      rm -rf "$src" "$dir"
      die "could not compile the node launcher"
    fi
    touch "$dir/.complete"
  fi
  rm -rf "$src"
  echo "$dir/classes:$LIBS/*"
}

write_config() {
  mkdir -p "$STATE/config" "$STATE/data" "$STATE/logs" "$STATE/tmp" "$STATE/modules" "$STATE/plugins"
  cat >"$STATE/config/elasticsearch.yml" <<EOF
# Written by scripts/elasticsearch.sh on every start; edit the script, not this file.
cluster.name: logpipe-test
node.name: logpipe-es
path.data: $STATE/data
path.logs: $STATE/logs
network.host: $HOST
http.port: $PORT
transport.port: $TPORT
discovery.type: single-node
node.portsfile: true
# a fullish disk must not turn test indices read-only
cluster.routing.allocation.disk.threshold_enabled: false
# tests may delete indices by wildcard (DELETE /logtest-*)
action.destructive_requires_name: false
EOF
  cat >"$STATE/config/log4j2.properties" <<'EOF'
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
EOF
}

# ---------------------------------------------------------------- commands

wait_healthy() { # $1 = pid; returns 0 when healthy, 1 if the process died, 2 on timeout
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 1
    healthy "$PORT" && return 0
    sleep 0.5
  done
  return 2
}

cmd_start() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9

  local pid rc=0
  if pid=$(running_pid); then
    PORT=$(current_port)
    if ! healthy "$PORT"; then
      log "node (pid $pid) is running but not healthy yet; waiting up to ${START_TIMEOUT}s"
      wait_healthy "$pid" || rc=$?
      if ((rc != 0)); then
        log "node (pid $pid) did not become healthy; last log lines:"
        tail -n 60 "$LOGFILE" >&2 || true
        exit 1
      fi
    fi
    echo "url=http://$HOST:$PORT"
    return 0
  fi
  rm -f "$PIDFILE" "$PORTFILE"

  if port_answers "$PORT"; then
    die "port $HOST:$PORT is already in use by another process (set LOGPIPE_SERVICES_ES_PORT)"
  fi
  if port_answers "$TPORT"; then
    die "transport port $HOST:$TPORT is already in use by another process (set LOGPIPE_SERVICES_ES_TRANSPORT_PORT)"
  fi
  command -v "$JAVA" >/dev/null || die "java not found (a JDK 17+ is needed)"

  fetch_libs
  local cp
  cp=$(build_launcher)
  write_config
  rm -f "$STATE/logs/http.ports" "$STATE/logs/transport.ports"

  echo "=== $(date -u +%FT%TZ) start: Elasticsearch $ES_VERSION on $HOST:$PORT (transport $TPORT)" >>"$LOGFILE"
  # shellcheck disable=SC2086 # LOGPIPE_SERVICES_ES_JAVA_OPTS is a list of options
  setsid nohup "$JAVA" \
    "-Xms$HEAP" "-Xmx$HEAP" -XX:+UseG1GC -Xss1m \
    -XX:-OmitStackTraceInFastThrow \
    "-XX:ErrorFile=$STATE/logs/hs_err_pid%p.log" \
    "-Djava.io.tmpdir=$STATE/tmp" \
    -Dfile.encoding=UTF-8 -Djava.awt.headless=true \
    -Des.networkaddress.cache.ttl=60 -Des.networkaddress.cache.negative.ttl=10 \
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0 \
    -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true -Dlog4j.shutdownHookEnabled=false \
    ${LOGPIPE_SERVICES_ES_JAVA_OPTS:-} \
    -cp "$cp" "$MAIN_CLASS" "$STATE" \
    </dev/null >>"$LOGFILE" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"
  echo "$PORT" >"$PORTFILE"

  wait_healthy "$pid" || rc=$?
  if ((rc == 0)); then
    echo "url=http://$HOST:$PORT"
    return 0
  fi
  if ((rc == 1)); then
    log "node exited during start-up; last log lines of $LOGFILE:"
    rm -f "$PIDFILE" "$PORTFILE"
  else
    log "node not yellow/green after ${START_TIMEOUT}s (pid $pid still running; 'stop' ends it); last log lines of $LOGFILE:"
  fi
  tail -n 60 "$LOGFILE" >&2 || true
  exit 1
}

cmd_stop() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9

  local pid deadline
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE" "$PORTFILE"
    echo "elasticsearch: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still running after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
  fi
  rm -f "$PIDFILE" "$PORTFILE"
  echo "elasticsearch: stopped (pid $pid)"
}

cmd_status() {
  local pid port
  if pid=$(running_pid); then
    port=$(current_port)
    if healthy "$port"; then
      echo "url=http://$HOST:$port"
      return 0
    fi
    log "running (pid $pid) but not healthy on $HOST:$port"
    exit 3
  fi
  log "not running"
  exit 3
}

cmd_env() {
  echo "LOGPIPE_TEST_ES_URL=http://$HOST:$(current_port)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 {start|stop|status|env}" >&2
    exit 2
    ;;
esac
