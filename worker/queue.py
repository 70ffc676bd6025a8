"""The durable queue: events and their tasks stored atomically, then relayed to Celery.

Ingest calls :func:`store_event` once per event: one Lua script (atomic, one AOF entry)
stores the event, de-duplicates it on (source, id), writes each task's record and adds
the task to ``sb:due`` (the outbox). Only then does the sender get its 2xx. A relay in
each worker (:mod:`worker.relay`) moves due tasks into the Celery queue; retries and
deferrals are put back into ``sb:due`` with a later time, so Celery never holds a
countdown (a countdown longer than the Redis visibility timeout is redelivered early).

Every delivery names ``(task_id, gen)``. ``gen`` grows each time a task is scheduled; a
delivery whose gen is not the task's current one, or for a task already finished, is a
duplicate and is dropped. While a task is queued or running it keeps a lease in
``sb:due``; if the worker holding it dies, the lease expires and the relay publishes it
again, so nothing is lost without waiting for Celery's visibility timeout.

Retention (``SWITCHBOARD_EVENT_TTL_DAYS``): a task record expires that long after the
task *ends* (applied, stale, dead); an event record that long after its last task ended
(or after it was stored, if it made none), and never while one of its tasks is unfinished
or a dead letter needs it to be replayed (:data:`EVENT_HOLD`). That is also the
de-duplication window. An unfinished task is never dropped, however long its vendor stays
down. Dead letters (:mod:`worker.deadletter`) stay until replayed or discarded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib

from worker import keys
from worker.model import Event, UpdateTask

TERMINAL = frozenset({"applied", "stale", "dead"})

#: Lua every script that starts or ends a task shares: an event hash is kept (no expiry)
#: while one of its tasks (its ``tasks`` list) is unfinished or a dead letter needs it to
#: be replayed (``dl_refs``, :mod:`worker.deadletter`); else its ttl runs. Counted from
#: the task records each time, not kept as a count: nothing to drift, and events stored
#: before this existed are handled alike. A missing task record is a finished task.
EVENT_HOLD = (
    """
local function unfinished(event)
  for _, id in ipairs(cjson.decode(redis.call('HGET', event, 'tasks') or '[]')) do
    local state = redis.call('HGET', '"""
    + keys.task("")
    + """' .. id, 'state')
    if state and state ~= 'applied' and state ~= 'stale' and state ~= 'dead' then
      return true
    end
  end
  return false
end
local function event_ttl(event, ttl)
  if redis.call('EXISTS', event) == 0 then return end
  if redis.call('HEXISTS', event, 'dl_refs') == 1 or unfinished(event) then
    redis.call('PERSIST', event)
  else
    redis.call('EXPIRE', event, ttl)
  end
end
"""
)

_STORE_EVENT = (
    EVENT_HOLD
    + """
-- KEYS[1] event, KEYS[2] due, KEYS[3] waiting, KEYS[4] wake, KEYS[5..] task records
-- ARGV[1] ttl, ARGV[2] now, ARGV[3] due score, ARGV[4] event json, ARGV[5] task ids json,
-- ARGV[6..] task json, in the order of KEYS[5..]
if ARGV[6] ~= 'replay' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[6] == 'replay' then
  local old = redis.call('HGET', KEYS[1], 'tasks')
  local ids = cjson.decode(old or '[]')
  for _, id in ipairs(cjson.decode(ARGV[5])) do table.insert(ids, id) end
  -- the event too: should it have expired since the replay read it, this writes it whole
  redis.call('HSET', KEYS[1], 'event', ARGV[4], 'tasks', cjson.encode(ids))
else
  redis.call('HSET', KEYS[1], 'event', ARGV[4], 'tasks', ARGV[5])
end
local first = (ARGV[6] == 'replay') and 7 or 6
for i = 5, #KEYS do
  local id = string.sub(KEYS[i], string.len('"""
    + keys.task("")
    + """') + 1)
  redis.call('HSET', KEYS[i], 'task', ARGV[first + i - 5], 'state', 'queued', 'gen', 1,
             'attempts', '[]', 'queued_at', ARGV[2])
  -- no expiry while unfinished: the ttl starts when the task ends (finish, complete)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  redis.call('ZADD', KEYS[3], ARGV[2], id)
end
event_ttl(KEYS[1], ARGV[1])
if #KEYS > 4 then
  redis.call('DEL', KEYS[4])
  redis.call('RPUSH', KEYS[4], '1')
end
return 1
"""
)


