"""API keys (generate / hash), webhook signing secrets, and a per-key rate limiter."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from safetune.errors import ErrorCode, SafetuneError

KEY_PREFIX = "st-"


def generate_api_key() -> str:
    """A new secret key: shown to the user once, stored only as its sha256."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # A fast hash is right here: the key carries 256 bits of entropy, so brute force is hopeless and
    # every request can afford the lookup (a slow password hash would cost each request ~100 ms).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


WEBHOOK_SECRET_PREFIX = "whsec_"


def generate_webhook_secret() -> str:
    """A tenant's webhook signing secret in the Standard Webhooks format: whsec_<base64 of 32 bytes>
    (what OpenAI's SDK and the `standardwebhooks` package expect)."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def display_prefix(key: str) -> str:
    """The first characters of a key, safe to show in listings so users can tell keys apart."""
    return key[: len(KEY_PREFIX) + 6]


PRUNE_AT = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per key (an API key's hash, a client address), in process memory.

    Good enough for one API process. With several replicas each one keeps its own buckets, so the
    effective limit multiplies by the replica count: production should move this to Redis (e.g. a
    Lua script doing the same refill arithmetic atomically, keyed by the key id).
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._pruned_at = float("-inf")

    def check(self, key_id: str, *, what: str = "requests for this API key") -> None:
        """Take one token for ``key_id`` or raise RATE_LIMITED."""
        self._take(key_id, what, cost=1.0)

    def ensure_available(self, key_id: str, *, what: str) -> None:
        """Raise RATE_LIMITED if ``key_id`` has no token left, without taking one."""
        self._take(key_id, what, cost=0.0)

    def _take(self, key_id: str, what: str, cost: float) -> None:
        now = self._clock()
        with self._lock:
            if len(self._buckets) >= PRUNE_AT and now - self._pruned_at >= 1.0:
                self._prune(now)
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens < 1.0:
                retry_after = (1.0 - bucket.tokens) / self.rate
                raise SafetuneError(
                    ErrorCode.RATE_LIMITED,
                    f"too many {what}; retry in {retry_after:.1f} s",
                    retry_after_seconds=round(retry_after, 1),
                )
            bucket.tokens -= cost

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket; dropping those bounds the memory
        # that made-up keys can take.
        full = [
            k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.capacity
        ]
        for key_id in full:
            del self._buckets[key_id]
        self._pruned_at = now
