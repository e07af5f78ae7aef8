"""A TCP relay in front of Tansu that lets Debian's kcat talk to it.

Debian 12's kcat links librdkafka 2.0.2, which mis-skips the tagged fields at the end of an
ApiVersions v3 response (it reads each tag's size as a compact length, off by one). Tansu
0.6.0 always sends four such fields (the features and ZK-migration tags); a real Kafka broker
omits them when they hold defaults. The relay forwards every byte unchanged except those
fields of ApiVersions responses, which it drops. Test-only; production brokers need nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading

API_VERSIONS = 18


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _skip_tags(data: bytes, at: int) -> int:
    count, at = _uvarint(data, at)
    for _ in range(count):
        _, at = _uvarint(data, at)
        size, at = _uvarint(data, at)
        at += size
    return at


def without_top_level_tags(response: bytes) -> bytes:
    """An ApiVersions v3+ response (correlation id first) without its top-level tagged fields."""
    at = 4 + 2  # correlation id, error code
    count, at = _uvarint(response, at)
    for _ in range(count - 1):
        at = _skip_tags(response, at + 6)  # api key, min and max version
    at += 4  # throttle time
    return response[:at] + b"\x00"


class ApiVersionsShim:
    """Relays 127.0.0.1:`listen` to 127.0.0.1:`upstream` on its own thread and event loop."""

    def __init__(self, listen: int, upstream: int) -> None:
        self.listen = listen
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    def start(self) -> None:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", self.listen), self.loop
        ).result(timeout=10)

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        # Relays still open are cancelled and awaited, so none is destroyed while pending.
        asyncio.run_coroutine_threadsafe(self._cancel_relays(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _cancel_relays(self) -> None:
        relays = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for relay in relays:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            broker_in, broker_out = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_out.close()
            return
        asked: dict[int, tuple[int, int]] = {}

        async def requests() -> None:
            while True:
                size = await client_in.readexactly(4)
                frame = await client_in.readexactly(struct.unpack(">i", size)[0])
                api_key, version, correlation = struct.unpack(">hhi", frame[:8])
                asked[correlation] = (api_key, version)
                broker_out.write(size + frame)
                await broker_out.drain()

        async def responses() -> None:
            while True:
                size = await broker_in.readexactly(4)
                frame = await broker_in.readexactly(struct.unpack(">i", size)[0])
                api_key, version = asked.pop(struct.unpack(">i", frame[:4])[0], (-1, -1))
                if api_key == API_VERSIONS and version >= 3:
                    frame = without_top_level_tags(frame)
                client_out.write(struct.pack(">i", len(frame)) + frame)
                await client_out.drain()

        # Either side hanging up ends the relay: stop the other direction too, quietly.
        directions = [asyncio.ensure_future(requests()), asyncio.ensure_future(responses())]
        await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        for direction in directions:
            direction.cancel()
        for direction in directions:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await direction
        for writer in (client_out, broker_out):
            writer.close()
