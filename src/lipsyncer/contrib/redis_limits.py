"""Fleet-wide limits in Redis: ``[limits] backend = "redis://host:6379/2"`` makes each provider's
``max_in_flight`` and ``submits_per_minute`` hold across every process and machine sharing that Redis.

A plugin (entry point ``redis-limits``) serving :meth:`~lipsyncer.core.hookspecs.LipsyncProvider.make_limit_backend`
for ``redis://``, ``rediss://`` and ``unix://`` URLs. In-flight slots are a Redis set of job ids per provider,
taken by one atomic script (a job already holding its slot keeps it), released by whichever process settles
the job. Submit rates use the ``limits`` library's moving window on the same Redis. Needs the ``celery`` extra.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio

from ..core.errors import ConfigError
from ..core.hookspecs import hookimpl

__all__ = ["RedisLimits", "make_limit_backend"]

_SCHEMES = ("redis://", "rediss://", "unix://")
_ACQUIRE = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('SADD', KEYS[1], ARGV[1])
    return 1
end
return 0
"""
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"""
_LONGEST_WAIT = 60.0
"""Seconds between re-checks of a rate window (its reset time is re-read each time)."""


class RedisLimits:
    """A :class:`~lipsyncer.core.limits.LimitBackend` on Redis; one per client (built after a fork)."""

    def __init__(self, url: str, *, prefix: str = "lipsyncer:limits") -> None:
        try:
            import redis
            from limits.storage import RedisStorage
            from limits.strategies import MovingWindowRateLimiter
        except ImportError:
            raise ConfigError(
                "the redis limits backend needs redis and limits",
                fix="pip install 'lipsyncer[celery]'",
            ) from None
        self._url = url
        self._prefix = prefix
        self._redis: Any = redis.Redis.from_url(url)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._pause = self._redis.register_script(_PAUSE)
        self._rates = MovingWindowRateLimiter(RedisStorage(url, key_prefix=f"{prefix}:rate"))

    def __repr__(self) -> str:
        from ..core.store import redacted

        return f"RedisLimits({redacted(self._url)!r})"

    def _key(self, provider_id: str, what: str) -> str:
        return f"{self._prefix}:{provider_id}:{what}"

    def try_acquire(self, provider_id: str, job_id: str, limit: int) -> bool:
        return bool(self._acquire(keys=[self._key(provider_id, "in_flight")], args=[job_id, limit]))

    def release(self, provider_id: str, job_id: str) -> None:
        self._redis.srem(self._key(provider_id, "in_flight"), job_id)

    def in_flight(self, provider_id: str) -> int:
        return int(self._redis.scard(self._key(provider_id, "in_flight")))

    async def take(self, provider_id: str, per_minute: float) -> None:
        item = _rate_item(per_minute)
        while not self._rates.hit(item, provider_id):
            stats = self._rates.get_window_stats(item, provider_id)
            await anyio.sleep(min(max(stats.reset_time - time.time(), 0.05), _LONGEST_WAIT))

    async def pause(self, provider_id: str, seconds: float) -> None:
        self._pause(keys=[self._key(provider_id, "paused")], args=[max(1, math.ceil(seconds * 1000))])

    async def paused_for(self, provider_id: str) -> float:
        left = int(self._redis.pttl(self._key(provider_id, "paused")))
        return left / 1000 if left > 0 else 0.0

    async def aclose(self) -> None:
        self._redis.close()


def _rate_item(per_minute: float) -> Any:
    """At most ``per_minute`` submits in any minute: whole numbers as a 60 s moving window; fewer than one a
    minute as one per (rounded up) interval."""
    from limits import RateLimitItemPerMinute, RateLimitItemPerSecond

    if per_minute >= 1:
        return RateLimitItemPerMinute(int(per_minute))
    return RateLimitItemPerSecond(1, math.ceil(60 / per_minute))


@hookimpl
def make_limit_backend(url: str) -> RedisLimits | None:
    """A Redis backend for ``redis://``, ``rediss://`` and ``unix://`` URLs; None for any other."""
    return RedisLimits(url) if url.startswith(_SCHEMES) else None
