"""The SSRF tests reuse the HTTP layer's scripted servers and client factory."""

from tests.core.http.conftest import clock, events, make_clients, start_server

__all__ = ["clock", "events", "make_clients", "start_server"]
