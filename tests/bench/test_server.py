"""bench/_server.py: the benches use only a Redis db they were given, and only an empty one."""

from __future__ import annotations

import pytest
import redis

from bench._server import own_redis_db


def test_the_redis_db_must_be_named_explicitly() -> None:
    with pytest.raises(ValueError, match="--redis-url"):
        own_redis_db(None)
    with pytest.raises(ValueError, match="names no db index"):
        own_redis_db("redis://127.0.0.1:6379")


def test_a_db_holding_keys_is_refused_and_left_alone(redis_url: str) -> None:
    # redis_url is this test run's own db, so emptying it here touches no one else's data.
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
        assert own_redis_db(redis_url) == redis_url
        client.set("someone-elses-key", "1")
        with pytest.raises(ValueError, match="holds 1 keys"):
            own_redis_db(redis_url)
        assert client.get("someone-elses-key") == b"1"
    finally:
        client.delete("someone-elses-key")
        client.close()