_GUARDED = (
    EVENT_HOLD
    + """
-- KEYS[1] task record, KEYS[2] due, KEYS[3] waiting, KEYS[4] its event (finish only)
-- ARGV[1] op, ARGV[2] expected gen, ARGV[3] task id, then per op:
--   defer: due_at | reschedule: due_at, state, attempts | finish: state, attempts, stale, ttl
local cur = redis.call('HMGET', KEYS[1], 'gen', 'state')
if (not cur[1]) or cur[1] ~= ARGV[2] then return 0 end
if cur[2] == 'applied' or cur[2] == 'stale' or cur[2] == 'dead' then return 0 end
local op = ARGV[1]
if op == 'defer' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  if ARGV[5] == 'began' then redis.call('HDEL', KEYS[1], 'began') end  -- it ended here
elseif op == 'reschedule' then
  redis.call('HSET', KEYS[1], 'gen', tonumber(ARGV[2]) + 1, 'state', ARGV[5],
             'attempts', ARGV[6])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
elseif op == 'finish' then
  redis.call('HSET', KEYS[1], 'state', ARGV[4], 'attempts', ARGV[5], 'stale_fields', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[3], ARGV[3])
  event_ttl(KEYS[4], ARGV[7])
else
  return redis.error_reply('unknown op ' .. op)
end
return 1
"""
)


@dataclass
class TaskRecord:
    """A task and its delivery state, as stored at ``sb:task:<id>``."""

    task: UpdateTask
    state: str
    gen: int
    attempts: list[dict[str, Any]] = field(default_factory=list)
    queued_at: float = 0.0
    stale_fields: list[str] = field(default_factory=list)
    #: a dead letter was written for it (worker.deadletter): a run that applies it after
    #: all must resolve that entry, even if its death was never recorded here
    dead_letter: bool = False

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def event_json(event: Event) -> str:
    return json.dumps(
        {
            "source": event.source,
            "id": event.id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "payload": event.payload,
            "headers": dict(event.headers),
        },
        separators=(",", ":"),
    )


def event_from_json(text: str | bytes) -> Event:
    data = json.loads(text)
    return Event(
        data["source"],
        data["id"],
        data["type"],
        data["occurred_at"],
        data["received_at"],
        data["payload"],
        data.get("headers", {}),
    )


def _record(data: dict[bytes, bytes]) -> TaskRecord | None:
    if not data or b"task" not in data:
        return None
    return TaskRecord(
        task=UpdateTask.from_json(data[b"task"]),
        state=_text(data[b"state"]),
        gen=int(data[b"gen"]),
        attempts=json.loads(data.get(b"attempts", b"[]")),
        queued_at=float(data.get(b"queued_at", 0)),
        stale_fields=json.loads(data.get(b"stale_fields", b"[]")),
        dead_letter=data.get(b"dead_letter") == b"1",
    )


#: Lua: whether a delivery is still exactly as the relay's claim left it: same gen,
#: unfinished, due at its claim lease (``leased_until``, written by the claim), in the
#: future. ``begin``, a deferral or a reschedule moves the due score, so a delivery that
#: began, or was put off, is never taken for one still waiting in a message.
STILL_CLAIMED = """
local function still_claimed(task_key, due_key, id, gen, now)
  local cur = redis.call('HMGET', task_key, 'gen', 'state', 'leased_until')
  local score = redis.call('ZSCORE', due_key, id)
  return cur[1] == gen and cur[2] ~= 'applied' and cur[2] ~= 'stale'
      and cur[2] ~= 'dead' and score and cur[3]
      and tonumber(score) == tonumber(cur[3]) and tonumber(score) > now
end
"""

