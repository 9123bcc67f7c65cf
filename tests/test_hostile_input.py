"""A log call never raises and always yields valid UTF-8 JSON, whatever the application passes in.

Property tests over the whole chain (every processor, the renderer, the
encoder, each local rendering), not over `logpipe.record` alone: the values
an application really passes are nested, bytes, huge integers, NaN, objects
whose ``repr`` raises, enums, Decimals, sets, non-string keys, and strings
with lone surrogates (what ``os.fsdecode`` makes of undecodable file names).
"""

from __future__ import annotations

import enum
import os
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import logpipe
from logpipe.testing import InMemoryExporter, capture_records


class Color(enum.Enum):
    RED = "red"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr failed")

    __str__ = __repr__


#: Text with lone surrogates mixed in.
texts = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=20)
surrogates = st.sampled_from(["\ud800", "\udcff", "a\udc80b", os.fsdecode(b"/tmp/\xff.log")])
scalars = st.one_of(
    texts,
    surrogates,
    st.binary(max_size=20),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.decimals(allow_nan=True),
    st.just(Color.RED),
    st.builds(BadRepr),
)
keys = st.one_of(texts, surrogates, st.integers(), st.booleans(), st.builds(BadRepr), st.just(Color.RED))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
        st.frozensets(st.one_of(st.integers(), texts), max_size=4),
    ),
    max_leaves=12,
)
events = st.one_of(texts, surrogates, st.builds(BadRepr), st.integers())


def _valid(payload: bytes) -> dict[str, Any]:
    payload.decode("utf-8")  # strict: valid UTF-8
    doc = orjson.loads(payload)
    assert isinstance(doc, dict) and set(doc) >= {"Type", "Msg", "Field", "Id"}
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events, fields=st.dictionaries(texts.filter(lambda k: k not in {"event", "level"}), values, max_size=5))
def test_a_log_call_never_raises_and_encodes_valid_json(event: Any, fields: dict[str, Any]) -> None:
    with capture_records() as records:
        structlog.get_logger().info(event, **fields)
    (record,) = records
    orjson.loads(orjson.dumps(record))  # what capture_records decoded is itself plain JSON


@settings(max_examples=100, deadline=None)
@given(key=st.one_of(surrogates, texts), value=values)
def test_every_local_rendering_survives_hostile_values(key: str, value: Any) -> None:
    """json and console local rendering (what structlog's own logger prints) never raise either."""
    for local in ("json", "console", "none"):
        exporter = InMemoryExporter()
        chain = logpipe.configure(exporter=[exporter], local_render=local, batch_delay=3600).processors()
        rendered = None
        for processor in chain:
            try:
                rendered = processor(None, "info", rendered if rendered is not None else {"event": key, key: value})
            except structlog.DropEvent:
                rendered = None
                break
        if local == "json":
            assert isinstance(rendered, str)
            _valid(rendered.encode("utf-8"))
        elif local == "console":
            assert isinstance(rendered, str)
            rendered.encode("utf-8")  # printable on a UTF-8 terminal
        logpipe.flush(5)
        (record,) = exporter.records
        _valid(record.payload)


@pytest.mark.parametrize(
    "call",
    [
        lambda log: log.info("x", path=os.fsdecode(b"/tmp/\xff.log")),
        lambda log: log.info("\ud800"),
        lambda log: log.info("k", **{"\ud800": 1}),
    ],
)
def test_the_surrogates_of_the_issue_are_escaped_not_fatal(call: Any) -> None:
    with capture_records() as records:
        call(structlog.get_logger())
    text = orjson.dumps(records[0]).decode()
    assert "\\\\xff" in text or "\\\\ud800" in text


@settings(max_examples=100, deadline=None)
@given(
    msg=st.one_of(texts, surrogates, st.builds(BadRepr)),
    args=st.lists(values, max_size=3),
    extra=st.dictionaries(texts.filter(lambda k: k.isidentifier() and not k.startswith("_")), values, max_size=3),
)
def test_a_logging_record_never_raises_and_encodes_valid_json(msg: Any, args: list[Any], extra: dict[str, Any]) -> None:
    """The same for standard library records through logpipe.LoggingHandler (%-formatting that fails included)."""
    import logging

    exporter = InMemoryExporter()
    logpipe.configure(exporter=[exporter], local_render="none", batch_delay=3600)
    logger = logging.getLogger("tests.hostile")
    handler = logpipe.LoggingHandler()
    logger.addHandler(handler)
    logger.propagate = False
    reserved = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
    try:
        logger.warning(msg, *args, extra={k: v for k, v in extra.items() if k not in reserved})
    finally:
        logger.removeHandler(handler)
    logpipe.flush(5)
    (record,) = exporter.records  # not dropped, even when the message cannot be %-formatted
    _valid(record.payload)
