"""Settings: one typed object per concern, read once from arguments and env vars.

Every setting is a dataclass field declared with `setting`. Its environment
variable is derived (``<PREFIX><FIELD NAME IN CAPS>``), so the core settings
live under ``LOGPIPE_`` and an exporter named ``kafka`` reads
``LOGPIPE_KAFKA_<SETTING>``. One generic parser turns strings into the field's
type and reports mistakes as `ConfigError` naming the variable; explicit Python
arguments win over the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from .exceptions import ConfigError

__all__ = [
    "CORE_PREFIX",
    "Overflow",
    "Secret",
    "reveal",
    "Settings",
    "SettingDoc",
    "at_least",
    "describe",
    "env_name",
    "load",
    "setting",
]

T = TypeVar("T")

CORE_PREFIX = "LOGPIPE_"

#: What a full queue does with the next record; see `logpipe.dispatch`.
Overflow = Literal["block", "drop_newest", "drop_oldest", "spill"]

Check = Callable[[Any], "str | None"]


def reveal(value: Secret | str | None) -> str | None:
    """The plain value of a secret setting; a plain ``str`` (options built in Python) passes as it is."""
    return value.reveal() if isinstance(value, Secret) else value


class Secret:
    """A setting's value that must never be printed: a password, a key's passphrase, an API key.

    ``str``, ``repr`` and f-strings show ``***``; `reveal` gives the value to
    the one place that hands it to a client library. Equal to another
    `Secret` with the same value, so settings objects still compare.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        """The value itself, for the client library only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return format("***", spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # Settings travel to an exporter's child process by pickle.
        return (Secret, (self._value,))


def setting(default: Any, help: str, *, check: Check | None = None) -> Any:
    """Declare one setting: its default, a one-line help, an optional check.

    *check* gets the parsed value and returns an error text, or None when the
    value is acceptable.
    """
    return dataclasses.field(default=default, metadata={"help": help, "check": check})


def at_least(low: float) -> Check:
    """A check: the value must be >= *low*."""
    return lambda value: None if value >= low else f"must be at least {low}"


def regex(value: str | None) -> str | None:
    """A check: the value, when set, must be a regular expression Python compiles."""
    if value is None:
        return None
    try:
        re.compile(value)
    except re.error as exc:
        return f"not a regular expression ({exc})"
    return None


@dataclass(frozen=True)
class SettingDoc:
    """One row of the configuration table (``logpipe exporters``, the docs)."""

    env: str
    type: str
    default: str
    help: str


def env_name(prefix: str, field_name: str) -> str:
    """``("LOGPIPE_FILE_", "max_bytes")`` -> ``LOGPIPE_FILE_MAX_BYTES``."""
    return f"{prefix}{field_name.upper()}"


def load(
    cls: type[T],
    prefix: str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Build *cls* from *overrides*, then the environment, then defaults.

    Unknown keys in *overrides* and values that do not parse raise
    `ConfigError`; values from the environment are reported by variable name.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {prefix}*; known: {', '.join(sorted(names))}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        var = env_name(prefix, field.name)
        if field.name in overrides:
            raw, source = overrides[field.name], f"argument {field.name!r} ({var})"
        elif var in environ:
            raw, source = environ[var], var
        else:
            continue
        shown = "'***'" if _is_secret(hints[field.name]) else repr(raw)
        value = _coerce(raw, hints[field.name], source, shown)
        check = field.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{source}={shown}: {problem}")
        values[field.name] = value
    return cls(**values)


def describe(cls: type, prefix: str) -> list[SettingDoc]:
    """The settings of *cls* as table rows."""
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        if isinstance(default, Secret):
            default = "***"
        rows.append(
            SettingDoc(
                env=env_name(prefix, field.name),
                type=_type_name(hints[field.name]),
                default="(unset)" if default is None or default == "" else str(default),
                help=field.metadata.get("help", ""),
            )
        )
    return rows


def _coerce(raw: Any, hint: Any, source: str, shown: str) -> Any:
    try:
        return _parse(raw, hint)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}={shown}: expected {_type_name(hint)} ({exc})") from None


def _is_secret(hint: Any) -> bool:
    return hint is Secret or Secret in typing.get_args(hint)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(raw: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if inner[0] is Secret and isinstance(raw, str) and raw:
            return Secret(raw)  # a password may be spelled "none"
        if raw is None or (isinstance(raw, str) and raw.strip() in ("", "none")):
            return None
        return _parse(raw, inner[0])
    if origin is Literal:
        value = raw.strip() if isinstance(raw, str) else raw
        if value not in args:
            raise ValueError(f"choose one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(str(i).strip() for i in items if str(i).strip())
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ValueError("use true/false, 1/0, yes/no or on/off")
    if hint is int:
        if isinstance(raw, bool):
            raise ValueError("not an integer")
        return int(str(raw).strip().replace("_", ""))
    if hint is float:
        if isinstance(raw, bool):
            raise ValueError("not a number")
        return float(str(raw).strip())
    if hint is Path:
        return Path(raw).expanduser()
    if hint is Secret:
        return raw if isinstance(raw, Secret) else Secret(str(raw))
    if hint is str:
        return str(raw)
    raise TypeError(f"unsupported setting type {hint!r}")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin is Literal:
        return " / ".join(map(str, args))
    if origin is tuple:
        return "comma list"
    if hint is Secret:
        return "secret"
    return getattr(hint, "__name__", str(hint))


@dataclass(frozen=True)
class Settings:
    """logpipe's own settings (``LOGPIPE_*``); exporters declare theirs alike."""

    exporter: tuple[str, ...] = setting(("file",), "Exporters to send every record to (comma list = fan-out).")
    fallback_exporter: str = setting(
        "auto",
        "Where records go when an exporter fails or its queue overflows with "
        "the spill policy: an exporter name, 'none', or 'auto' (the exporter's own default).",
    )
    queue_size: int = setting(20_000, "Records each exporter's queue holds.", check=at_least(1))
    batch_size: int = setting(512, "Most records handed to one export call.", check=at_least(1))
    batch_delay: float = setting(0.2, "Seconds a partial batch may wait before export.", check=at_least(0))
    overflow: Overflow | None = setting(
        None,
        "Full-queue policy: block, drop_newest, drop_oldest, spill. "
        "Unset: spill when there is a fallback exporter, else block.",
    )
    block_timeout: float = setting(0.05, "Seconds the block policy waits for room before dropping.", check=at_least(0))
    isolation: Literal["auto", "thread", "process"] = setting(
        "auto",
        "Where exporters run: process (a child process each, so their client's Python threads never hold "
        "the application's GIL), thread (in the application's process), or auto (each exporter's choice: "
        "process for kafka with kafka-python, thread for kafka with confluent-kafka and for the others).",
    )
    shutdown_timeout: float = setting(10.0, "Seconds to flush at exit or shutdown.", check=at_least(0))
    action: str = setting("click", "Action value for records without an action= key.")
    time_format: str = setting(
        "iso", "Time layout: iso (ISO 8601, ms, offset), seed (YYYY-MM-DD HH:MM:SS) or a strftime pattern."
    )
    utc: bool = setting(True, "Render Time in UTC (else local time with its offset).")
    service: str = setting("", "Service name; default: OTEL_SERVICE_NAME / OpenTelemetry resource.")
    local_render: Literal["json", "console", "none"] = setting(
        "json", "What the chain returns to structlog's own logger: json, console or none."
    )
    redact: bool = setting(
        True,
        "Mask secrets before a record leaves the process: values of keys like password, token, authorization, "
        "cookie, api_key, and bearer tokens, JWTs, URL passwords, AWS key ids and card numbers in any text.",
    )
    redact_keys: tuple[str, ...] = setting((), "More key names whose values are masked (case-insensitive).")
    redact_pattern: str | None = setting(
        None, "A regular expression whose matches in any text are masked too (use | for several).", check=regex
    )
    capture_stdlib: bool = setting(
        False, "Attach logpipe.LoggingHandler to the root logger: standard library logging records go through logpipe."
    )
    capture_stdlib_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = setting(
        "INFO", "Lowest level of logging records captured with capture_stdlib (the root logger is lowered to it)."
    )
    durable: bool = setting(
        False,
        "Durable mode: a log call returns only once its record is fsynced to a local journal, which the exporters "
        "deliver from (nothing a returned call logged is lost to SIGKILL or a power cut).",
    )
    durable_dir: Path = setting(
        Path("logs") / "journal",
        "Journal root in durable mode; each exporter gets <dir>/<name>, a spool directory "
        "(size cap and full policy from LOGPIPE_SPOOL_*).",
    )
    durable_max_wait: float = setting(
        0.002,
        "Durable mode: most seconds the first caller of a group commit waits for as many callers as the previous "
        "batch held before the write and fsync (a lone thread never waits; 0: no wait).",
        check=at_least(0),
    )
    durable_max_batch: int = setting(1024, "Durable mode: most records in one group commit.", check=at_least(1))
    handle_sigterm: bool = setting(
        True, "Turn SIGTERM into a clean exit that flushes (only when no handler is installed)."
    )
