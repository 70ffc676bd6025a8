"""``/healthz`` (the process answers) and ``/readyz`` (Redis reachable, a worker beating).

Readiness detail: seconds since the last worker heartbeat, the age of the oldest waiting
task, queue depth, each vendor's circuit breaker. Not ready when Redis is down or no
worker has beaten within a minute, so a stuck queue is seen before users notice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis as redis_lib
from flask import Blueprint, Response, jsonify

from config.redis_url import eviction_problem
from webhooks.state import get_state
from worker import keys
from worker.circuit import circuit_states

bp = Blueprint("health", __name__)

HEARTBEAT_LIMIT = 60.0


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def queue_detail(client: redis_lib.Redis, now: float, vendors: Iterable[str]) -> dict[str, Any]:
    """Queue depth, oldest task, dead letters, last heartbeat, and the circuits of
    ``vendors`` (the configured names: never a scan of the keyspace)."""
    pipe = client.pipeline()
    pipe.hgetall(keys.HEARTBEATS)
    pipe.zrange(keys.WAITING, 0, 0, withscores=True)
    pipe.zcard(keys.WAITING)
    pipe.llen(keys.CELERY_QUEUE)
    pipe.zcard(keys.DEAD_INDEX)
    beats, oldest, waiting, queued, dead = pipe.execute()
    last_beat = max((float(v) for v in beats.values()), default=None)
    return {
        "seconds_since_heartbeat": None if last_beat is None else round(now - last_beat, 3),
        "oldest_waiting_task_age": round(now - oldest[0][1], 3) if oldest else 0.0,
        "tasks_waiting": waiting,
        "celery_queue_depth": queued,
        "dead_letters": dead,
        # per vendor: closed / open (tasks wait, open_for s left) / half_open (probing)
        "circuits": circuit_states(client, vendors),  # in Redis's clock, as they are kept
    }


def _memory(client: redis_lib.Redis) -> dict[str, Any]:
    """``INFO memory``, or {} where the Redis user may not run INFO (an ACL): the eviction
    policy is then unknown, which is no reason to take the web out of service."""
    try:
        return client.info("memory")  # type: ignore[no-any-return]
    except redis_lib.ResponseError:  # NoPermissionError and other refusals
        return {}


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    state = get_state()
    now = time.time()
    detail: dict[str, Any] = {"config": state.config.file, "redis": "ok"}
    detail["config_loaded_at"] = round(state.loaded.at, 3)
    if state.refused:  # still ready: the running config serves (webhooks.reload)
        detail["config_refused"] = state.refused
    try:
        state.redis.ping()
        detail.update(queue_detail(state.redis, now, list(state.config.vendors)))
        memory = _memory(state.redis)
    except redis_lib.RedisError as exc:
        detail["redis"] = f"unreachable ({type(exc).__name__})"
        return jsonify({"status": "not_ready", "detail": detail}), 503
    if problem := eviction_problem(memory):
        detail["reason"] = problem
        return jsonify({"status": "not_ready", "detail": detail}), 503
    beat = detail["seconds_since_heartbeat"]
    if beat is None or beat > HEARTBEAT_LIMIT:
        detail["reason"] = "no worker heartbeat within a minute"
        return jsonify({"status": "not_ready", "detail": detail}), 503
    return jsonify({"status": "ready", "detail": detail}), 200
