"""Apply one delivery of one task: the worker's whole decision path, free of Celery.

``process(runtime, task_id, gen)`` is what the Celery task calls. In order:
drop duplicates (finished task or superseded gen) -> dead-letter tasks that cannot run
(mapping error, unknown vendor, invalid fields) -> take the per-target lock (busy: defer)
-> drop fields a newer event already set (all stale: ``stale``) -> take a rate-limit slot
(none: defer) -> call the connector -> applied, retry later, or dead letter.
Deferrals do not count as attempts. Returns the outcome as a short string.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from worker import ordering
from worker.queue import TaskRecord
from worker.retry import GiveUp, decide
from worker.runtime import Runtime
from worker.vendors import errors
from worker.vendors.base import Connector

log = logging.getLogger("switchboard.worker")

LOCK_WAIT = 2.0  # seconds to wait for a busy target before deferring the task
RATE_WAIT_INLINE = 1.0  # rate-limit waits up to this long are slept, longer ones deferred


def process(rt: Runtime, task_id: str, gen: int) -> str:
    record = rt.queue.load_task(task_id)
    if record is None:
        return "missing"
    if record.finished or record.gen != gen:
        return "duplicate"
    rt.queue.lease(task_id, rt.run_lease)
    task = record.task
    if task.mapping_error:
        return dead(rt, record, "mapping_error", task.mapping_error)
    connector = rt.connector(task.vendor)
    if connector is None:
        return dead(rt, record, "unknown_vendor", f"no vendor named {task.vendor!r}")
    try:
        if task.op not in connector.ops:
            raise errors.Rejected(f"{connector.kind} has no op {task.op!r}")
        connector.validate_fields(task.op, task.fields)
        connector.validate_target(task.target)
    except errors.PermanentError as exc:
        return dead(rt, record, exc.code, str(exc))
    lock = ordering.TargetLock(rt.redis, task.vendor, task.target, rt.run_lease)
    if not _acquire(lock):
        return defer(rt, record, 0.2 + random.random() * 0.5)
    try:
        return _apply_locked(rt, record, connector, gen)
    finally:
        lock.release()


def _acquire(lock: ordering.TargetLock) -> bool:
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        if lock.acquire():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01 + random.random() * 0.02)


def _apply_locked(rt: Runtime, record: TaskRecord, connector: Connector, gen: int) -> str:
    current = rt.queue.load_task(record.task.id)  # a duplicate may have finished it meanwhile
    if current is None or current.finished or current.gen != gen:
        return "duplicate"
    task = record.task
    fresh, stale = ordering.split_stale(
        rt.redis, task.vendor, task.target, task.fields, task.occurred_at
    )
    if not fresh:
        rt.queue.finish(record, "stale", record.attempts, stale)
        return "stale"
    instance = connector.instance
    if instance.rate_limit:
        wait = rt.limiter.acquire(task.vendor, *instance.rate_limit)
        if wait > RATE_WAIT_INLINE:
            return defer(rt, record, wait)
        while wait > 0:
            time.sleep(wait)
            wait = rt.limiter.acquire(task.vendor, *instance.rate_limit)
    started = time.time()
    try:
        connector.apply(task.op, task.target, fresh)
    except errors.VendorError as exc:
        return _failed(rt, record, exc, started)
    attempts = record.attempts + [_attempt(started, "applied", None, None, None)]
    ordering.record_versions(rt.redis, task.vendor, task.target, list(fresh), task.occurred_at)
    rt.queue.finish(record, "applied", attempts, stale)
    if record.attempts:  # it may be a replayed dead letter: it leaves the store now
        rt.dead_letters.resolve(task.id)
    return "applied"


def _failed(rt: Runtime, record: TaskRecord, exc: errors.VendorError, started: float) -> str:
    attempt = _attempt(
        started,
        exc.code if not exc.retryable else type(exc).__name__.lower(),
        exc.status,
        rt.redactor.text(str(exc)),
        rt.redactor.text(exc.excerpt),
    )
    attempts = record.attempts + [attempt]
    vendor = rt.config.vendors[record.task.vendor]
    decision = decide(exc, attempts_in_run(attempts), vendor.retry)
    if isinstance(decision, GiveUp):
        return dead(rt, record, decision.code, str(exc), attempts)
    rt.queue.reschedule(record, time.time() + decision.delay, "retrying", attempts)
    return "retrying"


def attempts_in_run(attempts: list[dict[str, Any]]) -> int:
    """Attempts since the task last died (a replay starts a fresh run of retries)."""
    count = 0
    for attempt in reversed(attempts):
        if attempt.get("final"):
            break
        count += 1
    return count


def _attempt(
    started: float, outcome: str, status: int | None, message: str | None, excerpt: str | None
) -> dict[str, Any]:
    return {
        "at": started,
        "duration": round(time.time() - started, 4),
        "outcome": outcome,
        "status": status,
        "message": message,
        "excerpt": excerpt,
    }


def dead(
    rt: Runtime,
    record: TaskRecord,
    code: str,
    message: str,
    attempts: list[dict[str, Any]] | None = None,
) -> str:
    """Dead-letter the task; ``attempts`` is None when it died before any vendor call."""
    if attempts is None:
        attempts = record.attempts + [
            _attempt(time.time(), code, None, rt.redactor.text(message), None)
        ]
    attempts = attempts[:-1] + [{**attempts[-1], "code": code, "final": True}]
    rt.dead_letters.put(record.task, code, message, attempts)
    rt.queue.finish(record, "dead", attempts)
    return "dead"


def defer(rt: Runtime, record: TaskRecord, delay: float) -> str:
    """Run the task later without spending an attempt (busy target, rate limit)."""
    rt.queue.reschedule(record, time.time() + delay, record.state)
    return "deferred"
