"""The engine's ceiling for the end-to-end benchmark: a Celery task that does no work.

``bench.noop`` sleeps ``ms`` (the simulator's latency, so it models a vendor call and
nothing else) and counts itself in Redis; the worker loads it with ``-I bench.noop``.
"""

from __future__ import annotations

import time

from worker.celery_app import app


@app.task(name="bench.noop")
def noop(ms: float) -> None:
    if ms:
        time.sleep(ms / 1000)
    with app.pool.acquire(block=True) as conn:
        redis = conn.default_channel.client
        pipe = redis.pipeline()
        pipe.setnx("bench:first", time.time())
        pipe.set("bench:last", time.time())
        pipe.incr("bench:done")
        pipe.execute()
