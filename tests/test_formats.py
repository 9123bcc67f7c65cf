"""Tests for logpipe.formats: other producers' JSON on the KafkaLog keys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from logpipe.formats import normalize, normalize_level, time_of

RECEIVED = datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc).timestamp()


def norm(doc: dict, **kw: object) -> dict:  # type: ignore[type-arg]
    out, _ = normalize(doc, received=RECEIVED, record_id="id-1", **kw)  # type: ignore[arg-type]
    return out


class TestFormats:
    def test_zap(self) -> None:
        out = norm(
            {
                "level": "error",
                "ts": 1764745267.1,
                "caller": "project/db.go:88",
                "msg": "query failed",
                "error": "timeout",
                "logger": "db",
            }
        )
        assert (out["Type"], out["Msg"], out["FuncName"], out["Service"]) == (
            "error",
            "query failed",
            "project/db.go:88",
            "db",
        )
        assert out["Time"] == "2025-12-03T07:01:07.100+00:00" and out["Field"] == {"error": "timeout"}

    def test_logrus(self) -> None:
        out = norm(
            {"level": "warning", "time": "2026-12-03T09:00:00+01:00", "msg": "slow", "func": "main.run", "user": 7}
        )
        assert (out["Type"], out["Time"], out["FuncName"], out["Field"]) == (
            "warning",
            "2026-12-03T08:00:00.000+00:00",
            "main.run",
            {"user": 7},
        )

    def test_go_slog_with_source(self) -> None:
        out = norm(
            {
                "time": "2026-12-03T08:00:00.5Z",
                "level": "WARN",
                "msg": "disk",
                "source": {"function": "main.check", "file": "/app/main.go", "line": 12},
                "free": 3,
            }
        )
        assert (out["Type"], out["FuncName"]) == ("warning", "main.check")
        assert out["Field"] == {"source": {"file": "/app/main.go", "line": 12}, "free": 3}

    def test_pino_numeric_level_and_epoch_millis(self) -> None:
        out = norm({"level": 50, "time": 1764748800000, "pid": 1, "hostname": "web-1", "name": "api", "msg": "boom"})
        assert (out["Type"], out["Service"], out["Host"], out["Msg"]) == ("error", "api", "web-1", "boom")
        assert out["Time"] == "2025-12-03T08:00:00.000+00:00" and out["Field"] == {"pid": 1}

    def test_ecs(self) -> None:
        out = norm(
            {
                "@timestamp": "2026-12-03T08:00:00.000Z",
                "log.level": "error",
                "message": "refused",
                "trace": {"id": "ab" * 16},
                "span": {"id": "cd" * 8},
                "service": {"name": "pay"},
                "log": {"origin": {"function": "charge"}},
                "ecs.version": "1.6.0",
            }
        )
        assert (out["Type"], out["Msg"], out["TraceId"], out["SpanId"]) == ("error", "refused", "ab" * 16, "cd" * 8)
        assert (out["FuncName"], out["Service"]) == ("charge", "pay")
        assert out["Field"] == {"ecs.version": "1.6.0"}

    def test_opentelemetry_json(self) -> None:
        out = norm(
            {
                "body": "paid",
                "severity_text": "INFO",
                "severity_number": 9,
                "timestamp": "2026-12-03T08:00:00.000000Z",
                "trace_id": "0x" + "ab" * 16,
                "span_id": "0x" + "cd" * 8,
                "attributes": {"order": 1},
            }
        )
        assert (out["Type"], out["Msg"], out["TraceId"], out["SpanId"]) == ("info", "paid", "ab" * 16, "cd" * 8)

    def test_seed_record_without_id_in_a_local_zone(self) -> None:
        """The Go services of the seed design: no Id, Time in the service's zone without an offset."""
        seed = {
            "Type": "info",
            "Action": "click",
            "Time": "2026-12-03 16:00:00",
            "Msg": "paid",
            "Field": {"order": "o-1"},
            "FuncName": "pay.Handle",
        }
        out = norm(seed, zone=timezone(timedelta(hours=8)))
        assert (out["Time"], out["Action"], out["Field"], out["Id"]) == (
            "2026-12-03T08:00:00.000+00:00",
            "click",
            {"order": "o-1"},
            "id-1",
        )

    def test_an_own_id_is_kept(self) -> None:
        assert norm({"Id": "x-9", "Msg": "m"})["Id"] == "x-9"


class TestTime:
    @pytest.mark.parametrize("value", [None, "not a time", "1999-13-45 99:99:99", -5, float("nan")])
    def test_unreadable_time_takes_the_received_time_and_keeps_the_original(self, value: object) -> None:
        out = norm({"msg": "m", "time": value})
        assert out["Time"] == "2026-12-03T08:00:00.000+00:00"
        kept = out["Field"].get("time_original")
        if value is None:
            assert "time_original" not in out["Field"]
        elif isinstance(value, float):
            assert kept != kept  # nan, kept as it came
        else:
            assert kept == value

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(1764748800, 1764748800.0), (1764748800123, 1764748800.123), (1764748800123456789, 1764748800.1234567)],
    )
    def test_epoch_seconds_millis_nanos(self, value: int, expected: float) -> None:
        got = time_of(value)
        assert got is not None and abs(got - expected) < 1e-3


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("WARN", "warning"),
        ("fatal", "critical"),
        ("DPANIC", "critical"),
        (30, "info"),
        (60, "critical"),
        (None, "info"),
        ("notice", "info"),
        ("custom", "custom"),
    ],
)
def test_levels(level: object, expected: str) -> None:
    assert normalize_level(level) == expected


def test_ids_are_stable_and_distinct() -> None:
    from logpipe.formats import coordinates_id, event_id

    assert coordinates_id("logs", 2, 41) == "logs+2+41"
    assert event_id("host", 1, 2, "ab", 10) == event_id("host", 1, 2, "ab", 10)
    assert event_id("host", 1, 2, "ab", 10) != event_id("host", 1, 2, "ab", 11)