# Give back claimed deliveries that never began (the broker refused them, or Redis failed
# before ``begin``), so they are due soon, not when the claim's lease ends (an hour).
# KEYS[1] due, KEYS[2] wake; ARGV[1] when they are due (a claim lease ending before
# then needs no help), ARGV[2] task key prefix, ARGV[3..] id, gen, ...
_GIVE_BACK = (
    STILL_CLAIMED
    + """
local due_at = tonumber(ARGV[1])
local count = 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if still_claimed(ARGV[2] .. id, KEYS[1], id, ARGV[i + 1], due_at) then
    redis.call('ZADD', KEYS[1], due_at, id)
    count = count + 1
  end
end
if count > 0 then redis.call('RPUSH', KEYS[2], '1') end
return count
"""
)


_REQUEUE = (
    EVENT_HOLD
    + """
-- KEYS[1] task record, KEYS[2] due, KEYS[3] waiting, KEYS[4] wake, KEYS[5] its event
-- ARGV[1] task id, ARGV[2] task json, ARGV[3] attempts json, ARGV[4] now, ARGV[5] event ttl
local gen = (tonumber(redis.call('HGET', KEYS[1], 'gen')) or 0) + 1
redis.call('HSET', KEYS[1], 'task', ARGV[2], 'state', 'queued', 'gen', gen,
           'attempts', ARGV[3], 'queued_at', ARGV[4])
redis.call('PERSIST', KEYS[1])  -- unfinished again: kept until it ends (then the ttl starts)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('RPUSH', KEYS[4], '1')
event_ttl(KEYS[5], ARGV[5])  -- its event is kept again until the task ends
return gen
"""
)


