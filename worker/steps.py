"""The two atomic Redis steps around a vendor call, one round trip each.

``begin``: under one script, check the delivery is still current (gen, not finished),
take the per-target lock, push the task's lease ahead, read the versions of the fields it
would set, and say whether the vendor's circuit has any state. ``complete``: finish the
task (gen-guarded), raise the versions of the fields it set, and release the lock.

Doing these as one script each (rather than ~10 separate commands) is what keeps a
task's Redis cost small: a round trip from redis-py costs ~0.25 ms of CPU here. The
checks are also stronger this way: the gen check and the lock are taken atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis as redis_lib
from redis.exceptions import NoScriptError

from worker import keys
from worker.queue import EVENT_HOLD
from worker.replication import add_wait, confirm

_BEGIN = """
-- KEYS: task, due, lock, field versions, circuit
-- ARGV: gen, task id, lease until, lock token, lock ttl ms, field names...
local cur = redis.call('HMGET', KEYS[1], 'gen', 'state')
if not cur[1] then return {'missing'} end
if cur[1] ~= ARGV[1] or cur[2] == 'applied' or cur[2] == 'stale' or cur[2] == 'dead' then
  return {'duplicate'}
end
if not redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[5]) then return {'busy'} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
-- 'began' = this gen began a run that has not ended (finish, reschedule and defer end it
-- or move the gen on): finding it here means that run was lost mid-way (worker gone)
local lost = redis.call('HGET', KEYS[1], 'began') == ARGV[1]
redis.call('HSET', KEYS[1], 'began', ARGV[1])
local out = {'ok', tostring(redis.call('EXISTS', KEYS[5])), lost and '1' or '0'}
for i = 6, #ARGV do
  out[#out + 1] = redis.call('HGET', KEYS[4], ARGV[i]) or ''
end
return out
"""

_COMPLETE = (
    EVENT_HOLD
    + """
-- KEYS: task, due, waiting, field versions, lock, event
-- ARGV: gen, task id, state, attempts, stale fields, lock token, occurred_at, ttl, names...
local done = 0
local cur = redis.call('HMGET', KEYS[1], 'gen', 'state')
if cur[1] == ARGV[1] and cur[2] ~= 'applied' and cur[2] ~= 'stale' and cur[2] ~= 'dead' then
  redis.call('HSET', KEYS[1], 'state', ARGV[3], 'attempts', ARGV[4], 'stale_fields', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  local at = tonumber(ARGV[7])
  for i = 9, #ARGV do
    local v = redis.call('HGET', KEYS[4], ARGV[i])
    if (not v) or tonumber(v) < at then redis.call('HSET', KEYS[4], ARGV[i], ARGV[7]) end
  end
  event_ttl(KEYS[6], ARGV[8])
  done = 1
end
if redis.call('GET', KEYS[5]) == ARGV[6] then redis.call('DEL', KEYS[5]) end
return done
"""
)


@dataclass(frozen=True)
class Begun:
    """What ``begin`` found: ``status`` ok / busy / duplicate / missing."""

    status: str
    circuit_state: bool = False  # the vendor's circuit hash exists (then ask the circuit)
    versions: tuple[float | None, ...] = ()
    #: an earlier run of this delivery began and never ended (its worker died mid-run):
    #: the vendor may have been called already
    lost_run: bool = False


class Steps:
    """``min_replicas`` (``SWITCHBOARD_MIN_REPLICAS``): ``complete`` ends with ``WAIT`` and
    raises :class:`~worker.replication.NotReplicated` when too few replicas confirm it, so
    the runner records the outcome again (on the new master after a failover) instead of
    leaving it to a master that may die with it, which would make the vendor call again."""

    def __init__(
        self,
        client: redis_lib.Redis,
        min_replicas: int = 0,
        replica_timeout: float = 1,
        record_ttl: int = 7 * 86400,
    ):
        self._client = client
        self.record_ttl = record_ttl  # seconds a finished task's record is kept
        self._begin = client.register_script(_BEGIN)
        self._complete = client.register_script(_COMPLETE)
        self.min_replicas = min_replicas
        self.replica_timeout = replica_timeout

    def begin(
        self,
        task_id: str,
        gen: int,
        vendor: str,
        target: str,
        names: list[str],
        lease_until: float,
        token: str,
        hold: float,
    ) -> Begun:
        reply = self._begin(
            keys=[
                keys.task(task_id),
                keys.DUE,
                keys.target_lock(vendor, target),
                keys.field_versions(vendor, target),
                keys.circuit(vendor),
            ],
            args=[gen, task_id, repr(lease_until), token, int(hold * 1000), *names],
        )
        status = _text(reply[0])
        if status != "ok":
            return Begun(status)
        versions = tuple(float(v) if v not in (b"", "") else None for v in reply[3:])
        return Begun("ok", _text(reply[1]) == "1", versions, _text(reply[2]) == "1")

    def complete(
        self,
        task_id: str,
        gen: int,
        vendor: str,
        target: str,
        state: str,
        attempts: list[dict[str, Any]],
        stale: list[str],
        token: str,
        occurred_at: float,
        names: list[str],
        event_key: str,
    ) -> bool:
        """Finish the task and release the lock; False if the task had moved on.
        ``event_key``: the task's event, kept until its last task ends."""
        script_keys = [
            keys.task(task_id),
            keys.DUE,
            keys.WAITING,
            keys.field_versions(vendor, target),
            keys.target_lock(vendor, target),
            event_key,
        ]
        args = [
            gen,
            task_id,
            state,
            json.dumps(attempts),
            json.dumps(stale),
            token,
            repr(occurred_at),
            self.record_ttl,
            *names,
        ]
        if not self.min_replicas:
            return bool(self._complete(keys=script_keys, args=args))
        return self._complete_replicated(script_keys, args)

    def _complete_replicated(self, script_keys: list[str], args: list[Any]) -> bool:
        """``complete`` and ``WAIT`` in one pipeline (one connection, one round trip)."""
        replies = self._complete_and_wait(script_keys, args)
        if isinstance(replies[0], NoScriptError):  # Redis restarted: load it, once
            self._client.script_load(self._complete.script)
            replies = self._complete_and_wait(script_keys, args)
        if isinstance(replies[0], Exception):
            raise replies[0]
        done = bool(replies[0])
        confirm(replies, self.min_replicas, self.replica_timeout)
        return done

    def _complete_and_wait(self, script_keys: list[str], args: list[Any]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        pipe.evalsha(self._complete.sha, len(script_keys), *script_keys, *args)
        add_wait(pipe, self.min_replicas, self.replica_timeout)
        return pipe.execute(raise_on_error=False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
