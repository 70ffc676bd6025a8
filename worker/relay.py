"""The relay: moves tasks that are due from ``sb:due`` into the Celery queue.

Each worker process runs one (a thread beside the pool). A batch of due tasks is
*claimed* atomically by pushing their due time ``queue_lease`` ahead, then published;
if the relay dies between the two, the claim expires and any relay publishes them.
Several relays share the work safely. It wakes on ``sb:wake`` (ingest pushes it) or
when the next task falls due, writes this worker's heartbeat, and makes what dead
workers held due again (:mod:`worker.holdings`).

Deliveries are published several to a message (:func:`batch_size`): a Celery message
costs about as much CPU as applying a task, so a backlog goes out in messages of up to
``SWITCHBOARD_BATCH_MAX`` (default 20) deliveries, while a trickle still goes one per
message, spread over every consumer thread (live workers x this worker's concurrency).
One script per wake-up claims, drops finished tasks, reads the Celery queue's length
and the next due time (:func:`claim_due`), so the relay costs three round trips per
wake: claim, publish, wait. Whatever fails, the thread goes on (it is this worker's only
relay); deliveries it claimed and could not publish are given back, due at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis as redis_lib
from kombu.exceptions import OperationalError

from config.redis_url import eviction_problem
from worker import keys
from worker.holdings import Recoverer
from worker.runtime import Runtime, get_runtime

log = logging.getLogger("switchboard.relay")

_CLAIM = """
-- KEYS[1] due, KEYS[2] the Celery queue (a list), KEYS[3] wake, KEYS[4] waiting
-- ARGV[1] now, ARGV[2] lease until, ARGV[3] most to claim, ARGV[4] task key prefix
-- Returns {celery queue length, next due score or '', entries taken, id1, gen1, ...}.
-- Task records are read by id (prefix .. id): one Redis, not a cluster (as everywhere).
redis.call('DEL', KEYS[3])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {tostring(redis.call('LLEN', KEYS[2])), '', tostring(#ids)}
for _, id in ipairs(ids) do
  local cur = redis.call('HMGET', ARGV[4] .. id, 'gen', 'state')
  if (not cur[1]) or cur[2] == 'applied' or cur[2] == 'stale' or cur[2] == 'dead' then
    redis.call('ZREM', KEYS[1], id)  -- finished, or gone: nothing to deliver
    if not cur[1] then redis.call('ZREM', KEYS[4], id) end  -- gone: not waiting either
  else
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', ARGV[4] .. id, 'leased_until', ARGV[2])  -- see worker.holdings
    out[#out + 1] = id
    out[#out + 1] = cur[1]
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then out[2] = nxt[2] end
return out
"""

BATCH = 500
HEARTBEAT_EVERY = 1.0
#: a worker whose heartbeat is older than this is not counted as a consumer
LIVE_WITHIN = 10.0


def batch_size(due: int, consumers: int, largest: int, backlog: int = 0) -> int:
    """Deliveries per message, 1..``largest``.

    While the Celery queue is empty, ``due`` deliveries are spread over ``consumers``
    threads (a trickle goes one per message: lowest latency). When messages are already
    waiting there (``backlog``), every consumer is busy and spreading gains nothing, so
    messages are as full as allowed: fewer messages, less broker work per task.
    """
    if backlog > 0:
        return max(1, largest)
    return max(1, min(largest, math.ceil(due / max(1, consumers))))


class Relay(threading.Thread):
    def __init__(self, name: str, concurrency: int = 1):
        super().__init__(name=f"relay-{name}", daemon=True)
        self.worker_name = name
        self.concurrency = max(1, concurrency)
        self.consumers = self.concurrency  # refreshed with each heartbeat
        self._stop_event = threading.Event()
        self._last_beat = 0.0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        rt = get_runtime()
        with contextlib.suppress(redis_lib.RedisError):  # unreachable: the loop says so
            if problem := eviction_problem(rt.redis.info("memory")):
                log.error("relay: %s", problem)
        claim = rt.redis.register_script(_CLAIM)
        recoverer = Recoverer(rt.redis)
        unpublished: list[tuple[str, int]] = []  # claimed, refused by the broker
        while not self._stop_event.is_set():
            try:
                if unpublished:  # given back first: due now, for any relay
                    rt.queue.give_back(unpublished)
                    unpublished = []
                self._relay_once(get_runtime(), claim, recoverer)  # a reloaded config too
            except NotPublished as exc:
                unpublished = exc.deliveries
                self._wait_after(exc.__cause__ or exc)
            except Exception as exc:  # never let the thread die: it is this worker's relay
                self._wait_after(exc)

    def _relay_once(self, rt: Runtime, claim: Any, recoverer: Recoverer) -> None:
        """Beat, claim what is due, publish it; sleep until more is due (or woken)."""
        from worker.tasks import apply_updates

        self._beat(recoverer, rt.settings.worker_dead_after)
        found = claim_due(claim, rt.settings.queue_lease)
        size = batch_size(
            len(found.deliveries), self.consumers, rt.settings.batch_max, found.backlog
        )
        publish(apply_updates, found.deliveries, size)
        if found.claimed < BATCH:
            self._sleep(rt.redis, found.next_due)

    def _wait_after(self, exc: BaseException) -> None:
        if isinstance(exc, redis_lib.RedisError | OperationalError):  # restarting: expected
            log.warning("relay: redis unavailable (%s); retrying", type(exc).__name__)
        else:
            log.exception("relay: unexpected %s; going on", type(exc).__name__)
        self._stop_event.wait(1.0)

    def _beat(self, recoverer: Recoverer, dead_after: float) -> None:
        """Beat, count the live consumers, and recover what dead workers held."""
        now = time.time()
        if now - self._last_beat >= HEARTBEAT_EVERY:
            client = recoverer.client
            client.hset(keys.HEARTBEATS, self.worker_name, now)
            self._last_beat = now
            beats = {k.decode(): float(v) for k, v in client.hgetall(keys.HEARTBEATS).items()}
            live = sum(1 for b in beats.values() if now - b < LIVE_WITHIN)
            self.consumers = max(1, live) * self.concurrency
            recoverer.recover_dead(beats, now, dead_after)

    def _sleep(self, client: redis_lib.Redis, next_due: float | None) -> None:
        """Until woken by ingest or the next task falls due, at most one second."""
        timeout = 1.0 if next_due is None else min(1.0, max(0.0, next_due - time.time()))
        if timeout > 0.01:
            client.blpop([keys.WAKE], timeout=timeout)  # the next claim clears the list


@dataclass(frozen=True)
class Claimed:
    """What one claim found: deliveries to publish, in due order, and the queue's state."""

    claimed: int  # entries taken from sb:due (finished ones are dropped, not delivered)
    deliveries: list[tuple[str, int]]
    backlog: int  # messages waiting in the Celery queue
    next_due: float | None  # earliest score left in sb:due


def claim_due(claim: Any, queue_lease: float) -> Claimed:
    """Claim up to BATCH due tasks (one script: lease, drop finished, queue length)."""
    now = time.time()
    reply = claim(
        keys=[keys.DUE, keys.CELERY_QUEUE, keys.WAKE, keys.WAITING],
        args=[now, now + queue_lease, BATCH, keys.task("")],
    )
    pairs = reply[3:]
    deliveries = [(pairs[i].decode(), int(pairs[i + 1])) for i in range(0, len(pairs), 2)]
    return Claimed(
        claimed=int(reply[2]),
        deliveries=deliveries,
        backlog=int(reply[0]),
        next_due=float(reply[1]) if reply[1] not in (b"", "") else None,
    )


class NotPublished(Exception):
    """The broker refused a publish; ``deliveries`` (claimed) were not sent."""

    def __init__(self, deliveries: list[tuple[str, int]]):
        super().__init__(f"{len(deliveries)} deliveries not published")
        self.deliveries = deliveries


def publish(task: Any, deliveries: list[tuple[str, int]], size: int) -> None:
    """Publish ``deliveries`` in order, ``size`` to a message; :class:`NotPublished` with
    the rest if the broker fails part way (those before it went out)."""
    start = 0
    try:
        if not deliveries:
            return
        with task.app.producer_or_acquire() as producer:
            for start in range(0, len(deliveries), size):
                chunk = deliveries[start : start + size]
                first, gen = chunk[0]
                task.apply_async(
                    args=(chunk,),
                    producer=producer,
                    task_id=f"{first}.{gen}" + (f"+{len(chunk) - 1}" if len(chunk) > 1 else ""),
                )
    except Exception as exc:
        raise NotPublished(deliveries[start:]) from exc
