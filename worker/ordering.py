"""Per-target ordering: one task at a time per (vendor, target), and no stale overwrites.

- :class:`TargetLock`: ``SET NX PX`` with a random token, released only by its holder
  (compare-and-delete in Lua), expiring on its own if the holder dies. Its time to live
  (:func:`worker.runner.hold_seconds`) is above the longest run, so it cannot expire
  under a live holder; after a vendor timeout the holder keeps it one vendor timeout
  longer (:meth:`TargetLock.hold`) so a late write of the timed-out request lands first.
- Field versions: ``sb:fields:<vendor>:<target>`` maps each field to the ``occurred_at``
  of the event that last set it. :func:`split_stale` keeps the fields this task may
  still set (its event is not older than the one that set them); :func:`record_versions`
  notes the fields it set. Both run while the lock is held, so they cannot interleave.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis as redis_lib

from worker import keys

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_HOLD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RECORD = """
-- only raise a field's version, never lower it (belt and braces under the lock)
for i = 1, #ARGV - 1 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[#ARGV]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[#ARGV])
  end
end
return 1
"""


class TargetLock:
    def __init__(self, client: redis_lib.Redis, vendor: str, target: str, ttl: float):
        self.redis = client
        self.key = keys.target_lock(vendor, target)
        self.ttl_ms = int(ttl * 1000)
        self.token = uuid.uuid4().hex
        self._release = client.register_script(_RELEASE)
        self._hold = client.register_script(_HOLD)

    def acquire(self) -> bool:
        return bool(self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.token])

    def hold(self, seconds: float) -> None:
        """Keep the lock ``seconds`` more, then let it expire (instead of releasing it)."""
        self._hold(keys=[self.key], args=[self.token, max(1, int(seconds * 1000))])


def split_stale(
    client: redis_lib.Redis, vendor: str, target: str, fields: dict[str, Any], occurred_at: float
) -> tuple[dict[str, Any], list[str]]:
    """(fields still to set, names skipped because a newer event already set them)."""
    names = list(fields)
    if not names:
        return {}, []
    versions = client.hmget(keys.field_versions(vendor, target), names)
    fresh, stale = {}, []
    for name, version in zip(names, versions, strict=True):
        if version is not None and float(version) > occurred_at:
            stale.append(name)
        else:
            fresh[name] = fields[name]
    return fresh, stale


def record_versions(
    client: redis_lib.Redis, vendor: str, target: str, names: list[str], occurred_at: float
) -> None:
    if names:
        client.eval(_RECORD, 1, keys.field_versions(vendor, target), *names, repr(occurred_at))
