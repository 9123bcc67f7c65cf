"""Secure connections against real servers: a SASL_SSL / mTLS broker (scripts/kafka.sh with
LOGPIPE_SERVICES_KAFKA_SECURE=1) through both client libraries, and Elasticsearch behind nginx with
TLS, basic auth and API keys (scripts/es-front.sh). Every failure must name the setting to fix, and
no secret may show in any exception, repr or captured output."""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import KAFKA_CLIENTS, EsFront, SecureKafka
from logpipe import elasticsearch as es
from logpipe.config import Secret
from logpipe.kafkaclient import Connection, KafkaSecurity, kafka_python, librdkafka
from logpipe.kafkaerrors import failure_message

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PREFIX = "LOGPIPE_KAFKA_"


def sasl(broker: SecureKafka, mechanism: str = "SCRAM-SHA-256", **changes: Any) -> Connection:
    security = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username=broker.username,
        sasl_password=Secret(broker.password),
        ssl_cafile=broker.ca,
    )
    return Connection((broker.sasl_ssl,), "logpipe-test", f"{PREFIX}BOOTSTRAP_SERVERS", replace(security, **changes))


def mtls(broker: SecureKafka) -> Connection:
    security = KafkaSecurity(
        security_protocol="SSL",
        ssl_cafile=broker.ca,
        ssl_certfile=broker.client_cert,
        ssl_keyfile=broker.client_key,
        ssl_key_password=Secret(broker.client_key_password),
    )
    return Connection((broker.ssl,), "logpipe-test", f"{PREFIX}BOOTSTRAP_SERVERS", security)


def topic() -> str:
    return f"secure-{uuid.uuid4().hex[:10]}"


def round_trip(library: str, connection: Connection) -> bytes:
    """Produce one message through the kafkaclient builders, consume it back, return its value."""
    name, value = topic(), uuid.uuid4().hex.encode()
    if library == "kafka-python":
        from kafka import KafkaConsumer, KafkaProducer

        producer = KafkaProducer(**kafka_python(connection, acks="all"))
        try:
            producer.send(name, value).get(timeout=60)
        finally:
            producer.close()
        consumer = KafkaConsumer(
            name,
            **kafka_python(connection, group_id=f"g-{name}", auto_offset_reset="earliest", consumer_timeout_ms=30000),
        )
        try:
            return next(iter(consumer)).value  # type: ignore[no-any-return]
        finally:
            consumer.close()
    from confluent_kafka import Consumer, Producer

    delivered: list[Any] = []
    p = Producer(librdkafka(connection, acks="all"))
    p.produce(name, value, on_delivery=lambda err, msg: delivered.append(err))
    p.flush(60)
    assert delivered == [None]
    c = Consumer(librdkafka(connection, **{"group.id": f"g-{name}", "auto.offset.reset": "earliest"}))
    try:
        c.subscribe([name])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = c.poll(1.0)
            if message is not None and message.error() is None:
                return message.value()  # type: ignore[no-any-return]
        raise AssertionError("nothing consumed")
    finally:
        c.close()


def first_failure(library: str, connection: Connection) -> object:
    """The error a client of *library* reports for *connection* (that must not work)."""
    if library == "kafka-python":
        from kafka import KafkaProducer

        with pytest.raises(Exception) as caught:
            producer = KafkaProducer(**kafka_python(connection, bootstrap_timeout_ms=4000, max_block_ms=4000))
            producer.send(topic(), b"x").get(timeout=10)
        return caught.value
    from confluent_kafka import Producer

    errors: list[Any] = []
    p = Producer(librdkafka(connection, error_cb=errors.append, **{"message.timeout.ms": 5000}))
    p.produce(topic(), b"x")
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    p.purge()
    p.flush(1)
    assert errors, "librdkafka reported no error"
    return errors[0]


@pytest.fixture
def untrusted_ca(tmp_path: Path) -> Path:
    """A CA made just now: the broker's certificate is not signed by it."""
    ca = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "other.key"),
         "-subj", "/CN=not the broker's CA", "-days", "1", "-out", str(ca)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return ca


