"""Tests for logpipe.kafkaclient: one place for Kafka client configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from logpipe import ConfigError, config
from logpipe.config import Secret, setting
from logpipe.kafkaclient import Connection, KafkaSecurity, check_security, kafka_python, librdkafka
from logpipe.kafkaerrors import explain


def test_servers_from_a_comma_list() -> None:
    c = Connection.of(" a:9092, [::1]:9093,", "me", variable="LOGPIPE_X")
    assert c.bootstrap_servers == ("a:9092", "[::1]:9093")
    assert c.addresses() == [("a", 9092), ("::1", 9093)]


@pytest.mark.parametrize("value", ["", "a", "a:b", "a:0", "a:70000"])
def test_bad_servers_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="LOGPIPE_SHIP_BOOTSTRAP_SERVERS"):
        Connection.of(value, variable="LOGPIPE_SHIP_BOOTSTRAP_SERVERS")


def test_both_libraries_get_the_same_connection() -> None:
    c = Connection(("a:1", "b:2"), "cid")
    assert kafka_python(c, acks="all") == {"bootstrap_servers": ["a:1", "b:2"], "client_id": "cid", "acks": "all"}
    assert librdkafka(c, **{"acks": "all"}) == {"bootstrap.servers": "a:1,b:2", "client.id": "cid", "acks": "all"}


# --- security settings --------------------------------------------------------


CA = Path(__file__).parent / "data" / "test-ca.pem"


@dataclass(frozen=True)
class ShipLike(KafkaSecurity):
    """An options class of a command that talks to Kafka: it inherits the one security definition."""

    topic: str = setting("logs", "Topic.")


def scram(**changes: object) -> KafkaSecurity:
    values: dict[str, object] = dict(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password=Secret("s3cr3t")
    )
    values.update(changes)
    return KafkaSecurity(**values)  # type: ignore[arg-type]


class TestKafkaSecuritySettings:
    def test_read_from_the_environment_under_any_prefix(self) -> None:
        """The same fields load as LOGPIPE_SHIP_* for a class that inherits them, the password as a Secret."""
        env = {
            "LOGPIPE_SHIP_SECURITY_PROTOCOL": "SASL_SSL",
            "LOGPIPE_SHIP_SASL_MECHANISM": "SCRAM-SHA-256",
            "LOGPIPE_SHIP_SASL_USERNAME": "app",
            "LOGPIPE_SHIP_SASL_PASSWORD": "none",
            "LOGPIPE_SHIP_SSL_CHECK_HOSTNAME": "false",
        }
        options = config.load(ShipLike, "LOGPIPE_SHIP_", environ=env)
        security = KafkaSecurity.of(options)
        assert security.sasl_password == Secret("none") and not security.ssl_check_hostname
        assert type(security) is KafkaSecurity and security.mechanism == "SCRAM-SHA-256"

    def test_defaults_are_plaintext(self) -> None:
        """Nothing set: PLAINTEXT, and the client configuration of both libraries is what it always was."""
        c = Connection(("a:1",), security=config.load(KafkaSecurity, "LOGPIPE_KAFKA_", environ={}))
        assert kafka_python(c) == {"bootstrap_servers": ["a:1"], "client_id": "logpipe"}
        assert librdkafka(c) == {"bootstrap.servers": "a:1", "client.id": "logpipe"}

    def test_secrets_never_print(self) -> None:
        """repr/str/format of the settings, the connection and the client configs hide the passwords."""
        c = Connection(("a:1",), security=scram(ssl_key_password=Secret("k3y")))
        texts = [repr(c), str(c), f"{c.security.sasl_password}", repr(kafka_python(c)), str(librdkafka(c))]
        assert not [t for t in texts if "s3cr3t" in t or "k3y" in t]
        assert kafka_python(c)["sasl_plain_password"] == "s3cr3t"  # the library gets the real value

    def test_settings_table_shows_no_values(self) -> None:
        """``logpipe exporters`` prints defaults: a password set in the environment never shows."""
        rows = config.describe(ShipLike, "LOGPIPE_SHIP_")
        password = next(r for r in rows if r.env == "LOGPIPE_SHIP_SASL_PASSWORD")
        assert (password.type, password.default) == ("secret (optional)", "(unset)")

    def test_bad_value_of_a_secret_is_not_echoed(self) -> None:
        """A parse error of a security setting names the variable; a password's value is masked."""
        with pytest.raises(ConfigError, match="LOGPIPE_KAFKA_SECURITY_PROTOCOL='TLS'"):
            config.load(KafkaSecurity, "LOGPIPE_KAFKA_", environ={"LOGPIPE_KAFKA_SECURITY_PROTOCOL": "TLS"})


