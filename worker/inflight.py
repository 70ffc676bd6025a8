"""Calls in flight to one vendor instance, capped across every worker (``concurrency:``).

A semaphore in Redis: ``sb:inflight:<vendor>`` is a sorted set of slot tokens scored by
when their lease ends (Redis's clock). ``take`` books a slot when fewer than the limit
are live; ``release`` frees it after the call. A worker that dies mid-call frees its slot
when the lease ends, which is longer than any call can last. Without ``concurrency:``,
nothing here runs (no Redis call); ``max_in_flight`` then bounds each process alone.
"""

from __future__ import annotations

import random
import time
import uuid

import redis as redis_lib

from worker import keys

_TAKE = """
-- KEYS[1] slots zset; ARGV[1] limit, ARGV[2] lease (s), ARGV[3] token
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return 1
"""

POLL = (0.01, 0.03)  # seconds between tries while every slot is taken (jittered)


class InFlight:
    def __init__(self, client: redis_lib.Redis):
        self.redis = client
        self._take = client.register_script(_TAKE)

    def take(self, vendor: str, limit: int, lease: float, wait: float) -> str | None:
        """A slot token, waiting up to ``wait`` seconds for one; None if none came free."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while not int(self._take(keys=[keys.inflight(vendor)], args=[limit, lease, token])):
            if time.monotonic() >= deadline:
                return None
            time.sleep(random.uniform(*POLL))
        return token

    def release(self, vendor: str, token: str) -> None:
        self.redis.zrem(keys.inflight(vendor), token)
