"""The one place that turns settings into Kafka client configuration, for both client libraries.

logpipe talks to Kafka from several places: the Kafka exporter (in the
application or its child process), spool replay through it, ``logpipe
tail``, ``logpipe ship``'s consumer (kafka-python or confluent-kafka) and its
dead-letter producer. How to *reach* the cluster (bootstrap servers, client
id, and the security settings that come with them) is the same for all of
them, and is built here only: `kafka_python` gives keyword arguments for
kafka-python's ``KafkaProducer``/``KafkaConsumer``, `librdkafka` a
configuration dict for confluent-kafka. What each client *does* (acks,
linger, group, fetch sizes) stays with its user and is merged on top.

Security is one settings group, `KafkaSecurity`: every options class that
talks to Kafka inherits it, so ``LOGPIPE_KAFKA_SASL_PASSWORD``,
``LOGPIPE_SHIP_SASL_PASSWORD`` ... are the same definition under different
prefixes. `check_security` validates a group at configure time, and when a
client fails, `explain` (from the library's error text) and `probe` (a
standard-library TLS + SASL handshake, for errors a library words vaguely)
turn the failure into a message naming the setting to fix. Passwords are
`~logpipe.config.Secret` values: they never show in a ``repr``, a message or
the ``logpipe exporters`` table.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import Secret, setting
from .exceptions import ConfigError

__all__ = [
    "CLIENTS",
    "Connection",
    "KafkaClient",
    "KafkaSecurity",
    "SaslMechanism",
    "SecurityProtocol",
    "check_security",
    "choose_client",
    "kafka_python",
    "librdkafka",
    "parse_servers",
    "tls_context",
]

#: A client library setting: ``auto`` (confluent-kafka when installed, else kafka-python) or one of `CLIENTS`.
KafkaClient = Literal["auto", "kafka-python", "confluent-kafka"]

#: The client libraries logpipe talks to Kafka with, and the module each one needs.
CLIENTS: dict[str, str] = {"kafka-python": "kafka", "confluent-kafka": "confluent_kafka"}


def choose_client(choice: str, variable: str, *, extras: dict[str, str]) -> str:
    """The client library for *choice* (``auto`` prefers confluent-kafka, librdkafka's C client);
    `ConfigError` naming *variable* when it is unknown or not installed, with the extra of logpipe's
    distribution (*extras*: library -> extra) that installs it."""
    if choice not in ("auto", *CLIENTS):
        raise ConfigError(f"{variable}={choice!r}: expected auto, {', '.join(CLIENTS)}")
    if choice == "auto":
        return "confluent-kafka" if _importable("confluent_kafka") or not _importable("kafka") else "kafka-python"
    if not _importable(CLIENTS[choice]):
        from .plugins import DISTRIBUTION  # plugins imports the exporters, which import this module

        raise ConfigError(
            f"{variable}={choice}: {choice} is not installed (pip install '{DISTRIBUTION}[{extras[choice]}]')"
        )
    return choice


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


#: How a client talks to a broker: TLS or not, SASL or not.
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]

#: The SASL mechanisms logpipe supports (both client libraries implement them).
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SASL settings of one Kafka client; inherited by every options class that talks to Kafka.

    The exporter reads them as ``LOGPIPE_KAFKA_*``, ``logpipe ship`` as
    ``LOGPIPE_SHIP_*``: one definition, one validation (`check_security`),
    one translation per client library (`kafka_python`, `librdkafka`).
    """

    security_protocol: SecurityProtocol = setting(
        "PLAINTEXT", "Kafka security: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (TLS + SASL)."
    )
    sasl_mechanism: SaslMechanism | None = setting(
        None, "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default PLAIN with a SASL_* protocol)."
    )
    sasl_username: str | None = setting(None, "SASL user (needed with SASL_PLAINTEXT / SASL_SSL).")
    sasl_password: Secret | None = setting(None, "SASL password (never printed).")
    ssl_cafile: Path | None = setting(
        None, "CA bundle (PEM) the broker certificates are checked against (default: the system's CAs)."
    )
    ssl_certfile: Path | None = setting(None, "Client certificate (PEM) for mutual TLS; needs SSL_KEYFILE.")
    ssl_keyfile: Path | None = setting(None, "Private key (PEM) of the client certificate.")
    ssl_key_password: Secret | None = setting(None, "Passphrase of an encrypted SSL_KEYFILE (never printed).")
    ssl_check_hostname: bool = setting(
        True, "Check that the broker certificate names the host connected to (false only for tests)."
    )

    @classmethod
    def of(cls, options: KafkaSecurity) -> KafkaSecurity:
        """The security group alone, from any options object that inherits it."""
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls)})

    @property
    def tls(self) -> bool:
        """True when the connection is encrypted (SSL or SASL_SSL)."""
        return self.security_protocol in _TLS_PROTOCOLS

    @property
    def sasl(self) -> bool:
        """True when the client authenticates with SASL."""
        return self.security_protocol in _SASL_PROTOCOLS

    @property
    def mechanism(self) -> SaslMechanism:
        """The SASL mechanism in effect (PLAIN unless set)."""
        return self.sasl_mechanism or "PLAIN"


