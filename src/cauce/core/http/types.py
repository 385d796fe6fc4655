"""Cauce's own small HTTP vocabulary: what adapters send and receive.

Adapters build a :class:`Request`, hand it to an :class:`HttpClient` and get a
:class:`Response` (or a classified error from :mod:`cauce.core.http.errors`); they never
see the library underneath, so the transport can change, and tests can fake the
:class:`HttpClient` port (one method) or the :class:`Transport` below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

import orjson

__all__ = [
    "IDEMPOTENT_METHODS",
    "Headers",
    "HttpClient",
    "Request",
    "Response",
    "Transport",
]

#: Methods a retry cannot apply twice (RFC 9110 §9.2.2); others need an idempotency key.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_JSON: Final = "application/json"


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header map; repeated headers are joined with ``", "``.

    Built lazily: wrapping a transport's header multimap costs nothing until someone
    reads a header, which on the hot path (a 2xx nobody inspects) is never.
    """

    __slots__ = ("_items", "_source")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._source = items
        self._items: dict[str, str] | None = None

    def _merged(self) -> dict[str, str]:
        merged = self._items
        if merged is None:
            merged = {}
            source = self._source
            pairs = source.items() if isinstance(source, Mapping) else source
            for key, value in pairs:
                name = key.lower()
                previous = merged.get(name)
                merged[name] = value if previous is None else f"{previous}, {value}"
            self._items = merged
            self._source = ()
        return merged

    def __getitem__(self, key: str) -> str:
        return self._merged()[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._merged()

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def __repr__(self) -> str:
        return f"Headers({self._merged()!r})"


@dataclass(slots=True)
class Request:
    """One HTTP request as an adapter states it (treat it as immutable; not frozen, for speed).

    Give ``json`` (encoded with orjson, ``Content-Type: application/json``) or raw
    ``content``, not both. ``params`` are added to the URL's query. A non-idempotent
    method (POST, PATCH) is retried only when it carries an ``idempotency_key``, which
    the client sends in the upstream's idempotency header.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    params: Mapping[str, str] | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if self.json is not None and self.content is not None:
            raise ValueError("give json or content, not both")
        if not self.method.isupper():
            self.method = self.method.upper()

    @property
    def idempotent(self) -> bool:
        """True when sending this request twice is as good as sending it once."""
        return self.method in IDEMPOTENT_METHODS

    def body(self) -> tuple[bytes | None, str | None]:
        """Return the encoded body and the content type it implies (None: leave as is)."""
        if self.json is not None:
            return orjson.dumps(self.json), _JSON
        return self.content, None

    @classmethod
    def get(
        cls,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] = _EMPTY,
    ) -> Request:
        """A GET request."""
        return cls("GET", url, headers=headers, params=params)

    @classmethod
    def delete(cls, url: str, *, headers: Mapping[str, str] = _EMPTY) -> Request:
        """A DELETE request."""
        return cls("DELETE", url, headers=headers)

    @classmethod
    def post(
        cls,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] = _EMPTY,
        idempotency_key: str | None = None,
    ) -> Request:
        """A POST request (retried only with an ``idempotency_key``)."""
        return cls(
            "POST",
            url,
            headers=headers,
            json=json,
            content=content,
            idempotency_key=idempotency_key,
        )

    @classmethod
    def put(
        cls,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] = _EMPTY,
    ) -> Request:
        """A PUT request."""
        return cls("PUT", url, headers=headers, json=json, content=content)

    @classmethod
    def patch(
        cls,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] = _EMPTY,
        idempotency_key: str | None = None,
    ) -> Request:
        """A PATCH request (retried only with an ``idempotency_key``)."""
        return cls(
            "PATCH",
            url,
            headers=headers,
            json=json,
            content=content,
            idempotency_key=idempotency_key,
        )


@dataclass(slots=True)
class Response:
    """A complete upstream answer: status, headers and the whole body (treat as immutable).

    Not frozen on purpose: a frozen dataclass costs several microseconds per instance,
    and two are built per request on the hot path.
    """

    status: int
    headers: Headers = field(default_factory=Headers)
    content: bytes = b""
    url: str = ""

    @property
    def ok(self) -> bool:
        """True for 2xx."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """Decode the body as JSON (raises ``orjson.JSONDecodeError``, a ``ValueError``)."""
        return orjson.loads(self.content)

    def text(self, encoding: str = "utf-8") -> str:
        """Decode the body as text, replacing undecodable bytes."""
        return self.content.decode(encoding, errors="replace")


class HttpClient(Protocol):
    """The port adapters depend on: one upstream's guarded HTTP client.

    ``send`` returns 2xx/3xx responses and raises for everything else: a
    :class:`~cauce.core.resilience.RetryableError` (429, 408, 5xx, timeouts, connection
    failures, each with ``retry_after`` when the upstream gave one) or a permanent
    :class:`~cauce.core.http.errors.UpstreamClientError` (other 4xx) carrying the
    response. Guards (deadline, retry, breaker, bulkhead, rate limit) are already applied.
    """

    @property
    def upstream(self) -> str:
        """The upstream's name (the key of its policy and metrics)."""
        ...

    async def send(self, request: Request) -> Response:
        """Send ``request`` under the upstream's guards and return the final response."""
        ...


class Transport(Protocol):
    """One HTTP exchange, no guards, no redirects, no classification.

    The layer under :class:`HttpClient`: the aiohttp transport implements it, the fault
    injector wraps it, and tests may fake it. It raises only Cauce errors
    (:class:`~cauce.core.http.errors.UpstreamConnectionError` and friends).
    """

    async def send(self, request: Request) -> Response:
        """Perform exactly one exchange; ``request.json`` must already be encoded."""
        ...

    async def close(self) -> None:
        """Release pooled connections; the transport is unusable afterwards."""
        ...
