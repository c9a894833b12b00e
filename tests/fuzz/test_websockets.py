"""/ws/predict and /ws/switches under bad messages and bad query strings (trio-websocket client).

/ws/predict: every message gets exactly one answer (a prediction, predictions, or an
error in the one shape with a 4xx status or the documented 503), and the connection stays
open: a good request after the bad ones is still answered. /ws/switches: any query string
gets ``subscribed`` or an error message, never a dropped connection without a word.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import open_websocket_url

from tests.conftest import fast_features
from tests.fuzz.checks import error_shape
from tests.fuzz.client import REQUEST_TIMEOUT_S
from tests.fuzz.conftest import Live, fuzz_in_thread
from tests.fuzz.routes import AVAILABILITY_CODES
from tests.fuzz.strategies import MB, bodies, queries

GOOD = json.dumps({"model_name": "fast", "features": fast_features()})
# Messages stay under the 4 MiB WebSocket message bound (over it, the protocol closes with 1009).
messages = st.lists(st.one_of(bodies("predict"), bodies("batch")).filter(lambda b: len(b) < 3 * MB),
                    min_size=1, max_size=4)


def check_item(item: dict[str, Any], where: str) -> None:
    if "error" in item:
        error = error_shape({"error": item["error"]}, where)
        status = item.get("status")
        assert isinstance(status, int) and (400 <= status < 500 or (
            status == 503 and error["code"] in AVAILABILITY_CODES)), f"{where}: {item}"


def check_ws_answer(answer: dict[str, Any]) -> None:
    kind = answer.get("type")
    assert kind in ("prediction", "predictions", "error"), answer
    if kind == "error":
        check_item(answer, "ws error")
    if kind == "predictions":
        for item in answer["predictions"]:
            check_item(item, "ws batch item")


async def exchange(port: int, batch: list[bytes]) -> None:
    with trio.fail_after(REQUEST_TIMEOUT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/predict") as ws:
            for message in batch:
                try:
                    await ws.send_message(message.decode())
                except UnicodeDecodeError:
                    await ws.send_message(message)  # not UTF-8: a binary frame
            for _ in batch:  # answers may come out of order; one per message
                check_ws_answer(json.loads(await ws.get_message()))
            await ws.send_message(GOOD)
            answer = json.loads(await ws.get_message())
            assert answer["type"] == "prediction", f"connection unusable after bad messages: {answer}"


async def subscribe(port: int, query: str) -> None:
    with trio.fail_after(REQUEST_TIMEOUT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/switches?{query}") as ws:
            first = json.loads(await ws.get_message())
            assert first.get("type") in ("subscribed", "error"), first
            if first["type"] == "error":
                assert isinstance(first["error"].get("code"), str), first


def predict_case(live: Live) -> Callable[[], None]:
    @given(batch=messages)
    def case(batch: list[bytes]) -> None:
        trio.run(exchange, live.main_port, batch)
        live.healthy()

    return case


def switches_case(live: Live) -> Callable[[], None]:
    @given(query=queries)
    def case(query: str) -> None:
        trio.run(subscribe, live.main_port, query)
        live.healthy()

    return case


async def test_websockets_survive_bad_messages(live: Live) -> None:
    await fuzz_in_thread([("/ws/predict", predict_case(live)), ("/ws/switches", switches_case(live))])
