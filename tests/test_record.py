"""Tests for logpipe.record: the KafkaLog wire format and its encoding."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from decimal import Decimal

import orjson
from hypothesis import given
from hypothesis import strategies as st

from logpipe import record
from logpipe.record import WIRE_KEYS, Record, encode


class TestEncode:
    def test_plain_values_round_trip(self) -> None:
        """JSON-native values come back unchanged."""
        doc = {"a": 1, "b": "二", "c": [1.5, None, True], "d": {"e": "😀"}}
        assert orjson.loads(encode(doc)) == doc

    def test_non_finite_floats_become_strings(self) -> None:
        """NaN and infinities are kept as text instead of turning into null."""
        out = orjson.loads(encode({"nan": math.nan, "inf": [math.inf], "ok": None}))
        assert out == {"nan": "nan", "inf": ["inf"], "ok": None}

    def test_huge_integers_are_kept_as_text(self) -> None:
        """Integers past 64 bits, which orjson refuses, are rendered as digits."""
        assert orjson.loads(encode({"n": 2**80})) == {"n": str(2**80)}

    def test_cycles_are_marked_not_fatal(self) -> None:
        """A self-referencing structure encodes with a marker where it loops."""
        loop: dict[str, object] = {"name": "x"}
        loop["self"] = loop
        out = orjson.loads(encode({"loop": loop}))
        assert out["loop"]["name"] == "x"
        assert out["loop"]["self"] == "<cycle dict>"

    def test_objects_sets_bytes_are_printable(self) -> None:
        """Values JSON cannot hold are made readable, not dropped."""

        class Thing:
            def __str__(self) -> str:
                return "a thing"

        class Broken:
            def __str__(self) -> str:
                raise RuntimeError("no")

            def __repr__(self) -> str:
                raise RuntimeError("no")

        out = orjson.loads(
            encode(
                {
                    "obj": Thing(),
                    "set": {3, 1, 2},
                    "bytes": b"caf\xc3\xa9\xff",
                    "dec": Decimal("1.50"),
                    "broken": Broken(),
                    "exc": ValueError("bad"),
                    1: "int key",
                    ("t",): "tuple key",
                }
            )
        )
        assert out["obj"] == "a thing"
        assert out["set"] == [1, 2, 3]
        assert out["bytes"] == "café\\xff"
        assert out["dec"] == "1.50"
        assert out["broken"] == "<unprintable Broken>"
        assert out["exc"] == "ValueError: bad"
        assert out["1"] == "int key"
        assert out["('t',)"] == "tuple key"

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
            max_leaves=20,
        )
    )
    def test_anything_encodes_to_valid_json(self, value: object) -> None:
        """Whatever is logged, the result is valid JSON with every key present."""
        out = orjson.loads(encode({"Field": {"v": value}}))
        assert set(out["Field"]) == {"v"}


class TestRecord:
    def test_make_record_has_every_wire_key_in_order(self) -> None:
        """A record's JSON holds exactly the wire keys, seed keys first."""
        rec = record.info("hello", "pkg.mod.func", {"user": 1}, service="svc")
        doc = orjson.loads(rec.payload)
        assert tuple(doc) == WIRE_KEYS
        assert doc["Type"] == "info" and doc["Action"] == "click" and doc["Msg"] == "hello"
        assert doc["Field"] == {"user": 1} and doc["FuncName"] == "pkg.mod.func"
        assert doc["Id"] == rec.id and doc["Service"] == "svc" == rec.service

    def test_error_helper_takes_an_exception(self) -> None:
        """The seed's Error(err, ...) uses the error text as Msg."""
        doc = record.error(ValueError("disk full"), "pkg.save").decoded()
        assert (doc["Type"], doc["Msg"], doc["FuncName"]) == ("error", "disk full", "pkg.save")

    def test_ids_are_unique_uuid7_and_time_ordered(self) -> None:
        """Ids are UUIDv7, so sorting them sorts by creation time."""
        ids = [record.new_id() for _ in range(2000)]
        assert len(set(ids)) == len(ids)
        assert all(uuid.UUID(i).version == 7 for i in ids)
        assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)

    def test_from_json_round_trip(self) -> None:
        """A record rebuilt from its payload routes the same way."""
        rec = record.make_record(type="warning", msg="m", trace_id="ab" * 16, service="s", ts=1_700_000_000.25)
        again = Record.from_json(rec.payload)
        assert again.id == rec.id and again.trace_id == rec.trace_id and again.service == "s"
        assert abs(again.ts - 1_700_000_000.25) < 0.001

    def test_from_json_rejects_non_records(self) -> None:
        """Payloads without an Id are refused with ValueError."""
        for bad in (b"[]", b'{"Msg": "x"}', b"not json"):
            try:
                Record.from_json(bad)
            except ValueError:
                continue
            raise AssertionError(f"accepted {bad!r}")


class TestFormatTime:
    def test_iso_has_milliseconds_and_offset(self) -> None:
        """The default layout is ISO 8601 with ms and a UTC offset."""
        assert record.format_time(0.5) == "1970-01-01T00:00:00.500+00:00"

    def test_seed_layout(self) -> None:
        """The seed's YYYY-MM-DD HH:MM:SS layout is available."""
        text = record.format_time(1_700_000_000, "seed")
        assert datetime.strptime(text, "%Y-%m-%d %H:%M:%S")

    def test_local_time_keeps_its_offset(self) -> None:
        """utc=False renders local time that still parses to the same instant."""
        text = record.format_time(1_700_000_000.123, utc=False)
        assert abs(datetime.fromisoformat(text).timestamp() - 1_700_000_000.123) < 0.001
