"""Tests for logpipe.elasticsearch.bulk: the one bulk path (lines, requests, `deliver` with its retries)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

import orjson

from logpipe import elasticsearch as es
from logpipe.backoff import Backoff


class ScriptedIndexer:
    """Answers each request with the next scripted per-document statuses (201 when the script runs out)."""

    def __init__(self, *replies: list[int | None] | es.BulkReply) -> None:
        self.replies = deque(replies)
        self.sent: list[list[bytes]] = []

    def send(self, lines: Sequence[bytes], indices: Sequence[str]) -> es.BulkReply:
        self.sent.append(list(lines))
        script = self.replies.popleft() if self.replies else [201] * len(lines)
        if isinstance(script, es.BulkReply):
            return script
        reply = es.BulkReply()
        for position, status in enumerate(script):
            if status == 201:
                reply.created += 1
            elif status == 409:
                reply.duplicates += 1
            else:
                reply.failed.append(es.ItemResult(position, indices[position], status, {"type": f"t{status}"}))
        return reply

    def install_template(self) -> None:
        pass

    def close(self) -> None:
        pass


def _lines(n: int) -> tuple[list[bytes], list[str]]:
    lines = [es.create_line("logs-2026.01.01", f"id{i}", b'{"Id":"id%d"}' % i) for i in range(n)]
    return lines, ["logs-2026.01.01"] * n


def _deliver(indexer: ScriptedIndexer, n: int, retries: int = 3, **kw: object) -> es.Delivery:
    lines, indices = _lines(n)
    backoff = kw.pop("backoff", None) or Backoff(0.001, 0.002)
    return es.deliver(indexer, lines, indices, chunk_size=3, max_bytes=10**6, retries=retries, backoff=backoff)  # type: ignore[arg-type]


class TestDeliver:
    def test_retries_only_what_was_not_taken(self) -> None:
        """429 and unanswered items are sent again, alone; 409 counts as delivered; 400 is rejected, not retried."""
        indexer = ScriptedIndexer([201, 429, 409], [400, 201], [None])
        result = _deliver(indexer, 5)
        assert (result.created, result.duplicates) == (3, 1)
        assert [item.position for item in result.rejected] == [3] and result.rejected[0].status == 400
        assert result.undelivered == [] and result.error is None
        ids = [[orjson.loads(line.split(b"\n")[0])["create"]["_id"] for line in request] for request in indexer.sent]
        assert ids == [["id0", "id1", "id2"], ["id3", "id4"], ["id1"], ["id1"]]

    def test_budget_runs_out(self) -> None:
        """After max_retries the documents still not taken are undelivered (for the fallback), with the error."""
        down = es.BulkReply.unanswered(["i", "i"], "ConnectionError: refused")
        indexer = ScriptedIndexer(*[down] * 5)
        result = _deliver(indexer, 2, retries=2)
        assert [item.position for item in result.undelivered] == [0, 1] and len(indexer.sent) == 3
        assert result.error == "ConnectionError: refused"

    def test_hopeless_request_is_not_retried(self) -> None:
        """A request refused as a whole with 401 is not sent again: the same request cannot succeed."""
        indexer = ScriptedIndexer(es.BulkReply.unanswered(["i"], "HTTP 401: security_exception", 401))
        result = _deliver(indexer, 1)
        assert len(indexer.sent) == 1 and len(result.undelivered) == 1 and "401" in (result.error or "")

    def test_a_stop_ends_the_wait(self) -> None:
        """With the backoff's stop event set, no retry waits out its delay: what is left is undelivered."""
        stop = threading.Event()
        stop.set()
        indexer = ScriptedIndexer([429])
        result = _deliver(indexer, 1, retries=5, backoff=Backoff(60, 60, stop=stop))
        assert len(indexer.sent) == 1 and len(result.undelivered) == 1


class TestBulkLines:
    def test_split_by_count_and_bytes(self) -> None:
        """Requests hold at most chunk_size documents and max_bytes bytes; an oversized line goes alone."""
        lines = [b"x" * 10] * 5 + [b"y" * 100] + [b"z" * 10] * 2
        assert es.split(range(8), lines, 3, 1000) == [[0, 1, 2], [3, 4, 5], [6, 7]]
        assert es.split(range(8), lines, 10, 45) == [[0, 1, 2, 3], [4], [5], [6, 7]]
        assert es.split([7, 2, 5], lines, 10, 1000) == [[7, 2, 5]]

    def test_create_line(self) -> None:
        """One create action with the Id JSON-escaped, then the source as it came."""
        line = es.create_line("logs-2026.11.25", 'a"b', b'{"Id":"a\\"b"}')
        action, source, end = line.split(b"\n")
        assert orjson.loads(action) == {"create": {"_index": "logs-2026.11.25", "_id": 'a"b'}}
        assert source == b'{"Id":"a\\"b"}' and end == b""

    def test_daily_index_is_the_utc_day(self) -> None:
        """The cached index name is the event's UTC day, also right before and after midnight."""
        midnight = 1764028800  # 2025-11-25T00:00:00Z
        assert es.index_name("logs", midnight - 0.001) == "logs-2025.11.24"
        assert es.index_name("logs", midnight) == "logs-2025.11.25"
        assert es.index_name("other", midnight + 86399.9) == "other-2025.11.25"
