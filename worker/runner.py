"""Apply one delivery of one task: the worker's whole decision path, free of Celery.

``process(runtime, task_id, gen)`` is what the Celery task calls. In order:
drop duplicates (finished task or superseded gen) -> dead-letter tasks that cannot run
(mapping error, unknown vendor, invalid fields) -> take the per-target lock (busy: defer)
-> drop fields a newer event already set (all stale: ``stale``) -> ask the vendor's
circuit breaker (open: defer to the end of its cooldown) -> take a rate-limit slot (none:
defer) -> take an in-flight slot if the vendor has ``concurrency:`` (none: defer) -> call
the connector -> applied, retry later, or dead letter.
Deferrals do not count as attempts, nor do the vendor's own 429 answers (up to a bound).
Returns the outcome as a short string.

Why the lock is held as long as it is: a request that timed out may still be applied by
the vendor afterwards (our client gave up, the vendor did not). After a timeout the lock is
kept for one more vendor timeout (``fence``) instead of being released, so the next task
for that target does not race the late write. A worker that dies mid-call leaves the lock
to expire after ``hold_seconds``, which is longer than any call it can have in flight.
"""

from __future__ import annotations

import logging
import random
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.logs import event as log_event
from worker import keys, ordering
from worker.circuit import Circuit
from worker.metrics import note_task
from worker.queue import TaskRecord
from worker.replication import NotReplicated
from worker.retry import GiveUp, decide_after
from worker.runtime import Runtime
from worker.steps import Begun
from worker.timing import (
    RATE_WAIT_INLINE,
    SLOT_WAIT_INLINE,
    hold_seconds,
    op_seconds,
)
from worker.vendors import errors
from worker.vendors.base import Connector, RetryPolicy, VendorInstance, answered

log = logging.getLogger("switchboard.worker")

LOCK_WAIT = 1.0  # seconds to wait for a busy target before deferring the task
#: recording the outcome after the vendor call rides out a Redis restart or a Sentinel
#: failover (~20 s: 0.2, 0.4, 0.8, 1.6, then 2 s apart), and, with
#: SWITCHBOARD_MIN_REPLICAS, a record the replicas have not confirmed (it is written
#: again, to the new master if the old one died with it); the step is gen-guarded, so a
#: retry of one that did land changes nothing. Giving up leaves the task to its lease,
#: and then the vendor gets the same update a second time.
COMPLETE_RETRY = Retry(
    ExponentialBackoff(cap=2.0, base=0.1),
    retries=12,
    supported_errors=(
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        socket.timeout,
        NotReplicated,
    ),
)


def process(
    rt: Runtime,
    task_id: str,
    gen: int,
    preloaded: dict[str, TaskRecord | None] | None = None,
    lock_wait: float = LOCK_WAIT,
) -> str:
    """Run one delivery; ``preloaded`` records (read for a whole batch in one round trip)
    save reading this one: ``begin`` re-checks gen and state atomically anyway.
    ``lock_wait``: how long to wait for a busy target before deferring (0 inside a
    message of several deliveries, so one busy record does not hold up the others)."""
    if preloaded is not None and task_id in preloaded:
        record = preloaded[task_id]
    else:
        record = rt.queue.load_task(task_id)
    if record is None:
        return "missing"
    note_task(record.task, record.attempts)
    if record.finished or record.gen != gen:
        return "duplicate"
    runnable = _runnable(rt, record)
    if isinstance(runnable, str):
        return runnable  # dead-lettered, or retried (a vendor this worker lacks)
    connector, clean = runnable
    task = record.task
    lock = ordering.TargetLock(rt.redis, task.vendor, connector.record_key(task.op, task.target))
    begun = _begin(rt, record, lock, hold_seconds(rt, connector.instance), lock_wait)
    if begun.status == "busy":
        return defer(rt, record, 0.1 + random.random() * 0.4)
    if begun.status != "ok":
        return begun.status  # duplicate / missing: finished or rescheduled meanwhile
    if begun.lost_run:
        log_event(
            log, "task run again after a lost run", at=logging.WARNING, task_id=task.id,
            event_id=task.event_id, source=task.source, vendor=task.vendor, gen=record.gen,
            note="its last run began and never ended (worker gone?): the vendor may have "
            "been called already",
        )  # fmt: skip
    fence, released = 0.0, False
    try:
        outcome, fence, released = _apply_locked(rt, record, connector, lock, begun, clean)
        return outcome
    finally:
        if not released:
            _let_go(lock, fence)


