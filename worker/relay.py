"""The relay: moves tasks that are due from ``sb:due`` into the Celery queue.

Each worker process runs one (a thread beside the pool). A batch of due tasks is
*claimed* atomically by pushing their due time ``queue_lease`` ahead, then published;
if the relay dies between the two, the claim expires and any relay publishes them.
Several relays share the work safely. It wakes on ``sb:wake`` (ingest pushes it) or
when the next task falls due, and writes this worker's heartbeat.

Deliveries are published several to a message (:func:`batch_size`): a Celery message
costs about as much CPU as applying a task, so a backlog goes out in messages of up to
``SWITCHBOARD_BATCH_MAX`` (default 20) deliveries, while a trickle still goes one per
message, spread over every consumer thread (live workers x this worker's concurrency).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

import redis as redis_lib

from worker import keys
from worker.runtime import get_runtime

log = logging.getLogger("switchboard.relay")

_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""

BATCH = 500
HEARTBEAT_EVERY = 1.0
#: a worker whose heartbeat is older than this is not counted as a consumer
LIVE_WITHIN = 10.0


def batch_max() -> int:
    return max(1, int(os.environ.get("SWITCHBOARD_BATCH_MAX") or 20))


def batch_size(due: int, consumers: int, largest: int) -> int:
    """Deliveries per message: ``due`` spread over ``consumers`` threads, 1..``largest``."""
    return max(1, min(largest, math.ceil(due / max(1, consumers))))


class Relay(threading.Thread):
    def __init__(self, name: str, concurrency: int = 1):
        super().__init__(name=f"relay-{name}", daemon=True)
        self.worker_name = name
        self.concurrency = max(1, concurrency)
        self.consumers = self.concurrency  # refreshed with each heartbeat
        self.largest = batch_max()
        self._stop_event = threading.Event()
        self._last_beat = 0.0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        from worker.tasks import apply_updates

        rt = get_runtime()
        claim = rt.redis.register_script(_CLAIM)
        while not self._stop_event.is_set():
            try:
                self._beat(rt.redis)
                size = lambda due: batch_size(due, self.consumers, self.largest)  # noqa: E731
                moved = relay_due(rt.redis, claim, apply_updates, rt.queue_lease, size)
                if moved < BATCH:
                    self._sleep(rt.redis)
            except redis_lib.RedisError as exc:  # Redis restarting: wait and go on
                log.warning("relay: redis unavailable (%s); retrying", type(exc).__name__)
                self._stop_event.wait(1.0)

    def _beat(self, client: redis_lib.Redis) -> None:
        now = time.time()
        if now - self._last_beat >= HEARTBEAT_EVERY:
            client.hset(keys.HEARTBEATS, self.worker_name, now)
            self._last_beat = now
            beats = client.hvals(keys.HEARTBEATS)
            live = sum(1 for b in beats if now - float(b) < LIVE_WITHIN)
            self.consumers = max(1, live) * self.concurrency

    def _sleep(self, client: redis_lib.Redis) -> None:
        """Until woken by ingest or the next task falls due, at most one second."""
        nxt = client.zrange(keys.DUE, 0, 0, withscores=True)
        timeout = 1.0
        if nxt:
            timeout = min(1.0, max(0.0, float(nxt[0][1]) - time.time()))
        if timeout <= 0.01:
            return
        if client.blpop([keys.WAKE], timeout=timeout):
            client.delete(keys.WAKE)


def relay_due(
    client: redis_lib.Redis,
    claim: Any,
    task: Any,
    queue_lease: float,
    size: Any = lambda due: 1,
) -> int:
    """Publish up to BATCH due tasks, ``size(n)`` deliveries per message; returns how many
    were claimed. Deliveries keep their due order inside and across messages."""
    now = time.time()
    ids = claim(keys=[keys.DUE], args=[now, now + queue_lease, BATCH])
    if not ids:
        return 0
    pipe = client.pipeline()
    for task_id in ids:
        pipe.hmget(keys.task(task_id.decode()), "gen", "state")
    deliveries: list[tuple[str, int]] = []
    gone: list[str] = []
    for task_id, (gen, state) in zip(ids, pipe.execute(), strict=True):
        if gen is None or state in (b"applied", b"stale", b"dead"):
            gone.append(task_id.decode())  # expired or finished: nothing to deliver
        else:
            deliveries.append((task_id.decode(), int(gen)))
    if gone:
        client.zrem(keys.DUE, *gone)
    step = size(len(deliveries)) if deliveries else 1
    with task.app.producer_or_acquire() as producer:
        for start in range(0, len(deliveries), step):
            chunk = deliveries[start : start + step]
            first, gen = chunk[0]
            task.apply_async(
                args=(chunk,),
                producer=producer,
                task_id=f"{first}.{gen}" + (f"+{len(chunk) - 1}" if len(chunk) > 1 else ""),
            )
    return len(ids)
