"""The relay: moves tasks that are due from ``sb:due`` into the Celery queue.

Each worker process runs one (a thread beside the pool). A batch of due tasks is
*claimed* atomically by pushing their due time ``queue_lease`` ahead, then published;
if the relay dies between the two, the claim expires and any relay publishes them.
Several relays share the work safely. It wakes on ``sb:wake`` (ingest pushes it) or
when the next task falls due, and writes this worker's heartbeat.
"""

from __future__ import annotations

import logging
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


class Relay(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name=f"relay-{name}", daemon=True)
        self.worker_name = name
        self._stop_event = threading.Event()
        self._last_beat = 0.0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        from worker.tasks import apply_update

        rt = get_runtime()
        claim = rt.redis.register_script(_CLAIM)
        while not self._stop_event.is_set():
            try:
                self._beat(rt.redis)
                moved = relay_due(rt.redis, claim, apply_update, rt.queue_lease)
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


def relay_due(client: redis_lib.Redis, claim: Any, task: Any, queue_lease: float) -> int:
    """Publish up to BATCH due tasks; returns how many were claimed."""
    now = time.time()
    ids = claim(keys=[keys.DUE], args=[now, now + queue_lease, BATCH])
    if not ids:
        return 0
    pipe = client.pipeline()
    for task_id in ids:
        pipe.hmget(keys.task(task_id.decode()), "gen", "state")
    published = 0
    with task.app.producer_or_acquire() as producer:
        for task_id, (gen, state) in zip(ids, pipe.execute(), strict=True):
            tid = task_id.decode()
            if gen is None or state in (b"applied", b"stale", b"dead"):
                client.zrem(keys.DUE, tid)  # expired or finished: nothing to deliver
                continue
            task.apply_async(
                args=(tid, int(gen)),
                producer=producer,
                task_id=f"{tid}.{int(gen)}",
            )
            published += 1
    return len(ids)
