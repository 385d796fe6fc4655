"""The aiohttp transport: one pooled ``ClientSession`` per upstream, one exchange per call.

Chosen by measurement (ADR 0007): at 64 concurrent requests to a local server plain
httpx 0.28 reached about 0.05x raw aiohttp's throughput. Settings that matter:

- **Pool**: a ``TCPConnector`` with a connection limit (total and per host), keep-alive
  and aiohttp's DNS cache; built lazily on first use, inside the running loop.
- **TLS**: verification on, with the system trust store unless an ``ssl.SSLContext``
  (a private CA for a sandbox) is given. There is no switch to turn it off.
- **No ambient behaviour**: ``trust_env=False`` (no proxy from the environment, which
  would also bypass the SSRF resolver), a dummy cookie jar (no cookie set by one call
  travels with the next), redirects off (the client follows them hop by hop).
- **Timeouts**: none of aiohttp's own when the client is guarded, because the
  pipeline's per-attempt timer already bounds the exchange and one timer per attempt
  is cheaper than three; an unguarded transport gets ``total=timeout``.
- **SSRF pinning**: with a guard, DNS goes through :class:`VettingResolver`, so the
  addresses aiohttp connects to are exactly the ones the guard vetted.

aiohttp's exceptions never leave this module: they become
:mod:`cauce.core.http.errors` types.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from cauce.core.http.errors import (
    ClientClosedError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamTlsError,
)
from cauce.core.http.types import Headers, Request, Response
from cauce.core.security.ssrf import SsrfGuard

__all__ = ["AiohttpTransport", "VettingResolver"]

_NUMERIC_FLAGS: Final = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_NO_TIMEOUTS: Final = aiohttp.ClientTimeout(
    total=None, connect=None, sock_read=None, sock_connect=None
)


class VettingResolver(AbstractResolver):
    """An aiohttp resolver that answers only addresses the SSRF guard accepted.

    It is the connection's own lookup, so there is no gap between check and connect
    for a rebinding DNS server to exploit.
    """

    def __init__(self, guard: SsrfGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve and vet ``host``; raises ``UnsafeUrlError`` if any answer is refused."""
        results: list[ResolveResult] = []
        for address in await self._guard.resolve(host, port):
            addr_family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            if family not in (socket.AF_UNSPEC, addr_family):
                continue
            results.append(
                {
                    "hostname": host,
                    "host": str(address),
                    "port": port,
                    "family": addr_family,
                    "proto": 0,
                    "flags": _NUMERIC_FLAGS,
                }
            )
        if not results:
            raise OSError(f"{host} has no address of the requested family")
        return results

    async def close(self) -> None:
        """Nothing to release."""


class AiohttpTransport:
    """One upstream's connection pool (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        user_agent: str,
        pool_limit: int = 100,
        pool_limit_per_host: int = 0,
        keepalive_timeout: float = 15.0,
        dns_cache_ttl: int = 10,
        max_response_bytes: int = 16 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        guard: SsrfGuard | None = None,
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self._user_agent = user_agent
        self._pool_limit = pool_limit
        self._pool_limit_per_host = pool_limit_per_host
        self._keepalive = keepalive_timeout
        self._dns_ttl = dns_cache_ttl
        self._max_bytes = max_response_bytes
        self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._guard = guard
        self._timeout = _NO_TIMEOUTS if timeout is None else aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError(f"the HTTP client of {self.name!r} is closed")
        connector = aiohttp.TCPConnector(
            limit=self._pool_limit,
            limit_per_host=self._pool_limit_per_host,
            keepalive_timeout=self._keepalive,
            use_dns_cache=True,
            ttl_dns_cache=self._dns_ttl,
            ssl=self._ssl,
            resolver=VettingResolver(self._guard) if self._guard is not None else None,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self._user_agent},
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=True,
        )
        return self._session

    async def send(self, request: Request) -> Response:
        """Perform one exchange and read the whole body (up to the size limit)."""
        session = self._session or self._open()
        body, _ = request.body()
        try:
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=body,
                allow_redirects=False,
            ) as response:
                length = response.content_length
                if (
                    length is not None
                    and length <= self._max_bytes
                    and "Content-Encoding" not in response.headers
                ):
                    content = await response.read()  # the common case, without a frame
                else:
                    content = await self._read(response, length)
                return Response(response.status, Headers(response.headers), content, request.url)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise UpstreamTlsError(f"{self.name!r}: certificate did not verify") from exc
        except TimeoutError as exc:  # aiohttp's own timers (unguarded transports only)
            raise UpstreamTimeoutError(f"{self.name!r}: {type(exc).__name__}") from exc
        except aiohttp.InvalidURL as exc:
            raise UpstreamProtocolError(f"{self.name!r}: invalid URL") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamConnectionError(f"{self.name!r}: {type(exc).__name__}") from exc

    async def _read(self, response: aiohttp.ClientResponse, length: int | None) -> bytes:
        limit = self._max_bytes
        if length is not None and length > limit:
            raise UpstreamProtocolError(f"{self.name!r}: response body over {limit} bytes")
        # Unknown length or compressed (a small gzip can inflate without bound): count
        # the decoded bytes as they arrive.
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_any():
            total += len(chunk)
            if total > limit:
                raise UpstreamProtocolError(f"{self.name!r}: response body over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        """Close the pool; later sends raise :class:`ClientClosedError`."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
