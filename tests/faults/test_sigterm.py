"""SIGTERM under load: in-flight requests finish, new connections are refused, exit 0 within the grace time."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import httpx
import trio

from tests.conftest import fast_features
from tests.faults.procs import client, service

ROUTED = {"asset_class": "crypto", "horizon_ms": 5, "features": fast_features()}
GRACE_S = 5.0  # hypercorn_config's graceful_timeout


async def read_response(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data


async def test_sigterm_under_load_drains_and_exits_zero(config_path: Path) -> None:
    async with service(config_path, config_path.parent / "state.json") as proc:
        host, port = proc.url.removeprefix("http://").split(":")
        statuses: Counter[int] = Counter()
        transport_errors: list[str] = []
        body = json.dumps(ROUTED).encode()
        # A request in flight across the signal: headers and part of the body now, the rest later.
        slow = await trio.open_tcp_stream(host, int(port))
        await slow.send_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])

        async def loader() -> None:
            async with client(proc) as http:
                while True:
                    try:
                        r = await http.post("/predict", json=ROUTED)
                    except httpx.TransportError as exc:  # the port closed: expected once draining
                        transport_errors.append(type(exc).__name__)
                        return
                    statuses[r.status_code] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(loader)
            with trio.fail_after(10):
                while statuses[200] < 40:
                    await trio.sleep(0.01)  # polls the load's counter
            started = trio.current_time()
            proc.process.send_signal(signal.SIGTERM)
            await proc.log.wait_for("received SIGTERM")
            with trio.fail_after(GRACE_S):  # new connections are refused while the old ones drain
                while True:
                    try:
                        probe = await trio.open_tcp_stream(host, int(port))
                    except OSError:
                        break
                    await probe.aclose()
                    await trio.sleep(0.02)
            assert proc.process.poll() is None, "exited before the in-flight request finished"
            await slow.send_all(body[10:])
            answer = await read_response(slow)
            await slow.aclose()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["model"]["name"] == "fast"
        code = await trio.to_thread.run_sync(proc.process.wait, GRACE_S + 5)
        assert code == 0
        assert trio.current_time() - started < GRACE_S + 3
        await proc.log.wait_for("model-router stopped")
    assert set(statuses) == {200}, statuses  # no request was answered with an error
    assert len(transport_errors) == 4