class Queue:
    """Thin, typed access to the durable queue's keys; one per Redis client."""

    def __init__(self, client: redis_lib.Redis, event_ttl: int = 7 * 86400):
        self.redis = client
        self.event_ttl = event_ttl
        self._store = client.register_script(_STORE_EVENT)
        self._guarded = client.register_script(_GUARDED)
        self._give_back = client.register_script(_GIVE_BACK)
        self._requeue = client.register_script(_REQUEUE)

    # -- ingest --------------------------------------------------------------------------
    def store_event(
        self,
        event: Event,
        tasks: Sequence[UpdateTask],
        now: float | None = None,
        replay: bool = False,
    ) -> bool:
        """Store ``event`` and queue ``tasks`` atomically; False if it was a duplicate."""
        script_keys, argv = self.store_call(event, tasks, now, replay)
        return bool(self._store(keys=script_keys, args=argv))

    def store_call(
        self,
        event: Event,
        tasks: Sequence[UpdateTask],
        now: float | None = None,
        replay: bool = False,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :meth:`store_event`'s script (see :attr:`store_script`),
        for a caller that sends several in one pipeline (:mod:`webhooks.commit`)."""
        now = time.time() if now is None else now
        task_keys = [keys.task(t.id) for t in tasks]
        argv: list[Any] = [
            self.event_ttl,
            now,
            now,
            event_json(event),
            json.dumps([t.id for t in tasks]),
        ]
        if replay:
            argv.append("replay")
        argv += [t.to_json() for t in tasks]
        return [
            keys.event(event.source, event.id),
            keys.DUE,
            keys.WAITING,
            keys.WAKE,
            *task_keys,
        ], argv

    @property
    def store_script(self) -> Any:
        """The registered store script (``.sha``, ``.script``)."""
        return self._store

    # -- reading -------------------------------------------------------------------------
    def load_task(self, task_id: str) -> TaskRecord | None:
        return _record(self.redis.hgetall(keys.task(task_id)))

    def load_tasks(self, task_ids: Sequence[str]) -> dict[str, TaskRecord | None]:
        """Several records in one round trip (a batch of deliveries)."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(keys.task(task_id))
        return {tid: _record(data) for tid, data in zip(task_ids, pipe.execute(), strict=True)}

    def load_event(self, source: str, event_id: str) -> tuple[Event, list[str]] | None:
        data = self.redis.hgetall(keys.event(source, event_id))
        if not data:
            return None
        return event_from_json(data[b"event"]), json.loads(data.get(b"tasks", b"[]"))

    # -- state changes (worker) ---------------------------------------------------------
    # Each is one Lua script that first checks the task is still at ``gen`` and not
    # finished: a delivery that lost its lock (expired) or a duplicate that got in late can
    # never move a finished task back into the queue, nor finish a task twice.
    def give_back(self, deliveries: list[tuple[str, int]], due_at: float | None = None) -> int:
        """Make claimed deliveries that never began due at ``due_at`` (default: now) instead
        of when the claim's lease ends; how many were."""
        args: list[Any] = [time.time() if due_at is None else due_at, keys.task("")]
        for task_id, gen in deliveries:
            args += [task_id, str(gen)]
        return int(self._give_back(keys=[keys.DUE, keys.WAKE], args=args))

    def defer(self, record: TaskRecord, due_at: float, began: bool = False) -> bool:
        """Move the task's next delivery to ``due_at``, same gen (no attempt spent).

        The gen stays: a deferral is not a new schedule, so another delivery of this gen
        that is running right now can still finish the task. ``began``: this run had
        begun (``Steps.begin``) and ends here, so the next is no lost run's successor.
        """
        return bool(
            self._guarded(
                keys=[keys.task(record.task.id), keys.DUE],
                args=["defer", record.gen, record.task.id, repr(due_at), "began" if began else ""],
            )
        )

    def reschedule(
        self,
        record: TaskRecord,
        due_at: float,
        state: str = "retrying",
        attempts: list[dict[str, Any]] | None = None,
    ) -> int:
        """Schedule the next delivery at ``due_at`` with a new gen; returns it (0: lost race)."""
        gen = record.gen + 1
        done = self._guarded(
            keys=[keys.task(record.task.id), keys.DUE],
            args=[
                "reschedule",
                record.gen,
                record.task.id,
                repr(due_at),
                state,
                json.dumps(record.attempts if attempts is None else attempts),
            ],
        )
        return gen if done else 0

    def finish(
        self,
        record: TaskRecord,
        state: str,
        attempts: list[dict[str, Any]],
        stale_fields: list[str] | None = None,
    ) -> bool:
        """Mark the task terminal (applied / stale / dead) and drop its lease.

        False when the task was no longer at ``record.gen`` or already finished.
        """
        return bool(
            self._guarded(
                keys=[
                    keys.task(record.task.id),
                    keys.DUE,
                    keys.WAITING,
                    keys.event(record.task.source, record.task.event_id),
                ],
                args=[
                    "finish",
                    record.gen,
                    record.task.id,
                    state,
                    json.dumps(attempts),
                    json.dumps(stale_fields or []),
                    self.event_ttl,
                ],
            )
        )

    def requeue(
        self, task: UpdateTask, attempts: list[dict[str, Any]], now: float | None = None
    ) -> int:
        """Queue a finished (dead) task again, keeping its history; returns the new gen.
        Its event (if still stored) is kept again until the task ends."""
        now = time.time() if now is None else now
        return int(
            self._requeue(
                keys=[
                    keys.task(task.id),
                    keys.DUE,
                    keys.WAITING,
                    keys.WAKE,
                    keys.event(task.source, task.event_id),
                ],
                args=[task.id, task.to_json(), json.dumps(attempts), now, self.event_ttl],
            )
        )
