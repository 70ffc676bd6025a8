"""Rate limit per vendor instance, shared by every worker through Redis (GCRA in Lua).

``acquire(vendor, count, per)`` returns 0 when a call may go now (and books it), or the
seconds to wait. The generic cell rate algorithm keeps one timestamp per vendor and
allows bursts up to ``count`` within ``per`` seconds.
"""

from __future__ import annotations

import redis as redis_lib

from worker import keys

_GCRA = """
-- KEYS[1] tat key; ARGV[1] interval (s per call), ARGV[2] burst window (s)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - window + interval
if now < allow_at then return tostring(allow_at - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""


class RateLimiter:
    def __init__(self, client: redis_lib.Redis):
        self._script = client.register_script(_GCRA)

    def acquire(self, vendor: str, count: int, per: float) -> float:
        """0.0 when the call may go now; else seconds until it may."""
        interval = per / count
        return float(self._script(keys=[keys.rate(vendor)], args=[interval, per]))
