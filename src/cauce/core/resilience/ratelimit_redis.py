"""A rate limiter shared by every process and machine, through Redis.

:class:`RedisRateLimiter` implements the :class:`~cauce.core.resilience.ratelimit.RateLimiter`
port with exactly the GCRA of :class:`~cauce.core.resilience.ratelimit.LocalRateLimiter`
(same burst, same reservations, same ``max_wait`` rejection, same drain), but keeps the
state in one Redis hash per upstream, ``<prefix><upstream>`` (``cauce:ratelimit:hubspot``),
with the fields ``tat`` (theoretical arrival time) and ``paused`` (end of a drain).

**Why a Lua script and not the ``limits`` library.** ``limits`` 5.8 (``limits.aio``
with its redis storage) offers fixed-window, moving-window and sliding-window-counter
strategies with ``hit``/``test``/``get_window_stats``. None of them is GCRA or a token
bucket, none can *reserve* a future slot (so waiters would poll and could be overtaken,
and ``max_wait`` could only be approximated), none has a "pause everyone until T"
operation for a 429, and their time is not injectable. GCRA is one float per key and
a dozen lines of Lua; one ``EVALSHA`` per admission makes each decision atomic across
every client. ``redis.asyncio`` (redis-py) runs it.

**Time.** By default the script reads the Redis server's ``TIME``: every machine then
measures against one clock and clock skew between machines does not matter at all.
Tests pass ``time_source`` (e.g. a :class:`FakeClock`'s ``now``) so the script runs on
the injected time and is deterministic. A deployment that passes its own wall clock
(``time.time``) instead accepts skew: GCRA's long-run rate is still exactly ``rate``
(every admission, early or late, moves the shared TAT by one interval), but a machine
whose clock runs ``d`` seconds ahead may send its reserved requests up to ``d`` early,
so any window can see up to about ``d * rate`` extra requests on top of the burst (NTP's
~10 ms at 200/s: 2 requests). Sleeping always uses the injected :class:`Clock`, since
only durations cross the wire. Every process of one upstream must use the same policy
(rate, burst): each call passes its own interval and tolerance to the script.

**Drain.** ``drain(s)`` (a 429 with ``Retry-After``, HubSpot's ``DAILY`` policy) writes
``paused = now + s`` and moves ``tat`` as the local limiter does, so no process sends
before then and all resume at the steady rate. A caller that slept on a reservation
asks Redis once more when it wakes (``confirm``): if a drain happened meanwhile it
queues again behind it. The key expires one second after both ``tat`` and ``paused``
are in the past, when it holds nothing a fresh key would not.

**Redis unavailable.** Failing closed would turn a cache outage into a full outage;
failing open would hammer the upstream. So each call is bounded by ``op_timeout``
and on any Redis error the limiter switches to a per-process :class:`LocalRateLimiter`
with the same policy, tells its listener (a structlog warning by default), and tries
Redis again after ``recheck_after`` seconds. During the outage N processes may send
up to N times the rate; the upstream's own 429s still drain each process. Drains are
always applied to the local limiter as well, so a pause survives Redis going away.
A waiter whose reservation came due while Redis went away is admitted (its slot was
granted; only a drain issued during its sleep can be missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cauce.core.resilience.clock import Clock
from cauce.core.resilience.errors import RateLimitedError
from cauce.core.resilience.ratelimit import LocalRateLimiter, RateLimiter

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "LoggingBackendListener",
    "RateLimitBackendListener",
    "RedisRateLimiter",
    "RedisRateLimiters",
    "connect_redis",
]

DEFAULT_KEY_PREFIX = "cauce:ratelimit:"
RateLimitBackend = Literal["redis", "local"]

# KEYS[1] the upstream's hash. ARGV: mode, now ('' = Redis TIME), interval, tolerance, arg.
# Modes: a(cquire) and c(onfirm) take arg = max wait; d(rain) the pause in seconds;
# r(elease) the reserved TAT to give back. Replies: {0} admitted, {1, wait} rejected,
# {2, wait, reserved_tat} reserved (sleep ``wait``, then confirm). Floats travel as
# '%.17g' strings: a Lua number in a reply would be truncated to an integer.
_SCRIPT = """
local key = KEYS[1]
local mode = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local interval = tonumber(ARGV[3])
local tolerance = tonumber(ARGV[4])
local arg = tonumber(ARGV[5])
local state = redis.call('HMGET', key, 'tat', 'paused')
local tat = tonumber(state[1])
local paused = tonumber(state[2])

