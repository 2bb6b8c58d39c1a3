"""Token buckets per (project, route): in-process by default, or shared by many servers in Redis.

`take` answers 0.0 when a token was taken, else the seconds until one will be there. The Redis
backend takes tokens in one atomic Lua script using the Redis server's clock, so every API process
draws from the same budget. When Redis is unreachable the limiter fails open (ingest is worth
more than the limit), logs a warning and counts it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, NamedTuple, Protocol

from millimetric.errors import ApiError

log = logging.getLogger("millimetric.ratelimit")

WARN_EVERY_SECONDS = 30.0


class Limit(NamedTuple):
    rate: float  # tokens per second
    burst: int


DEFAULT_LIMITS: dict[str, Limit] = {
    "/v1/track": Limit(50, 200),
    "/v1/batch": Limit(5, 20),
}


def limit_for(route: str, overrides: dict[str, Any]) -> Limit | None:
    """The bucket for a route: the project's override, "off", or the default (None = unlimited)."""
    override = overrides.get(route)
    if override == "off":
        return None
    if isinstance(override, dict):
        return Limit(float(override["rate"]), int(override["burst"]))
    return DEFAULT_LIMITS.get(route)


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for `Retry-After`, never less than 1."""
    return max(1, math.ceil(wait))


class RateLimiter(Protocol):
    async def take(self, key: str, limit: Limit) -> float: ...

    async def close(self) -> None: ...


class InProcessLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated_at)

    async def take(self, key: str, limit: Limit) -> float:
        now = self._clock()
        tokens, updated = self._buckets.get(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - updated) * limit.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / limit.rate

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1] bucket; ARGV rate, burst. Returns {taken (1|0), wait in microseconds}.
_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local taken = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {taken, math.floor(wait * 1000000)}
"""


class RedisLimiter:
    def __init__(self, url: str, key_prefix: str = "millimetric:rl:") -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._redis.register_script(_TAKE_SCRIPT)
        self._prefix = key_prefix
        self.failures = 0
        self._warned_at = float("-inf")

    async def take(self, key: str, limit: Limit) -> float:
        try:
            taken, wait_us = await self._script(keys=[self._prefix + key], args=[limit.rate, limit.burst])
        except Exception as exc:  # unreachable or failing Redis: let the request through
            self.failures += 1
            if time.monotonic() - self._warned_at > WARN_EVERY_SECONDS:
                self._warned_at = time.monotonic()
                log.warning(
                    "rate limiting is failing open: Redis error %s (%d failures so far)",
                    type(exc).__name__,
                    self.failures,
                )
            return 0.0
        return 0.0 if taken == 1 else wait_us / 1e6

    async def close(self) -> None:
        await self._redis.aclose()


async def enforce(limiter: RateLimiter | None, project_id: str, route: str, overrides: dict[str, Any]) -> None:
    """Take a token for (project, route) or raise 429 rate_limited with the wait."""
    limit = limit_for(route, overrides)
    if limiter is None or limit is None:
        return
    wait = await limiter.take(f"{project_id}:{route}", limit)
    if wait > 0:
        seconds = retry_after_seconds(wait)
        raise ApiError("rate_limited", headers={"Retry-After": str(seconds)}, extra={"retry_after_s": seconds})


def create_limiter(enabled: bool, redis_url: str | None, redis_prefix: str) -> RateLimiter | None:
    if not enabled:
        return None
    return RedisLimiter(redis_url, redis_prefix) if redis_url else InProcessLimiter()
