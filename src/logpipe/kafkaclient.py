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

import base64
import dataclasses
import hashlib
import hmac
import os
import re
import socket
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import Secret, setting
from .exceptions import ConfigError

__all__ = [
    "Connection",
    "KafkaSecurity",
    "SaslMechanism",
    "SecurityProtocol",
    "check_security",
    "explain",
    "failure_message",
    "kafka_python",
    "librdkafka",
    "parse_servers",
    "probe",
]

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
            _tls_context(security)
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


# --- when a client fails: which setting to fix -------------------------------

# (pattern over the library's error text, what it means); the first match wins.
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), meaning)
    for pattern, meaning in (
        (
            r"unsupported ?sasl ?mechanism|does not support .*sasl mechanism|no common sasl mechanism"
            r"|unsupported sasl mechanism",
            "mechanism",
        ),
        (
            r"authentication failed|invalid credentials|SaslAuthenticationFailed|_AUTHENTICATION"
            r"|SASL authentication error",
            "credentials",
        ),
        (r"hostname mismatch|ip address mismatch|certificate is not valid for|doesn't match", "hostname"),
        (
            r"certificate required|alert bad certificate|bad_certificate|alert unknown ca|ALERT_UNKNOWN_CA",
            "client-cert",
        ),
        (
            r"certificate verify failed|CERTIFICATE_VERIFY_FAILED|unable to get local issuer|self[- ]signed certificate"
            r"|could not be verified",
            "ca",
        ),
        (
            r"wrong version number|record layer failure|packet length too long|unexpected[_ ]eof[_ ]while[_ ]reading"
            r"|incorrect security\.protocol|connecting to a (SSL|PLAINTEXT) listener|another security protocol",
            "protocol",
        ),
    )
)


def _error_text(error: BaseException | object) -> str:
    """The words of an error of either library (confluent-kafka wraps a ``KafkaError`` in its exception)."""
    parts = [] if isinstance(error, _KafkaReply) else [type(error).__name__]
    inner = error.args[0] if isinstance(error, BaseException) and error.args else error
    text = inner.str() if hasattr(inner, "str") and callable(inner.str) else str(error)
    name = inner.name() if hasattr(inner, "name") and callable(inner.name) else ""
    parts += [name, text]
    verify = getattr(error, "verify_message", None)
    if verify and str(verify) not in text:
        parts.append(str(verify))
    return " ".join(p for p in parts if p)


def explain(error: BaseException | object, prefix: str, security: KafkaSecurity | None = None) -> str | None:
    """A message naming the ``<prefix>*`` setting behind a Kafka client failure, or None when the words say nothing.

    *error* is an exception of kafka-python, of confluent-kafka (or its
    ``KafkaError``), of `ssl`, or a string. With *security*, the mechanism and
    user are named, and its secrets are cut out of the quoted library text.
    """
    text = _error_text(error) if not isinstance(error, str) else error
    cause = next((meaning for pattern, meaning in _CAUSES if pattern.search(text)), None)
    if cause is None:
        return None
    detail = _scrub(_shorten(text), security)
    p = prefix
    who = f" ({security.mechanism} as {security.sasl_username!r})" if security is not None and security.sasl else ""
    messages = {
        "mechanism": f"{p}SASL_MECHANISM: the broker does not accept this SASL mechanism{who}",
        "credentials": f"{p}SASL_PASSWORD / {p}SASL_USERNAME: authentication failed{who}",
        "hostname": f"{p}SSL_CHECK_HOSTNAME: the broker's certificate does not name the host connected to "
        f"(connect by a name in the certificate, or fix the certificate)",
        "client-cert": f"{p}SSL_CERTFILE / {p}SSL_KEYFILE: the broker refused the client certificate (or needs one)",
        "ca": f"{p}SSL_CAFILE: the broker's certificate is not signed by a trusted CA",
        "protocol": f"{p}SECURITY_PROTOCOL: the listener speaks another protocol (TLS vs plaintext)",
    }
    return f"{messages[cause]}: {detail}"


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _scrub(text: str, security: KafkaSecurity | None) -> str:
    if security is None:
        return text
    for secret in (security.sasl_password, security.ssl_key_password):
        if secret:
            text = text.replace(secret.reveal(), "***")
    return text


def failure_message(error: BaseException | object, connection: Connection, timeout: float = 5.0) -> str:
    """The clearest message for a client failure: the library's words when they name a cause, else a `probe`.

    kafka-python reports a wrong password or an untrusted certificate only as
    "Unable to bootstrap", and librdkafka words an untrusted CA and a host
    name mismatch alike; the probe's own handshake tells them apart.
    """
    prefix, security = connection.prefix, connection.security
    said = explain(error, prefix, security)
    if said is not None and not said.startswith(f"{prefix}SSL_CAFILE:"):  # librdkafka: CA or host name
        return said
    found = probe(connection, timeout) if security.tls or security.sasl else None
    if found is not None:
        return found
    return said or f"kafka {','.join(connection.bootstrap_servers)}: {_scrub(_shorten(_error_text(error)), security)}"