@pytest.fixture
def everything_captured(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Texts a test adds to, plus all output and log records: none may contain a secret (checked by the test)."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    yield texts
    out, err = capfd.readouterr()
    texts += [out, err, caplog.text]


def assert_no_secret(texts: list[str], *secrets: str) -> None:
    for secret in secrets:
        leaked = [t for t in texts if secret in t]
        assert not leaked, f"secret shown in: {leaked[0][:300]!r}"


class TestKafkaDelivers:
    @pytest.mark.parametrize("library", KAFKA_CLIENTS)
    @pytest.mark.parametrize("mechanism", MECHANISMS)
    def test_sasl_ssl_mechanism_round_trip(self, secure_kafka: SecureKafka, library: str, mechanism: str) -> None:
        """Each SASL mechanism over TLS produces and consumes a message, with either client library."""
        assert round_trip(library, sasl(secure_kafka, mechanism)) is not None

    @pytest.mark.parametrize("library", KAFKA_CLIENTS)
    def test_mutual_tls_with_an_encrypted_key(self, secure_kafka: SecureKafka, library: str) -> None:
        """A client certificate whose key has a passphrase gets through a listener that requires one."""
        assert round_trip(library, mtls(secure_kafka)) is not None


class TestKafkaFailuresNameTheSetting:
    @pytest.mark.parametrize("library", KAFKA_CLIENTS)
    def test_wrong_password(self, secure_kafka: SecureKafka, library: str, everything_captured: list[str]) -> None:
        """A wrong password is reported as such, naming SASL_PASSWORD / SASL_USERNAME, and never printed."""
        wrong = f"wrong-{uuid.uuid4().hex}"
        connection = sasl(secure_kafka, sasl_password=Secret(wrong))
        error = first_failure(library, connection)
        message = failure_message(error, connection)
        assert message.startswith(f"{PREFIX}SASL_PASSWORD / {PREFIX}SASL_USERNAME: authentication failed"), message
        everything_captured += [message, str(error), repr(error), repr(connection), repr(kafka_python(connection))]
        everything_captured += [repr(librdkafka(connection)), str(connection.security)]
        assert_no_secret(everything_captured, wrong)

    @pytest.mark.parametrize("library", KAFKA_CLIENTS)
    def test_untrusted_ca(self, secure_kafka: SecureKafka, library: str, untrusted_ca: Path) -> None:
        """A broker certificate not signed by SSL_CAFILE's CA names SSL_CAFILE."""
        connection = sasl(secure_kafka, ssl_cafile=untrusted_ca)
        message = failure_message(first_failure(library, connection), connection)
        assert message.startswith(f"{PREFIX}SSL_CAFILE: the broker's certificate is not signed by a trusted CA"), (
            message
        )

    @pytest.mark.parametrize("library", KAFKA_CLIENTS)
    def test_hostname_mismatch(self, secure_kafka: SecureKafka, library: str) -> None:
        """A certificate for another name names SSL_CHECK_HOSTNAME; turning the check off gets through."""
        connection = replace(sasl(secure_kafka), bootstrap_servers=(secure_kafka.mismatch,))
        message = failure_message(first_failure(library, connection), connection)
        assert message.startswith(f"{PREFIX}SSL_CHECK_HOSTNAME:"), message
        unchecked = replace(connection, security=replace(connection.security, ssl_check_hostname=False))
        assert round_trip(library, unchecked) is not None

    def test_the_password_never_shows(self, secure_kafka: SecureKafka, everything_captured: list[str]) -> None:
        """The real password is in no repr, message, log record or output of a session that used it."""
        connection = sasl(secure_kafka, "SCRAM-SHA-512")
        for library in KAFKA_CLIENTS:
            round_trip(library, connection)
        everything_captured += [repr(connection), str(connection), repr(kafka_python(connection))]
        everything_captured += [repr(librdkafka(connection)), f"{connection.security.sasl_password}"]
        assert_no_secret(everything_captured, secure_kafka.password, secure_kafka.client_key_password)


def front_options(front: EsFront, **changes: Any) -> es.ElasticsearchOptions:
    options = es.ElasticsearchOptions(hosts=(front.url,), ca_certs=front.ca, max_retries=0, timeout=10.0)
    return replace(options, **changes)


@pytest.mark.elasticsearch
class TestElasticsearchFront:
    def test_basic_auth(self, es_front: EsFront) -> None:
        """The right user and password get through TLS to the node."""
        client = es.make_client(front_options(es_front, username=es_front.user, password=es_front.password))
        assert client.info()["version"]["number"].startswith("8.")

    def test_api_key(self, es_front: EsFront) -> None:
        """The right API key (base64 id:key) gets through."""
        client = es.make_client(front_options(es_front, api_key=es_front.api_key))
        assert client.info()["version"]["number"].startswith("8.")

    @pytest.mark.parametrize(
        "credentials",
        [{"username": "logpipe", "password": "not-it"}, {"api_key": "bm9wZTpub3Bl"}, {}],
        ids=["wrong-password", "wrong-api-key", "none"],
    )
    def test_wrong_credentials_are_401(self, es_front: EsFront, credentials: dict[str, str]) -> None:
        """A wrong password, a wrong API key or none at all is refused with 401."""
        from elasticsearch import AuthenticationException

        client = es.make_client(front_options(es_front, **credentials))
        with pytest.raises(AuthenticationException) as caught:
            client.info()
        assert caught.value.meta.status == 401
        assert es_front.password not in str(caught.value)

    def test_wrong_ca_fails_verification(self, es_front: EsFront, untrusted_ca: Path) -> None:
        """A CA that did not sign the front's certificate fails TLS verification."""
        from elasticsearch import ConnectionError as EsConnectionError

        client = es.make_client(front_options(es_front, ca_certs=untrusted_ca, api_key=es_front.api_key))
        with pytest.raises(EsConnectionError) as caught:  # elasticsearch.SSLError, "TLS error"
            client.info()
        causes = f"{caught.value!r} {caught.value.errors!r}"
        assert "CERTIFICATE_VERIFY_FAILED" in causes or "certificate verify failed" in causes, causes
