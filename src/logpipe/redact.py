"""Redaction: secrets an application mishandles are masked before a record leaves the process.

A logging pipeline carries every secret that code passes to a log call by
mistake: a ``password=`` keyword, an ``Authorization`` header dumped with
the request, a token in a URL, a card number in a message. logpipe masks
them by default (``LOGPIPE_REDACT=false`` turns it off), in two ways:

* by key: the value of any key named like a secret (`SECRET_KEYS`, case
  and ``-``/``_`` insensitive: ``Password``, ``set-cookie``, ``API_KEY``), at
  any depth of ``Field``, inside lists too, is replaced whole by `MASK`;
* by value: inside every string (``Msg``, field values, exception text),
  the value of ``password=...``/``token: ...`` pairs, bearer tokens, JWTs,
  the password of ``scheme://user:pass@host`` URLs,
  AWS access key ids and payment card numbers (Luhn-checked, so order ids
  and timestamps are left alone) are replaced by `MASK`.

Extra keys (``LOGPIPE_REDACT_KEYS``) and an extra regular expression
(``LOGPIPE_REDACT_PATTERN``) extend the rules. The same `Redactor` serves
the log call (as a structlog processor) and what ``logpipe tail`` and
``logpipe ship`` forward (`Redactor.document`), since files and foreign
producers leak too.

The application's own objects are never modified: a container is copied
only when something in it is masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # structlog itself is not imported by the tailer and the shipper, which redact too
    from structlog.typing import EventDict, WrappedLogger

from .exceptions import ConfigError

__all__ = ["MASK", "SECRET_KEYS", "Redactor"]

MASK = "[REDACTED]"

#: Key names whose values are secrets, normalised (lower case, ``-`` as ``_``).
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "private_key",
        "client_secret",
    }
)

#: Value patterns, one named group each (`_replace` decides what is kept of a match), and what a text
#: must contain, in lower case, for each to have a chance: substring tests run in C, and only the
#: patterns whose hint is there run at all (Python's regular expressions try every alternative at
#: every position; one big alternation over every line of a log costs microseconds).
_VALUE_PATTERNS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("pass", "pwd", "secret", "token", "key"),
        r"(?P<kv>\b(?i:password|passwd|pwd|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token"
        r"|api[_-]?key)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]+",
    ),
    (("earer",), r"(?P<bearer>\b[Bb]earer\s+)[A-Za-z0-9\-._~+/]{8,}=*"),
    (("eyj",), r"(?P<jwt>\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)"),
    (("://",), r"(?P<userinfo>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]+:)[^\s/@]+(?=@)"),
    (("akia", "asia", "aida", "aroa"), r"(?P<aws>\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{16}\b)"),
)
#: Card numbers: 13 to 19 digits, single spaces or dashes allowed between them (Luhn-checked in `_replace`).
_CARD = re.compile(r"(?P<card>(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.]))")
#: What a text must hold for `_CARD` to have a chance: eight digits, a space or dash allowed in the middle
#: (a date like 2026-12-03 or a time does not qualify, so ordinary log lines skip the card scan).
_CARD_HINT = re.compile(r"\d{4}[ -]?\d{4}")

#: Values that cannot hold a secret: passed over without further checks.
_SCALARS = frozenset({int, float, bool, type(None)})

#: Most keys and strings a `Redactor` remembers as harmless (they repeat; the sets do not grow forever).
_CACHE = 8192
#: Longer strings are checked each time rather than remembered.
_CLEAN_TEXT_MAX = 256


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if position % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "bearer" or kind == "userinfo" or kind == "kv":
        return match.group(kind) + MASK
    if kind == "card":
        digits = re.sub(r"[ -]", "", match.group(0))
        return MASK if _luhn(digits) else match.group(0)
    return MASK


class Redactor:
    """Masks secrets by key and by value; a structlog processor, and `document` for whole records.

    *keys* are added to `SECRET_KEYS`; *pattern* is an extra regular
    expression whose matches are masked whole. Both are checked here, so a
    bad one fails at configure time (``ConfigError`` naming *variable*).
    """

    def __init__(
        self, keys: Iterable[str] = (), pattern: str | None = None, *, variable: str = "LOGPIPE_REDACT"
    ) -> None:
        self.keys = SECRET_KEYS | {_normal(k) for k in keys if k.strip()}
        self._patterns = [(hints, re.compile(source)) for hints, source in _VALUE_PATTERNS]
        #: A user's pattern has no substring to test for first: it runs on every text.
        self._extra: re.Pattern[str] | None = None
        if pattern:
            try:
                self._extra = re.compile(f"(?P<extra>{pattern})")
            except re.error as exc:
                raise ConfigError(f"{variable}_PATTERN={pattern!r}: not a regular expression ({exc})") from None
        #: Keys known not to be secrets, and strings known to hold no secret-looking value.
        self._safe_keys: set[Any] = set()
        self._clean: set[str] = set()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """The processor: mask in place in *event_dict* (structlog's own dict for this call).

        Per call this is a set difference of the keys against those known to
        be harmless and, per string, a lookup among strings known to be clean:
        keys and most values repeat from call to call, so the rules run once
        per distinct key and string, not once per call.
        """
        if not self._safe_keys.issuperset(event_dict):
            for key in [k for k in event_dict if k not in self._safe_keys]:
                if self._secret(key):
                    event_dict[key] = MASK
        clean = self._clean
        for key, value in event_dict.items():
            kind = type(value)
            if kind is str:
                if value in clean:
                    continue
                masked = self.text(value)
            elif kind in _SCALARS:
                continue  # before the isinstance below: a check against the Mapping ABC costs a call
            elif kind is dict or kind is list or kind is tuple or isinstance(value, Mapping):
                masked = self.value(value)
            else:
                continue
            if masked is not value:
                event_dict[key] = masked
        return event_dict

    def document(self, doc: Mapping[str, Any]) -> dict[str, Any] | None:
        """A KafkaLog document with ``Msg`` and ``Field`` masked, or None when nothing needed masking."""
        msg = doc.get("Msg")
        field = doc.get("Field")
        new_msg = self.value(msg)
        new_field = self.value(field)
        if new_msg is msg and new_field is field:
            return None
        return {**doc, "Msg": new_msg, "Field": new_field}

    def text(self, text: str) -> str:
        """*text* with secret-looking values masked (the same object when there are none)."""
        if text in self._clean:
            return text
        masked = self._mask(text)
        if masked != text:
            return masked
        if len(text) <= _CLEAN_TEXT_MAX:
            if len(self._clean) >= _CACHE:
                self._clean.clear()  # a log full of distinct strings: start over rather than grow
            self._clean.add(text)
        return text

    def _mask(self, text: str) -> str:
        """Run the value patterns whose hints *text* holds (and the user's, always)."""
        low = text.lower()
        for hints, pattern in self._patterns:
            for hint in hints:
                if hint in low:
                    text = pattern.sub(_replace, text)
                    break
        if len(text) >= 13 and _CARD_HINT.search(text) is not None:
            text = _CARD.sub(_replace, text)
        if self._extra is not None:
            text = self._extra.sub(_replace, text)
        return text

    def value(self, value: Any, depth: int = 0) -> Any:
        """*value* with secrets masked; the same object when nothing changed (nothing is copied then)."""
        kind = type(value)
        if kind is str:
            return self.text(value)
        if depth > 32 or kind in _SCALARS:
            return value
        if kind is dict or isinstance(value, Mapping):
            changed: dict[Any, Any] | None = None
            for key, item in value.items():
                new = MASK if self._secret(key) else self.value(item, depth + 1)
                if new is not item:
                    if changed is None:
                        changed = dict(value)
                    changed[key] = new
            return value if changed is None else changed
        if isinstance(value, (list, tuple)):
            items = [self.value(item, depth + 1) for item in value]
            if all(new is old for new, old in zip(items, value, strict=True)):
                return value
            return items
        return value

    def _secret(self, key: Any) -> bool:
        if key in self._safe_keys:
            return False
        verdict = isinstance(key, str) and _normal(key) in self.keys
        if not verdict and len(self._safe_keys) < _CACHE:
            self._safe_keys.add(key)
        return verdict


def _normal(key: str) -> str:
    return key.strip().lower().replace("-", "_")