# --- probe: one standard-library handshake, to name what fails ----------------


def probe(connection: Connection, timeout: float = 5.0) -> str | None:
    """Connect to the bootstrap servers as the clients would (TLS, then SASL or an ApiVersions request).

    Returns None when one server accepted everything, else a message naming
    the setting to fix (see `explain`). Needs no client library.
    """
    problems: list[str] = []
    for host, port in connection.addresses():
        try:
            _handshake(connection, host, port, timeout)
            return None
        except (OSError, _KafkaReply) as exc:
            said = explain(exc, connection.prefix, connection.security)
            if said is not None:
                return said
            problems.append(f"{host}:{port}: {_scrub(_shorten(str(exc) or type(exc).__name__), connection.security)}")
    return f"{connection.variable}: no broker answered ({'; '.join(problems)})"


class _KafkaReply(Exception):
    """A broker's error answer during the probe."""


def _tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=_path(security.ssl_cafile))
    context.check_hostname = security.ssl_check_hostname
    if security.ssl_certfile is not None:
        context.load_cert_chain(
            str(security.ssl_certfile), _path(security.ssl_keyfile), _reveal(security.ssl_key_password)
        )
    return context


def _handshake(connection: Connection, host: str, port: int, timeout: float) -> None:
    security = connection.security
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock: socket.socket = raw
        if security.tls:
            sock = _tls_context(security).wrap_socket(raw, server_hostname=host)
        wire = _Wire(sock, connection.client_id)
        if security.sasl:
            _sasl(wire, security)
        else:
            wire.call(18, 0, b"")  # ApiVersions: the listener speaks Kafka, and (TLS 1.3) accepted our certificate


class _Wire:
    """Kafka request/response framing over one socket (request header v1, response header v0)."""

    def __init__(self, sock: socket.socket, client_id: str) -> None:
        self.sock, self.client_id, self.correlation = sock, client_id.encode(), 0

    def call(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        request = struct.pack(">hhih", api_key, version, self.correlation, len(self.client_id)) + self.client_id + body
        self.sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", self._read(4))[0]
        reply = self._read(size)
        return reply[4:]  # past the correlation id

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(
                    "the broker closed the connection (a listener of another security protocol, "
                    "or a client certificate it refused)"
                )
            data += chunk
        return data


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">h", len(data)) + data


_ERRORS = {33: "UNSUPPORTED_SASL_MECHANISM", 34: "ILLEGAL_SASL_STATE", 58: "SASL_AUTHENTICATION_FAILED"}


def _sasl(wire: _Wire, security: KafkaSecurity) -> None:
    mechanism = security.mechanism
    reply = wire.call(17, 1, _string(mechanism))  # SaslHandshake v1
    (error,) = struct.unpack(">h", reply[:2])
    if error:
        raise _KafkaReply(f"{_ERRORS.get(error, error)}: unsupported SASL mechanism {mechanism}")
    user = security.sasl_username or ""
    password = _reveal(security.sasl_password) or ""
    if mechanism == "PLAIN":
        _authenticate(wire, f"\0{user}\0{password}".encode())
        return
    digest = "sha256" if mechanism == "SCRAM-SHA-256" else "sha512"
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
    server_first = _authenticate(wire, f"n,,{first_bare}".encode()).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    if not fields.get("r", "").startswith(nonce):
        raise _KafkaReply("SCRAM: the broker's nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", digest)
    stored_key = hashlib.new(digest, client_key).digest()
    final_bare = f"c=biws,r={fields['r']}"
    signature = hmac.digest(stored_key, f"{first_bare},{server_first},{final_bare}".encode(), digest)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    _authenticate(wire, f"{final_bare},p={proof}".encode())


def _authenticate(wire: _Wire, token: bytes) -> bytes:
    reply = wire.call(36, 1, struct.pack(">i", len(token)) + token)  # SaslAuthenticate v1
    error, size = struct.unpack(">hh", reply[:4])
    message = reply[4 : 4 + size].decode(errors="replace") if size > 0 else ""
    if error:
        raise _KafkaReply(f"{_ERRORS.get(error, error)}: {message or 'SASL authentication failed'}")
    rest = reply[4 + max(size, 0) :]
    (length,) = struct.unpack(">i", rest[:4])
    return rest[4 : 4 + length] if length > 0 else b""
