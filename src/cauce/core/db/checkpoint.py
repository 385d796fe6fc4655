"""SQLite's WAL checkpoints, on a thread of their own instead of inside a writer's commit.

In WAL mode SQLite appends each commit's pages to the write-ahead log, and by default the
commit that takes the log past 1,000 pages copies the log back into the database file
(a checkpoint) before it returns. Under lead intake that copy was half of what commits
wrote (~110 KB a lead, 1.7 MB a group of 16) and, with the commit on the event loop's
thread (sqlite_driver.py), it held the loop for ~1 ms a group.

`WalCheckpointer` runs `PRAGMA wal_checkpoint(PASSIVE)` every few milliseconds on its
own connection and thread: SQLite does the copy with the GIL released, on the machine's
other core, without waiting for or blocking readers and writers (a passive checkpoint
copies what it can and never invokes the busy handler). Writers' own automatic
checkpoints stay as a backstop at `WRITER_CHECKPOINT_PAGES` (~40 MB of log), for a
process that runs no checkpointer (a CLI command) or one that falls behind.

A passive checkpoint never shortens the log file, so old page images stay in it until
later commits overwrite them: on a quiet server, an erased lead's personal data could
stay there for days (`secure_delete` cleans only the database file). Every
`TRUNCATE_EVERY_SECONDS` the pass is a `TRUNCATE` checkpoint instead, which empties the
log when no reader or writer is in the way; it waits for none (a busy timeout of 0 for
it) and tries again at the next pass when one was.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import structlog

log = structlog.get_logger("cauce.db.checkpoint")

# Set on every connection of the engine (engine.py): a writer checkpoints itself only
# past this many pages of log.
WRITER_CHECKPOINT_PAGES = 10_000
CHECKPOINT_INTERVAL_SECONDS = 0.05
TRUNCATE_EVERY_SECONDS = 60.0
RETRY_AFTER_FAILURE_SECONDS = 5.0


class WalCheckpointer:
    """Checkpoints one SQLite database's WAL from a daemon thread (`start`, `stop`)."""

    def __init__(
        self,
        path: Path,
        interval: float = CHECKPOINT_INTERVAL_SECONDS,
        truncate_every: float = TRUNCATE_EVERY_SECONDS,
    ) -> None:
        self.path = path
        self.interval = interval
        self.truncate_every = truncate_every
        self.truncated = 0  # log files emptied
        self.checkpoints = 0  # passes that copied at least one page
        self.pages = 0  # pages copied into the database file, in all
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._copied = 0

    def start(self) -> None:
        """Start checkpointing (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="cauce-wal-checkpoint", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop, after the pass under way if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def checkpoint(self, conn: sqlite3.Connection) -> int:
        """One passive checkpoint on `conn`; the pages it copied."""
        row: tuple[int, int, int] = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        copied = row[2]
        # `copied` counts the log's pages now in the database file, since the log last
        # started again from its beginning (a writer restarts it once all were copied).
        fresh = copied - self._copied if copied >= self._copied else copied
        self._copied = copied
        if fresh:
            self.checkpoints += 1
            self.pages += fresh
        return fresh

    def truncate(self, conn: sqlite3.Connection) -> bool:
        """One `TRUNCATE` checkpoint on `conn`, waiting for nobody (a busy timeout of 0
        for it); True if it emptied the log file."""
        timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute("PRAGMA busy_timeout=0")
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(timeout)}")
        if busy:
            return False
        self._copied = 0  # the log starts again from its beginning
        self.truncated += 1
        return True

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        due = time.monotonic() + self.truncate_every
        try:
            while not self._stop.wait(self.interval):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, check_same_thread=False)
                    if time.monotonic() >= due and self.truncate(conn):
                        due = time.monotonic() + self.truncate_every
                        continue
                    self.checkpoint(conn)
                except sqlite3.Error as exc:
                    # The writers' own checkpoints (the backstop) still run. Try again
                    # on a fresh connection, after a pause (one warning, not 20 a second).
                    log.warning("db.checkpoint_failed", error=str(exc))
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stop.wait(RETRY_AFTER_FAILURE_SECONDS)
        finally:
            if conn is not None:
                conn.close()