PLAINTEXT = KafkaSecurity()


def check_security(security: KafkaSecurity, prefix: str) -> None:
    """Raise `ConfigError` naming the ``<prefix>*`` variable for settings that cannot work together."""
    p = prefix
    protocol = f"{p}SECURITY_PROTOCOL={security.security_protocol}"
    if security.sasl:
        absent = [f"{p}{n}" for n in ("SASL_USERNAME", "SASL_PASSWORD") if not getattr(security, n.lower())]
        if absent:
            raise ConfigError(f"{protocol} needs {' and '.join(absent)}")
    else:
        sasl_only = [
            f"{p}{n}" for n in ("SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD") if getattr(security, n.lower())
        ]
        if sasl_only:
            raise ConfigError(f"{', '.join(sasl_only)} set but {protocol}: use SASL_SSL (or SASL_PLAINTEXT)")
    if not security.tls:
        tls_only = [
            n for n in ("SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE", "SSL_KEY_PASSWORD") if getattr(security, n.lower())
        ]
        if tls_only:
            raise ConfigError(f"{', '.join(p + n for n in tls_only)} set but {protocol}: use SSL or SASL_SSL")
        return
    if security.ssl_cafile is not None:
        _check_readable(security.ssl_cafile, f"{p}SSL_CAFILE")
        try:
            ssl.create_default_context(cafile=str(security.ssl_cafile))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{p}SSL_CAFILE={str(security.ssl_cafile)!r}: not a PEM CA bundle ({exc})") from None
    if (security.ssl_certfile is None) != (security.ssl_keyfile is None):
        pair = ("SSL_CERTFILE", "SSL_KEYFILE")
        given, missing = pair if security.ssl_keyfile is None else pair[::-1]
        raise ConfigError(f"{p}{given} is set but {p}{missing} is not (mutual TLS needs both)")
    if security.ssl_key_password and security.ssl_keyfile is None:
        raise ConfigError(f"{p}SSL_KEY_PASSWORD is set but {p}SSL_KEYFILE is not")
    if security.ssl_certfile is not None and security.ssl_keyfile is not None:
        _check_readable(security.ssl_certfile, f"{p}SSL_CERTFILE")
        _check_readable(security.ssl_keyfile, f"{p}SSL_KEYFILE")
        try:
            tls_context(security)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{p}SSL_CERTFILE / {p}SSL_KEYFILE / {p}SSL_KEY_PASSWORD: cannot load the client certificate "
                f"and key ({exc.reason or exc}; a wrong passphrase looks like this too)"
            ) from None


