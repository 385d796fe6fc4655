"""Helpers for the Redis rate-limiter tests: the test server's URL and ways to break it.

The Redis server comes from ``CAUCE_TEST_REDIS_URL`` (set by ``scripts/services.sh``
and ``./run test``). Without it the tests skip, unless the run demands services:
``CAUCE_TEST_REQUIRE_REDIS=1``, or ``CAUCE_TEST_REQUIRE_POSTGRES=1`` when
``CAUCE_TEST_SERVICES`` includes Redis (``./run test`` starts both and sets the latter).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import pytest


def redis_test_url() -> str:
    """Return the test Redis URL, or skip (or fail, when services are required)."""
    url = os.environ.get("CAUCE_TEST_REDIS_URL")
    if url:
        return url
    services = os.environ.get("CAUCE_TEST_SERVICES", "postgres,redis")
    required = os.environ.get("CAUCE_TEST_REQUIRE_REDIS") == "1" or (
        os.environ.get("CAUCE_TEST_REQUIRE_POSTGRES") == "1" and "redis" in services
    )
    if required:
        pytest.fail("CAUCE_TEST_REDIS_URL is not set but Redis tests are required")
    pytest.skip("no Redis (set CAUCE_TEST_REDIS_URL; the README test command does)")


def closed_port_url() -> str:
    """A redis:// URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def wait_until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    """Yield to the loop (real time) until ``predicate()`` holds; fail after ``within`` s
    (a bound for a hang: it holds after a Redis round trip or two, however loaded)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 that can go down (refusing and cutting) and come back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The redis:// URL that goes through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Listen (on the same port as before, after a :meth:`stop`)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers.update((writer, upstream_writer))
        pumps = [
            asyncio.create_task(_pump(reader, upstream_writer)),
            asyncio.create_task(_pump(upstream_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, upstream_writer):
                self._writers.discard(w)
                w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (a hung Redis)."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def url(self) -> str:
        """The redis:// URL of the silent server."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start listening on a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
