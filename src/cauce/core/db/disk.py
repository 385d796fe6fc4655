"""Readiness of the data directory's disk: room left for the database (SQLite's file and
its WAL) and uploads.

A full disk fails every write (503 `database_unavailable`) while reads, and so the
database's own readiness check, still pass: a crash audit saw `/readyz` answer ready
with every write refused. This check makes the load balancer see it.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

# Below this much free space the process is not ready: SQLite's WAL and a checkpoint need
# room, and an import's upload goes to the same disk.
MIN_FREE_BYTES = 64 * 1024 * 1024


class DataDiskFull(Exception):
    """The data directory's file system has less than `MIN_FREE_BYTES` free."""


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a data dir not made yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def disk_check(data_dir: Path, min_free: int = MIN_FREE_BYTES) -> Callable[[], Awaitable[None]]:
    """A readiness check (`/readyz`'s `disk`) that fails when `data_dir`'s file system
    has less than `min_free` bytes free."""

    def free_bytes() -> int:
        return shutil.disk_usage(_existing(data_dir)).free

    async def check() -> None:
        # In a thread: a hung network mount would otherwise block every request, and the
        # readiness timeout cannot interrupt a call that never gives the loop back.
        free = await asyncio.to_thread(free_bytes)
        if free < min_free:
            raise DataDiskFull(f"{free} bytes free, below {min_free}")

    return check


__all__ = ["MIN_FREE_BYTES", "DataDiskFull", "disk_check"]
