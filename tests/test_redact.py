"""Tests for logpipe.redact: secrets masked by key and by value, on by default."""

from __future__ import annotations

import pytest
import structlog

import logpipe
from logpipe.redact import MASK, Redactor
from logpipe.testing import InMemoryExporter, capture_records

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


class TestByKey:
    def test_keys_at_any_depth_and_in_lists_case_insensitive(self) -> None:
        r = Redactor()
        doc = {"user": "ann", "Password": "hunter2", "req": {"headers": [{"Authorization": "x"}, {"set-cookie": "s"}]}}
        assert r.value(doc) == {
            "user": "ann",
            "Password": MASK,
            "req": {"headers": [{"Authorization": MASK}, {"set-cookie": MASK}]},
        }

    def test_a_whole_nested_value_under_a_secret_key_is_masked(self) -> None:
        assert Redactor().value({"client_secret": {"a": 1}}) == {"client_secret": MASK}

    def test_extra_keys(self) -> None:
        assert Redactor(keys=["ssn"]).value({"SSN": "078-05-1120"}) == {"SSN": MASK}

    def test_the_applications_objects_are_not_modified(self) -> None:
        headers = {"authorization": "Bearer abc"}
        masked = Redactor().value({"headers": headers})
        assert headers == {"authorization": "Bearer abc"} and masked == {"headers": {"authorization": MASK}}

    def test_nothing_to_mask_returns_the_same_object(self) -> None:
        doc = {"a": [1, "two", {"b": 3.0}]}
        assert Redactor().value(doc) is doc


class TestByValue:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("auth with Bearer abcdefgh12345678== ok", f"auth with Bearer {MASK} ok"),
            (f"token {JWT} expired", f"token {MASK} expired"),
            ("GET https://bob:s3cr3t@example.com/x", f"GET https://bob:{MASK}@example.com/x"),
            ("key AKIAIOSFODNN7EXAMPLE used", f"key {MASK} used"),
            ("card 4111 1111 1111 1111 declined", f"card {MASK} declined"),
            ("card 4111-1111-1111-1111", f"card {MASK}"),
            ("login password=hunter2 user=ann", f"login password={MASK} user=ann"),
            ('{"api_key": "k-123", "x": 1}', f'{{"api_key": "{MASK}", "x": 1}}'),
            ("Token: abc.def", f"Token: {MASK}"),
        ],
    )
    def test_secret_looking_values_are_masked(self, text: str, expected: str) -> None:
        assert Redactor().text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "order 4111111111111112 shipped",  # fails the Luhn check: not a card
            "took 1733212800123 ms",
            "https://example.com/a:b@c",  # no userinfo before the host
            "version 1.2.3.4111111111111111",
            "the token was refused",  # the word alone is no secret
            "passwords must be long",
        ],
    )
    def test_lookalikes_are_left_alone(self, text: str) -> None:
        assert Redactor().text(text) == text

    def test_an_extra_pattern(self) -> None:
        assert Redactor(pattern=r"emp-\d{6}").text("employee emp-123456 left") == f"employee {MASK} left"


class TestInTheChain:
    def test_on_by_default_msg_field_and_exception_text(self) -> None:
        with capture_records() as records:
            log = structlog.get_logger()
            log.info(f"login with {JWT}", password="hunter2", user="ann")
            try:
                raise ValueError("db url postgres://app:pw123@db/prod refused")
            except ValueError:
                log.exception("failed")
        first, second = records
        assert first["Msg"] == f"login with {MASK}"
        assert first["Field"] == {"password": MASK, "user": "ann"}
        assert "pw123" not in second["Field"]["exception"] and f"app:{MASK}@db" in second["Field"]["exception"]

    def test_off_with_the_setting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LOGPIPE_REDACT", "false")
        with capture_records() as records:
            structlog.get_logger().info("x", password="hunter2")
        assert records[0]["Field"] == {"password": "hunter2"}

    def test_the_payload_every_exporter_gets_is_masked(self) -> None:
        """What reaches an exporter (and so Kafka, Elasticsearch, the file) holds no secret."""
        exporter = InMemoryExporter()
        structlog.configure(processors=logpipe.processors(exporter=[exporter], local_render="none"))
        structlog.get_logger().info(f"token {JWT}", password="hunter2")
        assert logpipe.flush(5)
        (record,) = exporter.records
        assert b"hunter2" not in record.payload and JWT.encode() not in record.payload

    def test_a_bad_pattern_fails_at_configure_time(self) -> None:
        with pytest.raises(logpipe.ConfigError, match="LOGPIPE_REDACT_PATTERN"):
            logpipe.configure(redact_pattern="(unclosed")


def test_document_masks_msg_and_field_of_a_foreign_record() -> None:
    doc = {"Type": "info", "Msg": "Bearer abcdefghijklmnop", "Field": {"token": "t"}, "Id": "1"}
    assert Redactor().document(doc) == {**doc, "Msg": f"Bearer {MASK}", "Field": {"token": MASK}}
    assert Redactor().document({"Msg": "fine", "Field": {}}) is None


class TestForwarders:
    """The tailer and the shipper mask what they build from other producers' lines, configurable per command."""

    def test_tail_masks_wrapped_and_mapped_lines(self) -> None:
        from logpipe.tail.records import RecordMaker, wrap_line

        maker = RecordMaker(redactor=Redactor())
        wrapped = wrap_line(b"GET /login?x=1 Authorization: Bearer abcdefghijklmnop", "/a.log", 0,
                            record_id="i", redactor=maker.redactor)  # fmt: skip
        assert b"abcdefghijklmnop" not in wrapped.payload and MASK.encode() in wrapped.payload
        mapped = maker.foreign(b'{"level":"info","msg":"login","password":"hunter2"}', "/a.log", 0, "i")
        assert mapped is not None and b"hunter2" not in mapped.payload

    def test_tail_setting_off(self) -> None:
        from logpipe.tail import load_options
        from logpipe.tail.records import RecordMaker

        maker = RecordMaker.from_options(load_options({"paths": ("x",), "redact": False}))
        record = maker.foreign(b'{"level":"info","msg":"m","password":"hunter2"}', "/a.log", 0, "i")
        assert record is not None and b"hunter2" in record.payload

    def test_ship_masks_what_it_maps_or_wraps_not_logpipes_records(self) -> None:
        from logpipe.record import make_record
        from logpipe.ship.documents import document

        class Message:
            topic, partition, offset, timestamp, key, headers, leader_epoch = "t", 0, 1, 1764748800000, None, (), None

            def __init__(self, value: bytes) -> None:
                self.value = value

        redactor = Redactor()
        zap = document(Message(b'{"level":"error","msg":"db","token":"s3cr3t"}'), 1 << 20, None, redactor)  # type: ignore[arg-type]
        text = document(Message(b"conn postgres://app:pw123@db/x failed"), 1 << 20, None, redactor)  # type: ignore[arg-type]
        own = make_record(type="info", msg="as it was made", fields={"note": "password=visible-by-choice"})
        kept = document(Message(own.payload), 1 << 20, None, redactor)  # type: ignore[arg-type]
        assert b"s3cr3t" not in zap.payload and b"pw123" not in text.payload  # type: ignore[union-attr]
        assert kept.payload == own.payload  # type: ignore[union-attr]