def _check_readable(path: Path, variable: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(f"{variable}={str(path)!r}: cannot read it ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class Connection:
    """How to reach one Kafka cluster: servers, client id and security.

    *variable* names the setting the servers came from (e.g.
    ``LOGPIPE_KAFKA_BOOTSTRAP_SERVERS``); its prefix (`prefix`) is the one the
    security settings are named with in errors.
    """

    bootstrap_servers: tuple[str, ...]
    client_id: str = "logpipe"
    variable: str = "LOGPIPE_KAFKA_BOOTSTRAP_SERVERS"
    security: KafkaSecurity = field(default=PLAINTEXT)

    @classmethod
    def of(
        cls,
        servers: str | Sequence[str],
        client_id: str = "logpipe",
        *,
        variable: str,
        security: KafkaSecurity | None = None,
    ) -> Connection:
        """A connection from a comma list or a sequence of ``host:port``, and (optionally) an options object
        that inherits `KafkaSecurity`; raises `ConfigError` naming the variable to fix."""
        connection = cls(parse_servers(servers, variable), client_id, variable)
        if security is None:
            return connection
        security = KafkaSecurity.of(security)
        check_security(security, connection.prefix)
        return dataclasses.replace(connection, security=security)

    @property
    def prefix(self) -> str:
        """``LOGPIPE_KAFKA_`` for ``LOGPIPE_KAFKA_BOOTSTRAP_SERVERS``: where the security settings are read."""
        return self.variable.removesuffix("BOOTSTRAP_SERVERS")

    def addresses(self) -> list[tuple[str, int]]:
        """``[(host, port), ...]`` of the bootstrap servers (IPv6 brackets removed)."""
        result = []
        for item in self.bootstrap_servers:
            host, _, port = item.rpartition(":")
            result.append((host.strip("[]") or "localhost", int(port)))
        return result


def parse_servers(servers: str | Sequence[str], variable: str) -> tuple[str, ...]:
    """``"a:9092, [::1]:9093"`` -> ``("a:9092", "[::1]:9093")``; else `ConfigError` naming *variable*."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    result = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{variable}: {item!r} is not host:port")
        result.append(f"{host}:{port}" if host else f"localhost:{port}")
    if not result:
        raise ConfigError(f"{variable}={servers!r}: expected host:port[,host:port]")
    return tuple(result)


class _ClientConfig(dict[str, Any]):
    """A client configuration whose ``repr`` hides passwords (should anyone log it)."""

    _SECRET = re.compile(r"password", re.IGNORECASE)

    def __repr__(self) -> str:
        shown = {k: "***" if self._SECRET.search(k) and v is not None else v for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__


def _reveal(secret: Secret | None) -> str | None:
    return secret.reveal() if secret is not None else None


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def kafka_python(connection: Connection, **client: Any) -> dict[str, Any]:
    """Keyword arguments for kafka-python's ``KafkaProducer``/``KafkaConsumer``: *client* merged over the connection."""
    config: dict[str, Any] = {
        "bootstrap_servers": list(connection.bootstrap_servers),
        "client_id": connection.client_id,
    }
    s = connection.security
    if s.security_protocol != "PLAINTEXT":
        config["security_protocol"] = s.security_protocol
    if s.sasl:
        config.update(
            sasl_mechanism=s.mechanism,
            sasl_plain_username=s.sasl_username,
            sasl_plain_password=_reveal(s.sasl_password),
        )
    if s.tls:
        config["ssl_check_hostname"] = s.ssl_check_hostname
        optional = {
            "ssl_cafile": _path(s.ssl_cafile),
            "ssl_certfile": _path(s.ssl_certfile),
            "ssl_keyfile": _path(s.ssl_keyfile),
            "ssl_password": _reveal(s.ssl_key_password),
        }
        config.update({k: v for k, v in optional.items() if v is not None})
    return _ClientConfig({**config, **client})


def librdkafka(connection: Connection, **client: Any) -> dict[str, Any]:
    """A confluent-kafka configuration dict: *client* (librdkafka property names) merged over the connection."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(connection.bootstrap_servers),
        "client.id": connection.client_id,
    }
    s = connection.security
    if s.security_protocol != "PLAINTEXT":
        config["security.protocol"] = s.security_protocol
    if s.sasl:
        config.update(
            {
                "sasl.mechanisms": s.mechanism,
                "sasl.username": s.sasl_username,
                "sasl.password": _reveal(s.sasl_password),
            }
        )
    if s.tls:
        config["ssl.endpoint.identification.algorithm"] = "https" if s.ssl_check_hostname else "none"
        optional = {
            "ssl.ca.location": _path(s.ssl_cafile),
            "ssl.certificate.location": _path(s.ssl_certfile),
            "ssl.key.location": _path(s.ssl_keyfile),
            "ssl.key.password": _reveal(s.ssl_key_password),
        }
        config.update({k: v for k, v in optional.items() if v is not None})
    return _ClientConfig({**config, **client})


def tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The TLS context *security* describes (its CA, host name check, client certificate)."""
    context = ssl.create_default_context(cafile=_path(security.ssl_cafile))
    context.check_hostname = security.ssl_check_hostname
    if security.ssl_certfile is not None:
        context.load_cert_chain(
            str(security.ssl_certfile), _path(security.ssl_keyfile), _reveal(security.ssl_key_password)
        )
    return context
