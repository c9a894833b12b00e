"""Two app processes sharing one private Redis: one daily budget, never overspent together;
usage persisted in Redis by both; audit records reach the stream model.audit.log."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import trio

from actors.core.rate_limit import utc_day
from actors.storage.budget_store import budget_key
from actors.storage.usage_store import RedisUsageStore
from tests.conftest import RedisServer, fast_features, free_port, render_config
from tests.test_app_process import LogReader, start
from tests.web.test_access import make_key

LIMIT = 30


async def test_two_processes_share_one_budget_through_redis(tmp_path: Path, repo: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    processes = []
    try:
        folder = tmp_path / "conf"
        folder.mkdir()
        access = folder / "access.yml"
        access.write_text(f"workspaces:\n  shared:\n    daily_predictions: {LIMIT}\n")
        token = make_key(access, "engine", "predict", workspace="shared")
        config = folder / "rules.yml"
        config.write_text(render_config(repo, redis_url=server.url)
                          + "  access:\n    file: access.yml\n    audit_file: audit.jsonl\n")
        ports = [free_port(), free_port()]
        processes = [start(config, port) for port in ports]
        logs = [LogReader(p) for p in processes]
        for log, port in zip(logs, ports, strict=True):
            await log.wait_for(f"on http://127.0.0.1:{port}")
        statuses: list[int] = []
        codes: list[str] = []

        async def hammer(port: int) -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20,
                                         headers={"Authorization": f"Bearer {token}"}) as client:
                async def one() -> None:
                    r = await client.post("/predict", json={"model_name": "fast", "features": fast_features()})
                    statuses.append(r.status_code)
                    if r.status_code != 200:
                        codes.append(r.json()["error"]["code"])
                async with trio.open_nursery() as nursery:
                    for _ in range(LIMIT):
                        nursery.start_soon(one)

        async with trio.open_nursery() as nursery:
            for port in ports:
                nursery.start_soon(hammer, port)
        assert statuses.count(200) == LIMIT, (statuses, codes)
        assert set(codes) == {"budget_exhausted"} and len(codes) == LIMIT
        redis_client = server.client()
        assert int(redis_client.get(budget_key("shared", utc_day(time.time())))) == LIMIT
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", timeout=10) as client:
            reload = await client.post("/config/reload", headers={"X-Admin-Key": "proc-test-key"})
            assert reload.status_code == 200
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for log in logs:
            await log.wait_for("model-router stopped")
        # Both flushed their counts at shutdown: the shared hash has every prediction once.
        totals = RedisUsageStore.from_url(server.url).load(utc_day(time.time()))
        assert totals[("p", "shared")] == LIMIT
        assert totals[("r", "shared", "budget_exhausted")] == LIMIT
        records = redis_client.xrange("model.audit.log")
        assert any(fields.get("action") == "config_reload" for _, fields in records), records
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        server.stop()