def _runnable(rt: Runtime, record: TaskRecord) -> tuple[Connector, Validated] | str:
    """The task's connector and its checked target and fields; or, for a task that cannot
    run, its outcome: a mapping error or invalid fields dead-lettered, an unknown vendor
    retried (a rollout: the web's config may be newer)."""
    task = record.task
    if task.mapping_error:
        return dead(rt, record, "mapping_error", task.mapping_error)
    connector = rt.connector(task.vendor)
    if connector is None:
        gone = errors.UnknownVendor(f"no vendor named {task.vendor!r} in this worker's config")
        return _failed(rt, record, gone, time.time())
    try:
        if task.op not in connector.ops:
            raise errors.Rejected(f"{connector.kind} has no op {task.op!r}")
        target = connector.validate_target(task.target)
        return connector, Validated(target, connector.validate_fields(task.op, task.fields))
    except errors.PermanentError as exc:
        return dead(rt, record, exc.code, str(exc))


def _let_go(lock: ordering.TargetLock, fence: float) -> None:
    """Release the target, or after a timeout keep it for ``fence`` s: a request that
    timed out may still land, and the next task for the target must not race it."""
    if fence > 0:
        lock.hold(fence)
    else:
        lock.release()


def _begin(
    rt: Runtime, record: TaskRecord, lock: ordering.TargetLock, hold: float, lock_wait: float
) -> Begun:
    """``begin`` (lock + lease + field versions), retried while the target is busy."""
    task = record.task
    deadline = time.monotonic() + lock_wait
    while True:
        begun = rt.steps.begin(
            task.id,
            record.gen,
            task.vendor,
            lock.record,
            ordering.version_names(task.fields),
            time.time() + hold,
            lock.token,
            hold,
        )
        if begun.status != "busy" or time.monotonic() >= deadline:
            return begun
        time.sleep(0.01 + random.random() * 0.02)


def circuit_for(rt: Runtime, instance: VendorInstance) -> Circuit:
    policy = instance.circuit
    return Circuit(
        rt.redis,
        instance.name,
        failures=policy.failures,
        cooldown=policy.cooldown,
        probe_ttl=hold_seconds(rt, instance),
    )


@dataclass(frozen=True)
class Validated:
    """The task's target and fields as the connector's schemas returned them."""

    target: Any
    fields: dict[str, Any]


@dataclass
class Admission:
    """What let a call go: the circuit breaker (if it had to be asked) and its decision, and
    the shared in-flight slot (if the vendor has ``concurrency:``) to give back after."""

    circuit: Circuit | None
    decision: Any
    slot: str | None = None

    def release_probe(self) -> None:
        """A half-open circuit's probe that will not go (or told nothing): free it."""
        if self.circuit and self.decision and self.decision.verdict == "probe":
            self.circuit.release()


def _admit(rt: Runtime, instance: VendorInstance, begun: Begun) -> Admission | float:
    """Ask the circuit breaker, the rate limit and the in-flight cap, in that order; short
    waits are slept here. The :class:`Admission`, or the seconds to defer the task by."""
    # A vendor with no circuit state is closed: no need to ask (one round trip saved).
    circuit = circuit_for(rt, instance) if begun.circuit_state else None
    decision = circuit.allow() if circuit else None
    if decision is not None and not decision.allowed:
        return float(decision.wait + random.random() * 0.5)
    admission = Admission(circuit, decision)
    if instance.rate_limit:
        wait = _rate_slot(rt, instance.name, instance.rate_limit)
        if wait > 0:
            admission.release_probe()
            return wait
    if instance.concurrency:  # a cap shared by all workers: wait a little, then defer
        admission.slot = rt.inflight.take(
            instance.name, instance.concurrency, op_seconds(instance), SLOT_WAIT_INLINE
        )
        if admission.slot is None:
            admission.release_probe()
            return SLOT_WAIT_INLINE * (1 + random.random())
    return admission


def _rate_slot(rt: Runtime, vendor: str, limit: tuple[int, float]) -> float:
    """0 once a rate-limit slot is booked, sleeping for it at most ``RATE_WAIT_INLINE`` in
    all; else the seconds to defer by. The bound matters: the lock and lease are sized
    for it, and a run that outlived them could send its value after a newer task's."""
    deadline = time.monotonic() + RATE_WAIT_INLINE
    while True:
        wait = rt.limiter.acquire(vendor, *limit)
        if wait <= 0:
            return 0.0
        if time.monotonic() + wait > deadline:
            return wait
        time.sleep(wait)


