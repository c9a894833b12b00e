"""Pre-built WebSocket text frames are byte for byte what wsproto (Hypercorn's framing) writes."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import TextMessage
from wsproto.frame_protocol import FrameDecoder, Opcode

from actors.core.ws_frame import text_frame


@pytest.mark.parametrize("text", ["x" * n for n in (0, 1, 125, 126, 127, 65_535, 65_536, 200_000)] + ["é€" * 50])
def test_text_frame_matches_wsproto_at_every_length_encoding(text: str) -> None:
    assert text_frame(text.encode()) == Connection(ConnectionType.SERVER).send(TextMessage(data=text))


def test_a_client_decodes_the_frame_back_to_the_text() -> None:
    decoder = FrameDecoder(client=True)
    decoder.receive_bytes(text_frame(b'{"type":"switch","symbol":"BTC/USDT"}'))
    frame = decoder.process_buffer()
    assert frame is not None
    assert (frame.opcode, frame.message_finished, frame.payload) == (
        Opcode.TEXT, True, b'{"type":"switch","symbol":"BTC/USDT"}')
