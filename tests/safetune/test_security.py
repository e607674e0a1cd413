"""safetune.security: API key hashing and the token-bucket rate limiter."""

from __future__ import annotations

import pytest

from safetune.errors import ErrorCode, SafetuneError
from safetune.security import RateLimiter, display_prefix, generate_api_key, hash_api_key


def test_keys_are_random_and_only_hashes_compare() -> None:
    a, b = generate_api_key(), generate_api_key()
    assert a != b and a.startswith("st-") and len(a) > 40
    assert len(hash_api_key(a)) == 64 and hash_api_key(a) != hash_api_key(b)
    assert a.startswith(display_prefix(a)) and len(display_prefix(a)) < 12


def test_bucket_refills_over_time() -> None:
    now = [100.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one token per second, burst 60
    for _ in range(60):
        limiter.check("k")
    with pytest.raises(SafetuneError) as info:
        limiter.check("k")
    assert info.value.code is ErrorCode.RATE_LIMITED
    assert 0 < info.value.extra["retry_after_seconds"] <= 1.0
    limiter.check("other")  # buckets are per key
    now[0] += 1.0
    limiter.check("k")
    now[0] += 3600
    for _ in range(60):  # refill is capped at the burst size
        limiter.check("k")
    with pytest.raises(SafetuneError):
        limiter.check("k")
