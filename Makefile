# logpipe's entry points. Each target creates its own virtualenv (.venv) and
# installs what it needs, so they work on a fresh machine with Python 3.10+,
# Java 17 and Maven (for the real Kafka / Elasticsearch servers of the tests).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test docs services-start services-stop bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
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

## Regenerate the settings tables in docs/configuration.md from the code.
docs: $(VENV)/.installed
	$(PY) scripts/gen_config_docs.py

services-start:
	bash scripts/kafka.sh start
	bash scripts/elasticsearch.sh start

services-stop:
	-bash scripts/kafka.sh stop
	-bash scripts/elasticsearch.sh stop

clean:
	rm -rf $(VENV) .services logs .pytest_cache
