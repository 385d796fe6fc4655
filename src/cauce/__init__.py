"""Cauce: a self-hosted integration hub for leads, documents, tickets and backups."""

import os as _os

__version__ = "0.1.0"

# Whether a process keeps its metrics in files shared with other processes is Cauce's
# decision: `cauce serve --workers N` makes a directory and names it in
# SHARED_METRICS_ENV for the processes it starts (`cauce.core.observability.metrics`).
# prometheus_client obeys PROMETHEUS_MULTIPROC_DIR when it is first imported, so one
# inherited from a shell would put every other command (and the test suite) in that mode,
# on a directory nobody clears: it is replaced here, before anything imports it.
SHARED_METRICS_ENV = "_CAUCE_SHARED_METRICS_DIR"
_shared = _os.environ.get(SHARED_METRICS_ENV)
if _shared:
    _os.environ["PROMETHEUS_MULTIPROC_DIR"] = _shared
else:
    _os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
