# logpipe's entry points. Each target creates its own virtualenv (.venv) and
# installs what it needs, so they work on a fresh machine with Python 3.10+,
# Java 17 and Maven (for the real Kafka / Elasticsearch servers of the tests).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-cluster test-fresh-boot docs site services-start services-stop bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The distribution was renamed logpipe -> logpipe-kafkalog: an old editable install of
	@# "logpipe" would register every exporter entry point twice.
	-$(PY) -m pip uninstall -q -y logpipe 2>/dev/null
	$(PY) -m pip install -q -e '.[test]'
	touch $@

## Run logpipe's main job on the embedded default: the example application logs
## through the chain into logs/logpipe.jsonl (no server needed).
demo: $(VENV)/.installed
	$(VENV)/bin/logpipe demo

## Run the whole test suite. Session fixtures start the real Kafka broker and
## Elasticsearch node (scripts/kafka.sh, scripts/elasticsearch.sh) and stop them.
test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

## The fault campaign (tests/cluster/, marker "cluster", left out of `make test`): kill -9 of
## brokers, a rolling restart, the tailer and the shipper, on a three-broker KRaft cluster that
## scripts/kafka-cluster.sh runs on 127.0.0.1:21092-21097 for the session. Prints the fault matrix
## of docs/reliability.md and writes it to fault-matrix.json in pytest's temp dir.
test-cluster: $(VENV)/.installed
	$(PY) -m pytest -m cluster tests/cluster $(PYTEST_ARGS)

## The same suite as if the machine had booted 30 s ago (time.monotonic() small, as in a new
## container): scripts/fresh-boot.sh runs pytest in a Linux time namespace.
test-fresh-boot: $(VENV)/.installed
	bash scripts/fresh-boot.sh $(PY) -m pytest $(PYTEST_ARGS)

## Regenerate the settings tables in docs/configuration.md from the code.
docs: $(VENV)/.installed
	$(PY) scripts/gen_config_docs.py

## Build the documentation site (mkdocs, material theme) into site/; any warning fails it.
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

site: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

## Run the benchmark suite (bench/): one table per workload on the terminal, and
## docs/benchmarks.md + docs/img/ written. Starts the Kafka broker and the
## Elasticsearch node when they are not running, and stops those it started.
## BENCH_ARGS="--only call_cost --quick" picks workloads and sizes (python -m bench --help).
BENCH_ARGS ?=
$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(PY) -m pip install -q -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed
	@kafka_was_up=0; es_was_up=0; \
	bash scripts/kafka.sh status >/dev/null 2>&1 && kafka_was_up=1; \
	bash scripts/elasticsearch.sh status >/dev/null 2>&1 && es_was_up=1; \
	stop_started() { \
	  [ $$kafka_was_up = 1 ] || bash scripts/kafka.sh stop || true; \
	  [ $$es_was_up = 1 ] || bash scripts/elasticsearch.sh stop || true; \
	}; \
	trap stop_started EXIT INT TERM; \
	bash scripts/kafka.sh start && bash scripts/elasticsearch.sh start && \
	$(PY) -m bench $(BENCH_ARGS)

services-start:
	bash scripts/kafka.sh start
	bash scripts/elasticsearch.sh start

services-stop:
	-bash scripts/kafka.sh stop
	-bash scripts/elasticsearch.sh stop

clean:
	rm -rf $(VENV) .services logs .pytest_cache site
