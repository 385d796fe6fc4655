"""`cauce serve --workers N`: N uvicorn processes on one socket, sharing their metrics.

uvicorn's supervisor starts the processes, each building the app from the environment
(`app_from_environment`); it restarts one that dies or hangs, replaces them all on
SIGHUP and passes SIGTERM on. Here it also gives them a metrics directory of their own
(`cauce.SHARED_METRICS_ENV`, see `cauce.core.observability.metrics`), made before they
start and removed when they have stopped, so a scrape of any process counts the requests
all of them served; and when it reaps a process, that process's live gauges (requests in
flight) leave the sums, even if it was killed before it could say so itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

from uvicorn import Config
from uvicorn.supervisors import Multiprocess

from cauce import SHARED_METRICS_ENV
from cauce.core.observability.metrics import process_gone


class _SharedMetricsSupervisor(Multiprocess):
    """uvicorn's supervisor, telling the shared metrics of each process it replaces."""

    def __init__(self, config: Config, sockets: list[socket.socket], metrics_dir: str) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir

    def keep_subprocess_alive(self) -> None:
        """Restart the processes that died or hang, as uvicorn does; mark them gone."""
        before = self._pids()
        super().keep_subprocess_alive()
        self._gone(before)

    def restart_all(self) -> None:
        """Replace every process (SIGHUP), as uvicorn does; mark the old ones gone."""
        before = self._pids()
        super().restart_all()
        self._gone(before)

    def _pids(self) -> set[int]:
        return {process.pid for process in self.processes if process.pid is not None}

    def _gone(self, before: set[int]) -> None:
        for pid in before - self._pids():
            process_gone(pid, self.metrics_dir)


def serve_processes(config: Config, sock: socket.socket) -> None:
    """Run `config.workers` processes of `config`'s app on `sock` (bound by
    `config.bind_socket()`) until SIGTERM or SIGINT."""
    metrics_dir = tempfile.mkdtemp(prefix="cauce-metrics-")
    before = os.environ.get(SHARED_METRICS_ENV)
    os.environ[SHARED_METRICS_ENV] = metrics_dir  # the processes are spawned with it
    try:
        _SharedMetricsSupervisor(config, [sock], metrics_dir).run()
    finally:
        if before is None:
            os.environ.pop(SHARED_METRICS_ENV, None)
        else:
            os.environ[SHARED_METRICS_ENV] = before
        shutil.rmtree(metrics_dir, ignore_errors=True)


# How long the supervisor waits for a process to answer its health ping before it kills
# it and starts another. uvicorn's 5 s killed processes still starting (importing, the
# app's start-up) on a busy 2-core machine: a restart took 18-29 s, once over 60 s.
WORKER_HEALTHCHECK_SECONDS = 30


def processes_config(processes: int, options: dict[str, Any]) -> Config:
    """uvicorn's configuration of `processes` processes building the app themselves."""
    return Config(
        "cauce.app:app_from_environment",
        factory=True,
        workers=processes,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        **options,
    )
