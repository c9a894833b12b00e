"""WebSocket frames built once, for writing the same bytes to many sockets (pure, no I/O).

The switch feed sends each event to every subscriber. Building the frame (RFC 6455 §5.2)
once per event, rather than once per event and subscriber, leaves a socket write as the
only per-subscriber cost. Server-to-client frames are never masked, and a whole message
fits one frame, so a frame is a 2, 4 or 10 byte header and the payload.
"""

from __future__ import annotations

FIN_TEXT = 0x81  # FIN bit, opcode 0x1 (text)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame carrying ``payload`` (UTF-8 text)."""
    length = len(payload)
    if length < 126:
        header = bytes((FIN_TEXT, length))
    elif length < 1 << 16:
        header = bytes((FIN_TEXT, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((FIN_TEXT, 127)) + length.to_bytes(8, "big")
    return header + payload
