"""Token authentication with a short-lived lookup cache, and a per-token rate limiter."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable

from .._errors import RateLimited, Unauthorized
from .._store import TokenInfo, hash_token
from ._settings import RateLimit

WWW_AUTHENTICATE = {"WWW-Authenticate": "Token"}
_SCHEMES = ("token", "bearer")


def not_authenticated() -> Unauthorized:
    return Unauthorized("Authentication credentials were not provided.", code="not_authenticated")


def authentication_failed(detail: str = "Incorrect authentication credentials.") -> Unauthorized:
    return Unauthorized(detail, code="authentication_failed")


def token_from_header(header: str | None) -> str:
    """The key of ``Token <key>`` or ``Bearer <key>``; raises the seed's 401s otherwise."""
    if not header or not header.strip():
        raise not_authenticated()
    parts = header.split()
    if parts[0].lower() not in _SCHEMES:
        # another scheme (Basic...) is not ours: as if no credentials were sent
        raise not_authenticated()
    if len(parts) == 1:
        raise authentication_failed("Invalid token header. No credentials provided.")
    if len(parts) > 2:
        raise authentication_failed("Invalid token header. Token string should not contain spaces.")
    return parts[1]


class TokenCache:
    """Valid tokens by hash, for ``ttl`` seconds, so that a burst of requests costs one lookup.

    Only successful lookups are kept: a token created a moment ago by ``taskreport admin`` works at once,
    and a revoked one stops working within ``ttl``.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[TokenInfo, float]] = {}

    def get(self, key: str) -> tuple[str, TokenInfo | None]:
        digest = hash_token(key)
        entry = self._entries.get(digest)
        if entry is not None and entry[1] > self._clock():
            return digest, entry[0]
        return digest, None

    def drop(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def put(self, digest: str, info: TokenInfo) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (info, self._clock() + self.ttl)


class RateLimiter:
    """A token bucket per key (an API token's id, a client's address): ``requests`` at once, refilled evenly
    over ``period``."""

    #: buckets kept before the full ones (keys idle for a whole period) are dropped
    MAX_KEYS = 10_000

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(limit.requests)
        self.refill = limit.requests / limit.period
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: Hashable) -> None:
        now = self._clock()
        with self._lock:
            if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
                self._prune(now)
            level, last = self._buckets.get(key, (self.capacity, now))
            level = min(self.capacity, level + (now - last) * self.refill)
            if level < 1.0:
                self._buckets[key] = (level, now)
                wait = max(1, math.ceil((1.0 - level) / self.refill))
                raise RateLimited(
                    f"Request was throttled. Expected available in {wait} second{'s' if wait != 1 else ''}.",
                    retry_after=wait,
                )
            self._buckets[key] = (level - 1.0, now)

    def _prune(self, now: float) -> None:
        # a bucket that has refilled is the same as no bucket; keys from many addresses must not grow forever
        for key, (level, last) in list(self._buckets.items()):
            if level + (now - last) * self.refill >= self.capacity:
                del self._buckets[key]
