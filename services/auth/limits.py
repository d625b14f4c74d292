"""Per-key limits: requests per second (a token bucket holding one second of requests) and upload
bytes per UTC day. Each answer is None (go ahead) or the seconds to wait (429 with Retry-After).

Embedded, the counts live in this process (`LocalLimits`). In production they live in the broker's
Redis (`RedisLimits`), so that several API processes and hosts share them: the bucket is updated by
one Lua script (atomic, with Redis' own clock), the day's bytes by INCRBY on a key that expires.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Limits(Protocol):
    def take_request(self, key: str, rps: float) -> float | None: ...
    def upload_room(self, key: str, per_day: int) -> tuple[int, float]: ...
    def take_upload(self, key: str, nbytes: int, per_day: int) -> float | None: ...


def _burst(rps: float) -> float:
    return max(1.0, rps)


def _until_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (tomorrow - now).total_seconds())


class LocalLimits:
    """In this process: a token bucket per key, bytes per key and day."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic time)
        self._uploads: dict[str, tuple[str, int]] = {}  # key -> (day, bytes)
        self._lock = threading.Lock()

    def take_request(self, key: str, rps: float) -> float | None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (_burst(rps), now))
            tokens = min(_burst(rps), tokens + (now - last) * rps)
            if tokens >= 1 - 1e-9:  # (float error of the refill)
                self._buckets[key] = (max(0.0, tokens - 1), now)
                return None
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / rps

    def upload_room(self, key: str, per_day: int) -> tuple[int, float]:
        """Bytes still allowed today, and seconds until the day ends."""
        now = datetime.now(UTC)
        day = now.strftime("%Y%m%d")
        with self._lock:
            seen_day, used = self._uploads.get(key, (day, 0))
        return per_day - (used if seen_day == day else 0), _until_midnight(now)

    def take_upload(self, key: str, nbytes: int, per_day: int) -> float | None:
        now = datetime.now(UTC)
        day = now.strftime("%Y%m%d")
        with self._lock:
            seen_day, used = self._uploads.get(key, (day, 0))
            used = used if seen_day == day else 0
            if used + nbytes > per_day:
                return _until_midnight(now)
            self._uploads[key] = (day, used + nbytes)
        return None


# KEYS[1] the bucket; ARGV rate, burst. Returns the seconds to wait as a string ("0": go ahead).
_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RedisLimits:
    """In Redis (the broker's), shared by every API process."""

    prefix = "saekin:limit"

    def __init__(self, url: str) -> None:
        import redis

        self.redis: Any = redis.Redis.from_url(url, socket_timeout=2)
        self._bucket = self.redis.register_script(_BUCKET)

    def take_request(self, key: str, rps: float) -> float | None:
        wait = float(self._bucket(keys=[f"{self.prefix}:rps:{key}"], args=[rps, _burst(rps)]))
        return wait or None

    def _day_key(self, key: str, now: datetime) -> str:
        return f"{self.prefix}:upload:{key}:{now.strftime('%Y%m%d')}"

    def upload_room(self, key: str, per_day: int) -> tuple[int, float]:
        now = datetime.now(UTC)
        used = int(self.redis.get(self._day_key(key, now)) or 0)
        return per_day - used, _until_midnight(now)

    def take_upload(self, key: str, nbytes: int, per_day: int) -> float | None:
        now = datetime.now(UTC)
        day_key = self._day_key(key, now)
        pipe = self.redis.pipeline()
        pipe.incrby(day_key, nbytes)
        pipe.expire(day_key, 2 * 86400)
        used, _ = pipe.execute()
        if used > per_day:
            self.redis.decrby(day_key, nbytes)  # refused: not counted
            return _until_midnight(now)
        return None


def retry_after(seconds: float) -> int:
    """The Retry-After header's whole seconds, never 0."""
    return max(1, math.ceil(seconds))
