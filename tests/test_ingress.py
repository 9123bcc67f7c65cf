"""Tests for logpipe.ingress: bytes -> a record or the reason they are not one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logpipe.ingress import Invalid, kafkalog, parse, parse_time, printable
from logpipe.record import Record, info


class TestParse:
    def test_a_logpipe_record_comes_back_byte_for_byte(self) -> None:
        record = info("hi", "f", {"a": 1}, service="svc", trace_id="ab" * 16)
        parsed = parse(record.payload)
        assert isinstance(parsed, Record)
        assert parsed.payload == record.payload and parsed.id == record.id
        assert (parsed.service, parsed.trace_id) == ("svc", "ab" * 16)
        assert abs(parsed.ts - record.ts) < 0.001

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (None, "empty message"),
            (b"plain text", "not JSON"),
            (b"[1,2]", "not a JSON object but an array"),
            (b'{"Msg":"x","Time":"2026-01-01T00:00:00Z"}', "missing Id"),
            (b'{"Id":"1","Time":"2026-01-01T00:00:00Z"}', "missing Msg"),
            (b'{"Id":"","Msg":"x","Time":"2026-01-01T00:00:00Z"}', "non-empty string"),
            (b'{"Id":5,"Msg":"x","Time":"2026-01-01T00:00:00Z"}', "non-empty string"),
            (b'{"Id":"1","Msg":"x","Time":5}', "Time must be a string, not a number"),
        ],
    )
    def test_what_is_not_a_record_says_why(self, data: bytes | None, reason: str) -> None:
        result = parse(data)
        assert isinstance(result, Invalid) and reason in result.reason

    def test_an_id_over_512_bytes_is_refused(self) -> None:
        doc = {"Id": "é" * 257, "Msg": "x", "Time": "2026-01-01T00:00:00Z"}
        assert isinstance(parse(orjson.dumps(doc)), Invalid)

    def test_over_the_size_limit(self) -> None:
        result = parse(b'{"Id":"1","Msg":"x","Time":"t"}', max_bytes=10)
        assert isinstance(result, Invalid) and "over the limit of 10" in result.reason

    def test_raw_newlines_become_spaces(self) -> None:
        """Pretty-printed JSON from a foreign producer becomes one line."""
        result = parse(b'{\n  "Id": "1",\r\n  "Msg": "x",\n  "Time": "2026-01-01T00:00:00Z"\n}')
        assert isinstance(result, Record) and b"\n" not in result.payload and b"\r" not in result.payload
        assert orjson.loads(result.payload)["Id"] == "1"

    def test_an_unreadable_time_keeps_the_bytes_and_takes_the_moment_received(self) -> None:
        data = b'{"Id":"1","Msg":"x","Time":"not a time"}'
        result = parse(data, received=1234.5)
        assert isinstance(result, Record) and result.ts == 1234.5 and result.payload == data

    @given(st.binary(max_size=200))
    def test_never_raises(self, data: bytes) -> None:
        assert isinstance(parse(data), (Record, Invalid))


class TestParseTime:
    def test_iso_with_offset(self) -> None:
        assert (
            parse_time("2026-12-03T08:00:00.250+01:00")
            == datetime(2026, 12, 3, 7, 0, 0, 250000, tzinfo=timezone.utc).timestamp()
        )

    def test_seed_format_in_a_given_zone(self) -> None:
        zone = timezone(timedelta(hours=8))
        assert parse_time("2026-12-03 08:00:00", zone) == datetime(2026, 12, 3, 0, 0, tzinfo=timezone.utc).timestamp()

    @pytest.mark.parametrize("text", ["not a time", "1999-13-45 99:99:99", ""])
    def test_not_a_time_is_none(self, text: str) -> None:
        """No silent fallback: the caller decides what an unreadable time means."""
        assert parse_time(text) is None


def test_printable_escapes_controls_and_bad_utf8() -> None:
    assert printable(b"a\tb\x1b[31m\xffc") == "a\tb\\x1b[31m\\xffc"


class TestExactTime:
    @pytest.mark.parametrize(("time", "why"), [("2026-12-03 08:00:00", "no UTC offset"), ("soon", "not a time")])
    def test_a_time_without_offset_or_unreadable_is_invalid(self, time: str, why: str) -> None:
        data = orjson.dumps({"Id": "1", "Msg": "m", "Time": time})
        result = parse(data, exact_time=True)
        assert isinstance(result, Invalid) and why in result.reason
        assert isinstance(parse(data), Record)  # without exact_time the record passes

    def test_a_time_with_offset_passes(self) -> None:
        result = parse(b'{"Id":"1","Msg":"m","Time":"2026-12-03T08:00:00+08:00"}', exact_time=True)
        assert isinstance(result, Record)
        assert result.ts == datetime(2026, 12, 3, 0, 0, tzinfo=timezone.utc).timestamp()


def test_read_time_false_checks_but_does_not_parse_the_time() -> None:
    """The tailer's path: Time must be a string, the record's ts is the moment received."""
    result = parse(b'{"Id":"1","Msg":"m","Time":"2026-12-03T08:00:00+00:00"}', read_time=False, received=5.0)
    assert isinstance(result, Record) and result.ts == 5.0
    assert isinstance(parse(b'{"Id":"1","Msg":"m","Time":7}', read_time=False), Invalid)


class TestKafkalog:
    """`kafkalog` is `parse(read_time=False)` without the reason: the same rules on every input."""

    _values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=6,
    )
    # Ids around the lengths where the byte count matters: 128 characters of up to 4 UTF-8 bytes, and 512 bytes.
    _ids = st.one_of(
        st.text(max_size=20),
        st.text(alphabet="a", min_size=510, max_size=514),
        st.text(alphabet="é€😀a", min_size=120, max_size=260),
        _values,
    )

    @staticmethod
    def agree(data: bytes) -> None:
        expected = parse(data, received=7.5, read_time=False)
        found = kafkalog(data, 7.5)
        if isinstance(expected, Invalid):
            assert found is None, expected.reason
        else:
            assert found == expected and type(found) is Record

    @given(
        st.fixed_dictionaries(
            {},
            optional={
                "Id": _ids,
                "Time": st.text(max_size=30) | _values,
                "Msg": _values,
                "TraceId": _values,
                "Service": _values,
                "Field": _values,
            },
        ),
        st.sampled_from([b"", b"\n", b"\r\n", b" \r "]),
    )
    def test_documents(self, doc: dict[str, object], spacing: bytes) -> None:
        data = orjson.dumps(doc)
        self.agree(data)
        self.agree(data.replace(b",", b"," + spacing))  # raw CR/LF between tokens

    @given(st.binary(max_size=200) | _values.map(orjson.dumps))
    def test_anything(self, data: bytes) -> None:
        self.agree(data)

    @pytest.mark.parametrize(
        "data",
        [
            b'{"Id":"' + b"a" * 512 + b'","Msg":null,"Time":""}',
            b'{"Id":"' + b"a" * 513 + b'","Msg":null,"Time":""}',
            b'{"Id":"' + "é".encode() * 256 + b'","Msg":1,"Time":"t"}',
            b'{"Id":"' + "é".encode() * 257 + b'","Msg":1,"Time":"t"}',
            b'{"Id":"' + "😀".encode() * 128 + b'","Msg":1,"Time":"t"}',
            b'{"Id":"' + "😀".encode() * 129 + b'","Msg":1,"Time":"t"}',
            b'{"Id":"1","Msg":1,"Time":"t","Id":""}',
            b'{"Id":"1","Msg":1,"Time":null}',
            b'{"Id":"1","Time":"t"}',
            b'{"Id":"1","Msg":1,"Time":"t"} x',
        ],
    )
    def test_edges(self, data: bytes) -> None:
        self.agree(data)
