"""The socket under a Hypercorn WebSocket, for writing pre-built frames (the switch feed's fast path).

Hypercorn turns every ASGI ``websocket.send`` into a wsproto frame, an h11 event and a
locked, shielded socket write: in a profile of the switch feed fanning out to 1,000
subscribers (``bench/fanout.py``, py-spy) that path was ~70% of the event loop's time, the
socket write itself under a tenth of it. The feed builds each frame once
(``actors/core/ws_frame.py``) and a subscriber writes all its pending frames in one go,
under the lock Hypercorn uses, so the bytes on the wire are those Hypercorn would have
written and nothing interleaves with Hypercorn's own writes (close frames, pongs).

This reaches into Hypercorn's connection objects, so it is taken only where it was
checked: an HTTP/1.1 connection of Hypercorn's Trio worker with the attributes used here
(tests/web/test_websockets.py fails if an upgrade moves them). Anything else (HTTP/2,
another server, changed internals) gets None, and the caller uses plain ASGI sends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import TCPServer


@attrs.frozen
class RawTransport:
    """Hypercorn's TCP connection and WebSocket stream behind one ``send``."""

    server: TCPServer
    stream: WSStream

    async def write(self, data: bytes) -> bool:
        """Write whole frames under Hypercorn's send lock; False once the peer is gone.

        Hypercorn shields each of its writes from cancellation; a shield costs more than a
        small write here, so this write is not shielded. A cancellation can only cut it
        while the socket is full (trio's ``send_all`` checks for it before the first
        ``send`` and then only when it has to wait): part of a frame may then be on the
        wire and nothing could follow it, so the connection is closed.
        """
        if self.stream.closed:
            return False
        lock = self.server.send_lock
        try:
            lock.acquire_nowait()  # uncontended almost always: no scheduler pass spent on it
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self.server.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        except BaseException:
            await trio.aclose_forcefully(self.server.stream)
            raise
        finally:
            lock.release()
        return True

    async def abort(self) -> None:
        """Close the TCP connection at once, under a write that cannot finish (its peer stopped reading).

        Hypercorn's reader sees the closed stream and ends the connection as if the peer
        had left; the blocked write fails and releases the lock.
        """
        await trio.aclose_forcefully(self.server.stream)


def raw_transport(send: Callable[[dict[str, Any]], Any]) -> RawTransport | None:
    """The transport under an accepted Hypercorn HTTP/1.1 WebSocket's ASGI ``send``, or None."""
    stream = getattr(send, "__self__", None)
    if not isinstance(stream, WSStream) or getattr(send, "__func__", None) is not WSStream.app_send:
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None
    server = getattr(protocol.send, "__self__", None)
    if not isinstance(server, TCPServer) or getattr(protocol.send, "__func__", None) is not TCPServer.protocol_send:
        return None
    if not isinstance(getattr(server, "send_lock", None), trio.Lock) or not hasattr(server, "stream"):
        return None
    return RawTransport(server, stream)
