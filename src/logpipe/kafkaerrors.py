"""When a Kafka client fails: which setting to fix, without ever showing a secret.

Both client libraries word connection failures vaguely: kafka-python says
"Unable to bootstrap" for a wrong password, an untrusted CA and a host name
mismatch alike; librdkafka words the last two identically. `explain` reads
an error's text and names the setting; when the words say nothing,
`failure_message` asks `probe`, which repeats the handshake with the
standard library (TLS, then SASL PLAIN or SCRAM, or an ApiVersions request)
and reports the first step that fails. Secrets are cut out of every text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import socket
import struct

from .kafkaclient import Connection, KafkaSecurity, _reveal, tls_context

__all__ = ["explain", "failure_message", "probe"]


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


def _handshake(connection: Connection, host: str, port: int, timeout: float) -> None:
    security = connection.security
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock: socket.socket = raw
        if security.tls:
            sock = tls_context(security).wrap_socket(raw, server_hostname=host)
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