def _apply_locked(
    rt: Runtime,
    record: TaskRecord,
    connector: Connector,
    lock: ordering.TargetLock,
    begun: Begun,
    clean: Validated,
) -> tuple[str, float, bool]:
    """(outcome, seconds to keep the lock after a timeout, whether the lock was released)."""
    task = record.task
    fresh, stale = ordering.split_by_versions(task.fields, begun.versions, task.occurred_at)
    if not fresh:
        _complete(rt, record, lock, "stale", record.attempts, ordering.dotted(stale), [])
        return "stale", 0.0, True
    instance = connector.instance
    admitted = _admit(rt, instance, begun)
    if not isinstance(admitted, Admission):
        return defer(rt, record, admitted, began=True), 0.0, False
    circuit = admitted.circuit
    started = time.time()
    answered(reset=True)
    try:
        # validated once, before the lock; send only the fields that are not stale
        connector.apply_clean(task.op, clean.target, ordering.pick(clean.fields, fresh))
    except errors.VendorError as exc:
        if isinstance(exc, (errors.Timeout, errors.Unavailable)):
            _advise("count a failure", (circuit or circuit_for(rt, instance)).failure)
        elif isinstance(exc, errors.RateLimited):
            _advise("free a probe", admitted.release_probe)  # says nothing about its health
        elif circuit:
            _advise("count a success", circuit.success)  # it answered: it is up
        fence = instance.timeout if isinstance(exc, errors.Timeout) else 0.0
        return _failed(rt, record, exc, started), fence, False
    except Exception as exc:  # a connector bug, or an answer it did not expect
        # the traceback as text, redacted by the connector: its session ids and tokens are
        # secrets no config names, so the log formatter's redaction cannot know them
        trace = connector.redact("".join(traceback.format_exception(exc)))
        log.error("task %s: %s raised %s\n%s", task.id, connector.name, type(exc).__name__, trace)
        _advise("free a probe", admitted.release_probe)  # says nothing about its health
        unexpected = errors.Unexpected(f"{connector.name}: {type(exc).__name__}: {exc}")
        return _failed(rt, record, connector.scrub(unexpected), started), 0.0, False
    finally:
        if admitted.slot is not None:
            slot = admitted.slot
            _advise("free an in-flight slot", lambda: rt.inflight.release(task.vendor, slot))
    attempts = record.attempts + [_attempt(started, "applied", answered(), None, None)]
    _complete(rt, record, lock, "applied", attempts, ordering.dotted(stale), ordering.dotted(fresh))
    if circuit:
        _advise("count a success", circuit.success)
    return "applied", 0.0, True


def _advise(what: str, step: Callable[[], object]) -> None:
    """A step around a vendor call that only advises (circuit counts, probes, in-flight
    slots). A Redis outage here must not keep the call's outcome from being recorded,
    or the task would run, and call the vendor, again: a slot frees itself when its
    lease ends, a probe when it times out, and the next call is counted instead."""
    try:
        step()
    except redis_errors.RedisError as exc:
        log.warning("could not %s (%s); going on", what, type(exc).__name__)


def _complete(
    rt: Runtime,
    record: TaskRecord,
    lock: ordering.TargetLock,
    state: str,
    attempts: list[dict[str, Any]],
    stale: list[str],
    applied: list[str],
) -> None:
    """Record the task ``applied`` or ``stale`` (gen-guarded), riding out Redis outages.
    A replayed dead letter ends either way: it leaves the store."""
    task = record.task
    note_task(task, attempts)

    def waiting(exc: Exception) -> None:
        why = type(exc).__name__
        log.warning("task %s: cannot record %s yet (%s); retrying", task.id, state, why)

    COMPLETE_RETRY.call_with_retry(
        lambda: rt.steps.complete(
            task.id,
            record.gen,
            task.vendor,
            lock.record,
            state,
            attempts,
            stale,
            lock.token,
            task.occurred_at,
            applied,
            keys.event(task.source, task.event_id),
        ),
        waiting,
    )
    if record.attempts or record.dead_letter:  # a replayed (or left over) dead letter
        rt.dead_letters.resolve(task.id)


def _failed(rt: Runtime, record: TaskRecord, exc: errors.VendorError, started: float) -> str:
    attempt = _attempt(
        started,
        exc.code if not exc.retryable else type(exc).__name__.lower(),
        exc.status,
        rt.redactor.text(str(exc)),
        rt.redactor.text(exc.excerpt),
    )
    attempts = record.attempts + [attempt]
    vendor = rt.config.vendors.get(record.task.vendor)
    policy = vendor.retry if vendor else RetryPolicy()  # an unknown vendor: the defaults
    decision = decide_after(exc, attempts, policy)
    if isinstance(decision, GiveUp):
        return dead(rt, record, decision.code, str(exc), attempts)
    due = time.time() + decision.delay
    attempts[-1]["retry_at"] = round(due, 3)  # when the next one goes (ops view, log line)
    note_task(record.task, attempts)
    rt.queue.reschedule(record, due, "retrying", attempts)
    return "retrying"


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
    note_task(record.task, attempts)
    rt.dead_letters.put(record.task, code, message, attempts)
    rt.queue.finish(record, "dead", attempts)
    return "dead"


def defer(rt: Runtime, record: TaskRecord, delay: float, began: bool = False) -> str:
    """Run the task later without spending an attempt (busy target, rate limit, circuit).

    Same gen (see :meth:`worker.queue.Queue.defer`): if another delivery of this task is
    running right now, its outcome still counts. ``began``: this run had begun.
    """
    rt.queue.defer(record, time.time() + delay, began)
    return "deferred"
