"""The Kafka security flags of ``logpipe ship`` and ``logpipe tail``: one definition for both commands.

The settings are `logpipe.kafkaclient.KafkaSecurity` (``LOGPIPE_SHIP_*`` for
ship, ``LOGPIPE_KAFKA_*`` for tail, whose records go through the Kafka
exporter). Passwords have no flag on purpose: a command line is visible to
every user of the machine (``ps``), so they come from the environment only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["FLAGS", "security_options", "take_security"]

F = TypeVar("F", bound=Callable[..., Any])

#: Setting -> flag, for errors that name what the user typed.
FLAGS = {
    "security_protocol": "--security-protocol",
    "sasl_mechanism": "--sasl-mechanism",
    "sasl_username": "--sasl-username",
    "ssl_cafile": "--ssl-cafile",
    "ssl_certfile": "--ssl-certfile",
    "ssl_keyfile": "--ssl-keyfile",
    "ssl_check_hostname": "--ssl-check-hostname",
}


def security_options(prefix: str) -> Callable[[F], F]:
    """Add the security flags; *prefix* (``LOGPIPE_SHIP_`` / ``LOGPIPE_KAFKA_``) names their variables in the help."""
    flags = [
        click.option(
            "--security-protocol",
            type=click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]),
            help=f"Kafka security [{prefix}SECURITY_PROTOCOL].",
        ),
        click.option(
            "--sasl-mechanism",
            type=click.Choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
            help=f"SASL mechanism [{prefix}SASL_MECHANISM].",
        ),
        click.option(
            "--sasl-username", help=f"SASL user; the password only from {prefix}SASL_PASSWORD [{prefix}SASL_USERNAME]."
        ),
        click.option("--ssl-cafile", help=f"CA bundle (PEM) for the broker certificates [{prefix}SSL_CAFILE]."),
        click.option("--ssl-certfile", help=f"Client certificate (PEM), mutual TLS [{prefix}SSL_CERTFILE]."),
        click.option("--ssl-keyfile", help=f"Client key (PEM) [{prefix}SSL_KEYFILE]."),
        click.option(
            "--ssl-check-hostname/--no-ssl-check-hostname",
            default=None,
            help=f"Check the broker certificate's host name (default on) [{prefix}SSL_CHECK_HOSTNAME].",
        ),
    ]

    def decorate(command: F) -> F:
        for flag in reversed(flags):
            command = flag(command)
        return command

    return decorate


def take_security(flags: dict[str, Any]) -> dict[str, Any]:
    """Remove the security flags from a command's keyword arguments; those given, as setting overrides."""
    return {name: value for name in FLAGS if (value := flags.pop(name, None)) is not None}
