"""Rate limit per vendor instance, shared by every worker through Redis (a sliding-window log).

``acquire(vendor, count, per)`` returns 0 when a call may go now (and books it), or the
seconds to wait. ``sb:rate:<vendor>`` is a sorted set of the booked calls' times (Redis's
own clock, so workers' clocks do not matter); a call may go when fewer than ``count``
were booked in the last ``per`` seconds. So ``rate_limit: "20/s"`` means what a vendor
means by it: never more than 20 calls in any one-second window, across all workers.
(A GCRA with a burst of ``count`` would allow up to twice that in the first window.)
Memory is ``count`` entries per vendor.
"""

from __future__ import annotations

import uuid

import redis as redis_lib

from worker import keys

_WINDOW = """
-- KEYS[1] log zset; ARGV[1] count, ARGV[2] per (s), ARGV[3] unique member suffix
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local count = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
if redis.call('ZCARD', KEYS[1]) < count then
  redis.call('ZADD', KEYS[1], now, tostring(now) .. ':' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(per * 1000) + 1000)
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + per - now
if wait < 0.001 then wait = 0.001 end
return tostring(wait)
"""


class RateLimiter:
    def __init__(self, client: redis_lib.Redis):
        self._script = client.register_script(_WINDOW)

    def acquire(self, vendor: str, count: int, per: float) -> float:
        """0.0 when the call may go now (it is booked); else seconds until one may."""
        return float(self._script(keys=[keys.rate(vendor)], args=[count, per, uuid.uuid4().hex]))
