"""Tests for logpipe.elasticsearch.options: settings from LOGPIPE_ELASTICSEARCH_*, checks, the client."""

from __future__ import annotations

from pathlib import Path

import pytest

import logpipe
from logpipe import elasticsearch as es
from logpipe.config import Secret
from logpipe.exceptions import ConfigError
from logpipe.exporters.elasticsearch import ElasticsearchExporter


class TestOptions:
    def _create(self, **env: str) -> ElasticsearchExporter:
        environ = {f"LOGPIPE_ELASTICSEARCH_{k.upper()}": v for k, v in env.items()}
        return logpipe.plugins.create("elasticsearch", environ=environ)  # type: ignore[return-value]

    def test_env_is_read(self) -> None:
        """Every setting comes from LOGPIPE_ELASTICSEARCH_<NAME>."""
        exporter = self._create(
            hosts="http://a:9200,https://b:9243",
            index_prefix="svc",
            replicas="0",
            field_mapping="dynamic",
            timeout="2.5",
        )
        o = exporter.options
        assert o.hosts == ("http://a:9200", "https://b:9243")
        assert (o.index_prefix, o.replicas, o.field_mapping, o.timeout) == ("svc", 0, "dynamic", 2.5)

    @pytest.mark.parametrize(
        ("env", "variable", "words"),
        [
            ({"hosts": "localhost:9200"}, "LOGPIPE_ELASTICSEARCH_HOSTS", "scheme"),
            ({"hosts": "http://localhost"}, "LOGPIPE_ELASTICSEARCH_HOSTS", "port"),
            ({"index_prefix": "Logs"}, "LOGPIPE_ELASTICSEARCH_INDEX_PREFIX", "lower case"),
            ({"index_prefix": "a*b"}, "LOGPIPE_ELASTICSEARCH_INDEX_PREFIX", "'*'"),
            ({"field_mapping": "nested"}, "LOGPIPE_ELASTICSEARCH_FIELD_MAPPING", "flattened"),
            ({"username": "elastic"}, "LOGPIPE_ELASTICSEARCH_PASSWORD", "is not"),
            ({"ca_certs": "/nonexistent/ca.pem"}, "LOGPIPE_ELASTICSEARCH_CA_CERTS", "no such file"),
            ({"timeout": "soon"}, "LOGPIPE_ELASTICSEARCH_TIMEOUT", "float"),
        ],
    )
    def test_bad_values_name_the_variable(self, env: dict[str, str], variable: str, words: str) -> None:
        """A bad setting fails at configure time with the variable's name in the message."""
        with pytest.raises(ConfigError) as info:
            self._create(**env)
        assert variable in str(info.value) and words in str(info.value)

    def test_tls_and_auth_reach_the_client(self, tmp_path: Path) -> None:
        """API key, basic auth and a CA file are handed to elasticsearch-py."""
        ca = tmp_path / "ca.pem"
        ca.write_text("not checked until a TLS handshake\n")
        options = es.ElasticsearchOptions(
            hosts=("https://es.example:9243",), username="u", password=Secret("p"), ca_certs=ca, timeout=3.0
        )
        client = es.make_client(options)
        node = client.transport.node_pool.get()
        assert node.config.scheme == "https" and node.config.ca_certs == str(ca)
        assert client._headers["authorization"].startswith("Basic ")
        keyed = es.make_client(es.ElasticsearchOptions(api_key=Secret("aWQ6a2V5")))
        assert keyed._headers["authorization"] == "ApiKey aWQ6a2V5"
        assert "aWQ6a2V5" not in repr(keyed_options := es.ElasticsearchOptions(api_key=Secret("aWQ6a2V5")))
        assert "p'" not in repr(options) and keyed_options.api_key is not None
