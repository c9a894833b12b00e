"""The greedy clients in a process of their own, so their CPU does not skew the measuring client.

``python -m tests.faults.greedy_client HOST PORT SLOW SUBSCRIBERS``: opens SLOW connections
that send request headers a byte at a time and never finish them, SUBSCRIBERS idle
WebSocket subscribers on /ws/switches, and one subscriber that never reads (a tiny
receive buffer). Prints "ready <slow> <subscribers>" once all are open, then holds them
until its stdin closes, then exits
without closing them (the server sees them reset).
"""

from __future__ import annotations

import base64
import os
import socket
import sys

import trio
from trio_websocket import connect_websocket_url


async def slowloris(host: str, port: int, opened: list[int], stop: trio.Event) -> None:
    stream = await trio.open_tcp_stream(host, port)
    opened.append(1)
    header = b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
    async with stream:
        try:
            for byte in header:
                if stop.is_set():
                    return
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.1)  # the attack's pace
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the server gave up on this connection


def never_reading_subscriber(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/switches HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    return sock


async def main(host: str, port: int, slow: int, subscribers: int) -> None:
    opened: list[int] = []
    stop = trio.Event()
    raw = never_reading_subscriber(host, port)
    async with trio.open_nursery() as nursery:
        for _ in range(slow):
            nursery.start_soon(slowloris, host, port, opened, stop)
        sockets = [await connect_websocket_url(nursery, f"ws://{host}:{port}/ws/switches")
                   for _ in range(subscribers)]
        while len(opened) < slow:
            await trio.sleep(0.01)
        print(f"ready {len(opened)} {len(sockets)}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # hold everything until the test closes stdin
        raw.close()
        os._exit(0)  # drop every connection at once, as a crashed client would


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