local function save()
  local horizon = tat
  if paused then
    redis.call('HSET', key, 'tat', tat, 'paused', paused)
    if paused > horizon then horizon = paused end
  else
    redis.call('HSET', key, 'tat', tat)
  end
  redis.call('PEXPIRE', key, math.ceil((horizon - now) * 1000) + 1000)
end

if mode == 'd' then
  local pause_end = now + arg
  if not paused or pause_end > paused then paused = pause_end end
  if not tat or tat < pause_end + tolerance then tat = pause_end + tolerance end
  save()
  return {0}
end
if mode == 'r' then
  if tat and tat == arg then
    tat = tat - interval
    save()
  end
  return {0}
end
if mode == 'c' and (not paused or paused <= now) then
  return {0}
end
if not tat or tat < now then tat = now end
local wait = tat - tolerance - now
if wait <= 0 then
  tat = tat + interval
  save()
  return {0}
end
if wait > arg then
  return {1, string.format('%.17g', wait)}
end
tat = tat + interval
save()
return {2, string.format('%.17g', wait), string.format('%.17g', tat)}
"""

_ADMITTED = 0
_REJECTED = 1
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


@runtime_checkable
class RateLimitBackendListener(Protocol):
    """Told when a shared limiter switches between Redis and its local fallback."""

    def on_ratelimit_backend(
        self, upstream: str, backend: RateLimitBackend, error: BaseException | None
    ) -> None:
        """``backend`` is now in use; ``error`` is the Redis failure when it is ``"local"``."""
        ...


class LoggingBackendListener:
    """The default listener: a structlog warning on fallback, info on recovery."""

    __slots__ = ("_log",)

    def __init__(self) -> None:
        self._log = structlog.get_logger("cauce.resilience")

    def on_ratelimit_backend(
        self, upstream: str, backend: RateLimitBackend, error: BaseException | None
    ) -> None:
        """Log ``upstream.ratelimit.fallback`` (warning) or ``upstream.ratelimit.recovered``."""
        if backend == "local":
            self._log.warning(
                "upstream.ratelimit.fallback",
                upstream=upstream,
                error_type=type(error).__name__ if error is not None else None,
            )
        else:
            self._log.info("upstream.ratelimit.recovered", upstream=upstream)


def connect_redis(url: str, *, timeout: float = 0.5) -> Redis:
    """Build a client for the limiter: bounded socket timeouts and no hidden retries.

    redis-py retries a failed command up to 10 times with backoff by default; the
    limiter would rather switch to its local fallback at once. The caller closes it.
    """
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return client


class RedisRateLimiter:
    """GCRA limiter whose state lives in Redis (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        rate: float,
        burst: int = 1,
        clock: Clock,
        redis: Redis,
        fallback: RateLimiter | None = None,
        time_source: Callable[[], float] | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        op_timeout: float = 0.5,
        recheck_after: float = 5.0,
        listener: RateLimitBackendListener | None = None,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.name = name
        self.key = f"{key_prefix}{name}"
        self._clock = clock
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._script = redis.register_script(_SCRIPT)
        self._fallback: RateLimiter = (
            fallback
            if fallback is not None
            else LocalRateLimiter(name, rate=rate, burst=burst, clock=clock)
        )
        self._time = time_source
        self._op_timeout = op_timeout
        self._recheck_after = recheck_after
        self._listener: RateLimitBackendListener = (
            listener if listener is not None else LoggingBackendListener()
        )
        self._down_until: float | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self.fallbacks = 0

    @property
    def backend(self) -> RateLimitBackend:
        """``"redis"``, or ``"local"`` while Redis is considered down."""
        return "redis" if self._down_until is None else "local"

    async def acquire(self, max_wait: float | None = None) -> float:
        """Admit one request, sleeping on a reserved slot if needed; return seconds waited."""
        if not self._redis_usable():
            return await self._fallback.acquire(max_wait)
        limit = math.inf if max_wait is None else max_wait
        try:
            reply = await self._eval(b"a", limit)
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return await self._fallback.acquire(max_wait)
        self._redis_ok()
        status = int(reply[0])
        if status == _ADMITTED:
            return 0.0
        if status == _REJECTED:
            raise RateLimitedError(self.name, retry_after=float(reply[1]))
        return await self._wait(reply, limit)

    async def drain(self, for_seconds: float) -> None:
        """Admit nothing, in any process, before ``now + for_seconds``; then the steady rate."""
        pause = max(0.0, for_seconds)
        await self._fallback.drain(pause)
        if not self._redis_usable():
            return
        try:
            await self._eval(b"d", pause)
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return
        self._redis_ok()

    async def aclose(self) -> None:
        """Wait for slot give-backs still in flight. The Redis client is not closed here."""
        while self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    async def _wait(self, reply: list[Any], limit: float) -> float:
        clock = self._clock
        started = clock.now()
        while True:
            reserved = reply[2]
            try:
                await clock.sleep(float(reply[1]))
            except BaseException:
                # Cancelled while waiting: give the slot back if nobody queued behind it.
                self._give_back(reserved)
                raise
            elapsed = clock.now() - started
            try:
                reply = await self._eval(b"c", limit - elapsed)
            except _REDIS_ERRORS as exc:
                self._redis_failed(exc)
                return elapsed
            status = int(reply[0])
            if status == _ADMITTED:
                return elapsed
            if status == _REJECTED:
                raise RateLimitedError(self.name, retry_after=float(reply[1]))
            # A drain arrived while we slept; our reservation predates it. Queue again.

    async def _eval(self, mode: bytes, arg: float | bytes | str) -> list[Any]:
        now = b"" if self._time is None else repr(self._time()).encode()
        # Real time, not the injected clock: this bounds network I/O.
        async with asyncio.timeout(self._op_timeout):
            reply: list[Any] = await self._script(
                keys=[self.key],
                args=[mode, now, repr(self._interval), repr(self._tolerance), arg],
            )
        return reply

    def _give_back(self, reserved: bytes | str) -> None:
        if self._down_until is not None:
            return
        task = asyncio.get_running_loop().create_task(self._release(reserved))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, reserved: bytes | str) -> None:
        # A slot not given back only lowers the rate a little: nothing to do on failure.
        with contextlib.suppress(*_REDIS_ERRORS):
            await self._eval(b"r", reserved)

    def _redis_usable(self) -> bool:
        down_until = self._down_until
        return down_until is None or self._clock.now() >= down_until

    def _redis_failed(self, error: BaseException) -> None:
        first = self._down_until is None
        self._down_until = self._clock.now() + self._recheck_after
        if first:
            self.fallbacks += 1
            self._listener.on_ratelimit_backend(self.name, "local", error)

    def _redis_ok(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            self._listener.on_ratelimit_backend(self.name, "redis", None)


class RedisRateLimiters:
    """Builds one :class:`RedisRateLimiter` per upstream on a shared client.

    The :class:`~cauce.core.resilience.factory.ResilienceRegistry` calls it for every
    upstream whose policy enables rate limiting. ``close_client`` makes :meth:`aclose`
    close the client too (when the registry built it from a URL).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        time_source: Callable[[], float] | None = None,
        op_timeout: float = 0.5,
        recheck_after: float = 5.0,
        listener: RateLimitBackendListener | None = None,
        close_client: bool = False,
    ) -> None:
        self.redis = redis
        self._key_prefix = key_prefix
        self._time = time_source
        self._op_timeout = op_timeout
        self._recheck_after = recheck_after
        self._listener = listener
        self._close_client = close_client
        self._built: list[RedisRateLimiter] = []

    def __call__(self, name: str, *, rate: float, burst: int, clock: Clock) -> RedisRateLimiter:
        """Return a new shared limiter for upstream ``name``."""
        limiter = RedisRateLimiter(
            name,
            rate=rate,
            burst=burst,
            clock=clock,
            redis=self.redis,
            time_source=self._time,
            key_prefix=self._key_prefix,
            op_timeout=self._op_timeout,
            recheck_after=self._recheck_after,
            listener=self._listener,
        )
        self._built.append(limiter)
        return limiter

    async def aclose(self) -> None:
        """Finish every limiter's pending work, then close the client if it is ours."""
        for limiter in self._built:
            await limiter.aclose()
        if self._close_client:
            await self.redis.aclose()
