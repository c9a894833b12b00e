"""The audit trail: JSON lines in a 0640 file, newest read back, a Redis stream copy that never blocks."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timezone
from pathlib import Path

import trio

from actors import redis_bus
from actors.core.audit import audit_record
from actors.redis_bus import RedisMessage, RedisOutbox
from actors.serving.metrics import Metrics
from actors.storage.audit_log import AUDIT_MAXLEN, AUDIT_STREAM, AuditLog, outbox_offer
from tests.conftest import RedisServer

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc).timestamp()


def record(i: int, action: str = "switch") -> dict[str, object]:
    return audit_record(now=T0 + i, action=action, outcome="ok", key_id="ops", client="127.0.0.1",
                        target=f"model-{i}", request_id=f"req-{i}")


def test_appends_json_lines_with_mode_0640(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    log = AuditLog(path)
    log.append(record(1))
    # Line-buffered: the record is in the file before append returns, without close.
    lines = path.read_text().splitlines()
    assert [json.loads(line)["target"] for line in lines] == ["model-1"]
    log.append(record(2, "config_reload"))
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [json.loads(line)["action"] for line in path.read_text().splitlines()] == ["switch", "config_reload"]
    assert log.written == 2


def test_existing_file_keeps_its_mode_and_content(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps({"action": "earlier"}) + "\n")
    path.chmod(0o600)
    log = AuditLog(path)
    log.append(record(1))
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r["action"] for r in log.read_newest(10)] == ["switch", "earlier"]


def test_read_newest_across_blocks_newest_first(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(2_000):  # ~450 KB: several 64 KiB blocks read backwards
        log.append(record(i))
    newest = log.read_newest(1_500)
    assert [r["request_id"] for r in newest] == [f"req-{i}" for i in range(1_999, 499, -1)]
    assert [r["request_id"] for r in log.read_newest(3)] == ["req-1999", "req-1998", "req-1997"]
    assert len(log.read_newest(5_000)) == 2_000
    assert log.read_newest(0) == []
    assert AuditLog(tmp_path / "missing.jsonl").read_newest(5) == []


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append(record(1))
    log.close()
    with path.open("a") as handle:
        handle.write('{"time": "2026-12-02T03:00:0')  # a crash mid-write
    assert [r["request_id"] for r in log.read_newest(5)] == ["req-1"]


def test_a_full_channel_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    metrics = Metrics()
    send, receive = trio.open_memory_channel[RedisMessage](1)
    log = AuditLog(tmp_path / "audit.jsonl", offer=outbox_offer(RedisOutbox(send, metrics)))
    log.append(record(1))
    log.append(record(2))  # nobody drains the channel: dropped, counted, the file still has it
    assert log.dropped == 1
    assert len(log.read_newest(10)) == 2
    queued = receive.receive_nowait()
    assert (queued.kind, queued.target, queued.maxlen) == ("xadd", AUDIT_STREAM, AUDIT_MAXLEN)
    assert queued.payload["request_id"] == "req-1"


async def test_records_reach_the_redis_stream(tmp_path: Path, redis_server: RedisServer) -> None:
    metrics = Metrics()
    send, receive = trio.open_memory_channel[RedisMessage](100)
    log = AuditLog(tmp_path / "audit.jsonl", offer=outbox_offer(RedisOutbox(send, metrics)))
    client = redis_server.client()
    async with trio.open_nursery() as nursery:
        await nursery.start(redis_bus.run, redis_server.url, receive, metrics)
        log.append(audit_record(now=T0, action="refused", outcome="refused", key_id="reader",
                                target="POST /models", details={"code": "forbidden"}))
        with trio.fail_after(5):
            while not await trio.to_thread.run_sync(client.xlen, AUDIT_STREAM):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    [(_, fields)] = client.xrange(AUDIT_STREAM)
    assert fields["action"] == "refused" and fields["key_id"] == "reader" and fields["target"] == "POST /models"
    assert json.loads(fields["details"]) == {"code": "forbidden"}
    assert "workspace" not in fields  # None fields are left out of stream entries
    assert log.dropped == 0