class TestCheckSecurity:
    @pytest.mark.parametrize(
        ("security", "error"),
        [
            (scram(sasl_username=None), "SECURITY_PROTOCOL=SASL_SSL needs LOGPIPE_KAFKA_SASL_USERNAME"),
            (scram(sasl_password=None), "needs LOGPIPE_KAFKA_SASL_PASSWORD"),
            (KafkaSecurity(sasl_mechanism="PLAIN"), "LOGPIPE_KAFKA_SASL_MECHANISM set but .*PLAINTEXT"),
            (KafkaSecurity(ssl_cafile=CA), "LOGPIPE_KAFKA_SSL_CAFILE set but .*PLAINTEXT"),
            (scram(ssl_cafile=Path("/nonexistent/ca.pem")), "LOGPIPE_KAFKA_SSL_CAFILE='/nonexistent/ca.pem': cannot"),
            (scram(ssl_cafile=Path(__file__)), "LOGPIPE_KAFKA_SSL_CAFILE=.*not a PEM CA bundle"),
            (scram(ssl_certfile=CA), "LOGPIPE_KAFKA_SSL_CERTFILE is set but LOGPIPE_KAFKA_SSL_KEYFILE is not"),
            (scram(ssl_keyfile=CA), "LOGPIPE_KAFKA_SSL_KEYFILE is set but LOGPIPE_KAFKA_SSL_CERTFILE is not"),
            (scram(ssl_key_password=Secret("x")), "LOGPIPE_KAFKA_SSL_KEY_PASSWORD is set but"),
            (scram(ssl_certfile=CA, ssl_keyfile=CA), "SSL_CERTFILE / LOGPIPE_KAFKA_SSL_KEYFILE / .*cannot load"),
        ],
    )
    def test_impossible_combinations_name_the_variable(self, security: KafkaSecurity, error: str) -> None:
        """Each impossible combination is refused at configure time, naming the variable to fix."""
        with pytest.raises(ConfigError, match=error) as caught:
            check_security(security, "LOGPIPE_KAFKA_")
        assert "s3cr3t" not in str(caught.value)

    def test_connection_of_checks_under_the_prefix_of_its_variable(self) -> None:
        """Connection.of validates the security of an options object under the servers' prefix."""
        with pytest.raises(ConfigError, match="LOGPIPE_SHIP_SASL_USERNAME"):
            Connection.of(
                "a:1", variable="LOGPIPE_SHIP_BOOTSTRAP_SERVERS", security=ShipLike(security_protocol="SASL_SSL")
            )
        ok = Connection.of("a:1", variable="LOGPIPE_SHIP_BOOTSTRAP_SERVERS", security=ShipLike(topic="t"))
        assert ok.security == KafkaSecurity() and ok.prefix == "LOGPIPE_SHIP_"


class TestBuilders:
    def test_sasl_ssl_for_both_libraries(self) -> None:
        """SASL_SSL + SCRAM + CA + client certificate become each library's own option names."""
        s = scram(ssl_cafile=Path("/ca.pem"), ssl_certfile=Path("/c.pem"), ssl_keyfile=Path("/k.pem"))
        s = KafkaSecurity(**{**s.__dict__, "ssl_key_password": Secret("kp"), "ssl_check_hostname": False})
        c = Connection(("a:1",), "cid", security=s)
        assert kafka_python(c, acks="all") == {
            "bootstrap_servers": ["a:1"],
            "client_id": "cid",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "u",
            "sasl_plain_password": "s3cr3t",
            "ssl_check_hostname": False,
            "ssl_cafile": "/ca.pem",
            "ssl_certfile": "/c.pem",
            "ssl_keyfile": "/k.pem",
            "ssl_password": "kp",
            "acks": "all",
        }
        assert librdkafka(c) == {
            "bootstrap.servers": "a:1",
            "client.id": "cid",
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": "u",
            "sasl.password": "s3cr3t",
            "ssl.endpoint.identification.algorithm": "none",
            "ssl.ca.location": "/ca.pem",
            "ssl.certificate.location": "/c.pem",
            "ssl.key.location": "/k.pem",
            "ssl.key.password": "kp",
        }

    def test_sasl_mechanism_defaults_to_plain_and_hostnames_are_checked(self) -> None:
        """SASL without a mechanism is PLAIN; TLS checks host names unless told not to."""
        c = Connection(("a:1",), security=scram(sasl_mechanism=None))
        assert librdkafka(c)["sasl.mechanisms"] == "PLAIN"
        assert librdkafka(c)["ssl.endpoint.identification.algorithm"] == "https"
        assert kafka_python(c)["ssl_check_hostname"] is True


class TestExplain:
    """The words each library really uses (recorded against the secured broker of tests/test_security.py)."""

    @pytest.mark.parametrize(
        ("text", "names"),
        [
            (
                "sasl_ssl://127.0.0.1:29194/bootstrap: SASL authentication error: Authentication failed during "
                "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256",
                "LOGPIPE_SHIP_SASL_PASSWORD / LOGPIPE_SHIP_SASL_USERNAME: authentication failed",
            ),
            (
                "KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                "failed: self-signed certificate in certificate chain (_ssl.c:1006)",
                "LOGPIPE_SHIP_SSL_CAFILE:",
            ),
            (
                "KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                "failed: IP address mismatch, certificate is not valid for '127.0.0.1'. (_ssl.c:1006)",
                "LOGPIPE_SHIP_SSL_CHECK_HOSTNAME:",
            ),
            ("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate", "LOGPIPE_SHIP_SSL_CERTFILE"),
            ("[SSL: WRONG_VERSION_NUMBER] wrong version number", "LOGPIPE_SHIP_SECURITY_PROTOCOL:"),
            ("UNSUPPORTED_SASL_MECHANISM: unsupported SASL mechanism SCRAM-SHA-512", "LOGPIPE_SHIP_SASL_MECHANISM:"),
        ],
    )
    def test_library_words_become_the_setting(self, text: str, names: str) -> None:
        """Each recorded failure text is explained by the setting to fix, under the given prefix."""
        said = explain(text, "LOGPIPE_SHIP_")
        assert said is not None and said.startswith(names), said

    def test_unknown_words_and_secrets(self) -> None:
        """Text naming no cause gives None; a secret quoted by a library is cut out."""
        assert explain("NoBrokersAvailable", "LOGPIPE_KAFKA_") is None
        said = explain("authentication failed for password s3cr3t", "LOGPIPE_KAFKA_", scram())
        assert said is not None and "s3cr3t" not in said and "(SCRAM-SHA-512 as 'u')" in said
