"""Counters and histograms kept in Redis, so ``/metrics`` on any web process sees them all.

Why Redis and not prometheus-client's multiprocess mode: workers and web processes may
run on different hosts (that is how Switchboard scales out), and multiprocess mode only
merges processes that share one directory on one host; it also needs the directory
wiped on every restart and grows a file per pid. Every process already talks to the one
Redis, so each process adds its increments to hashes there (see the buffer below), and
:mod:`webhooks.metrics` turns the hashes into
Prometheus families at scrape time. Counters survive restarts (they live as long as the
Redis data does), which Prometheus' ``rate()`` handles like any counter.

Layout (one hash per family; a field is the label values joined by ``|``, which config
names never contain): ``sb:m:webhooks`` (kind|source|reason), ``sb:m:tasks``
(vendor|op|outcome), ``sb:m:dead`` (vendor|code), and two histograms,
``sb:m:vendor_call`` (vendor|op|status class|bucket) and ``sb:m:task_run``
(vendor|outcome|bucket), each with ``…|sum`` and ``…|count`` fields. Buckets are stored
per bucket (not cumulative) and summed up by the collector.

Increments are not written per request or per task but added to a per-process
:class:`Buffer` that a daemon thread flushes to Redis once a second in one pipeline (and
at exit, and before this process answers a scrape). The ingest benchmark showed a
per-request write costing about a quarter of the web's throughput (each Redis round trip
is ~0.3 ms of CPU here); buffered, the cost is one pipeline per second per process, and
counters from other processes lag by at most a second.

Vendor calls are timed by :meth:`worker.vendors.base.Connector.send` into a
per-thread list (:func:`observe_call`); the task wrapper (:func:`run_observed`) adds
them to the buffer with the task's own counters.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis as redis_lib
from celery import signals as celery_signals

from config.logs import event as log_event
from worker import keys

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger("switchboard.worker")

WEBHOOKS = keys.M_WEBHOOKS
TASKS = keys.M_TASKS
DEAD = keys.M_DEAD
VENDOR_CALL = keys.M_VENDOR_CALL
TASK_RUN = keys.M_TASK_RUN
ALL = (WEBHOOKS, TASKS, DEAD, VENDOR_CALL, TASK_RUN)

SEP = "|"
VENDOR_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TASK_RUN_BUCKETS = VENDOR_CALL_BUCKETS
#: outcomes logged at DEBUG only: frequent, and not a change of the task's state
QUIET_OUTCOMES = frozenset({"deferred", "duplicate"})


def field(*labels: object) -> str:
    return SEP.join(map(str, labels))


def bucket_index(buckets: tuple[float, ...], value: float) -> int:
    """Index of the first bucket ``value`` fits in; ``len(buckets)`` means +Inf."""
    return bisect.bisect_left(buckets, value)


FLUSH_EVERY = 1.0


class Buffer:
    """Counter increments of this process, flushed to Redis in one pipeline per second.

    Kept per Redis client (an app or runtime each has one), so counts always go to the
    Redis they were made against.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._pid = 0

    def incr(self, client: redis_lib.Redis, key: str, name: str, amount: int = 1) -> None:
        with self._lock:
            counts = self._for(client).counts
            counts[(key, name)] = counts.get((key, name), 0) + amount

    def observe(
        self,
        client: redis_lib.Redis,
        key: str,
        labels: tuple[str, ...],
        buckets: tuple[float, ...],
        value: float,
    ) -> None:
        base = field(*labels) + SEP
        bucket = (key, base + str(bucket_index(buckets, value)))
        count, sum_key = (key, base + "count"), (key, base + "sum")
        with self._lock:
            pending = self._for(client)
            pending.counts[bucket] = pending.counts.get(bucket, 0) + 1
            pending.counts[count] = pending.counts.get(count, 0) + 1
            pending.sums[sum_key] = pending.sums.get(sum_key, 0.0) + value

    def _for(self, client: redis_lib.Redis) -> _Pending:
        if self._pid != os.getpid():  # first use in this process (or after a fork)
            self._pid = os.getpid()
            self._pending.clear()
            threading.Thread(target=self._run, name="metrics-flush", daemon=True).start()
        pending = self._pending.get(id(client))
        if pending is None:
            pending = self._pending[id(client)] = _Pending(client)
        return pending

    def flush(self) -> None:
        with self._lock:
            batches, self._pending = list(self._pending.values()), {}
        for batch in batches:
            if not (batch.counts or batch.sums):
                continue
            # MULTI/EXEC: a connection lost mid-batch applies all of it or none, never half
            # (an EXEC whose reply is lost is still counted twice: counts are best effort)
            pipe = batch.client.pipeline(transaction=True)
            for (key, name), amount in batch.counts.items():
                pipe.hincrby(key, name, amount)
            for (key, name), value in batch.sums.items():
                pipe.hincrbyfloat(key, name, value)
            try:
                pipe.execute()
            except redis_lib.RedisError as exc:  # put them back: counted on a later flush
                log.warning("metrics flush failed (%s); will retry", type(exc).__name__)
                with self._lock:
                    pending = self._for(batch.client)
                    for k, amount in batch.counts.items():
                        pending.counts[k] = pending.counts.get(k, 0) + amount
                    for k, value in batch.sums.items():
                        pending.sums[k] = pending.sums.get(k, 0.0) + value

    def _run(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(FLUSH_EVERY)
            self.flush()


class _Pending:
    def __init__(self, client: redis_lib.Redis):
        self.client = client
        self.counts: dict[tuple[str, str], int] = {}
        self.sums: dict[tuple[str, str], float] = {}


BUFFER = Buffer()
atexit.register(BUFFER.flush)


@celery_signals.worker_process_shutdown.connect
def _flush_before_the_pool_process_exits(**_: Any) -> None:
    """A prefork pool process ends with ``os._exit`` (no ``atexit``): flush first, or
    up to a second of its counts is lost each time one is recycled."""
    BUFFER.flush()


# -- vendor calls, per thread ------------------------------------------------------------
_local = threading.local()


def observe_call(vendor: str, status: int | None, seconds: float) -> None:
    """Note one vendor HTTP call (``status`` None: no answer); kept until the task flushes."""
    calls = getattr(_local, "calls", None)
    if calls is not None:
        calls.append((vendor, status_class(status), seconds))


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


# -- the task wrapper ---------------------------------------------------------------------
def note_task(task: Any, attempts: list[dict[str, Any]]) -> None:
    """The runner's word on the task it ran and its attempts as it last wrote them, so
    :func:`run_observed` records the run without reading the task back from Redis."""
    _local.task = (task, attempts)


def run_observed(rt: Runtime, task_id: str, gen: int, process: Callable[..., str]) -> str:
    """Run ``process(rt, task_id, gen)``; count, time and log its outcome.

    Recording never fails the task: a Redis error while recording is logged and dropped.
    """
    _local.calls = []
    _local.task = None
    started = time.perf_counter()
    outcome = "error"
    try:
        outcome = process(rt, task_id, gen)
        return outcome
    finally:
        duration = time.perf_counter() - started
        calls, _local.calls = _local.calls, None
        known, _local.task = _local.task, None
        try:
            record_task(rt.redis, task_id, gen, outcome, duration, calls, known)
        except redis_lib.RedisError as exc:
            log.warning("metrics not recorded (%s)", type(exc).__name__)


def record_task(
    client: redis_lib.Redis,
    task_id: str,
    gen: int,
    outcome: str,
    duration: float,
    calls: list[tuple[str, str, float]],
    known: tuple[Any, list[dict[str, Any]]] | None = None,
) -> None:
    """Count and log one run; ``known`` = (UpdateTask, attempts) from :func:`note_task`,
    else (a task the runner never loaded) the record is read from Redis."""
    task: dict[str, Any] = {}
    attempts: list[dict[str, Any]] = []
    if known is not None:
        task, attempts = vars(known[0]), known[1]
    else:
        raw_task, raw_attempts = client.hmget(keys.task(task_id), "task", "attempts")
        if raw_task:
            task = json.loads(raw_task)
            attempts = json.loads(raw_attempts or b"[]")
    vendor = task.get("vendor", "(unknown)")
    op = task.get("op", "(unknown)")
    last = attempts[-1] if attempts else {}
    code = last.get("code") if outcome == "dead" else None
    BUFFER.incr(client, TASKS, field(vendor, op, outcome))
    if outcome == "dead":
        BUFFER.incr(client, DEAD, field(vendor, code or "unknown"))
    BUFFER.observe(client, TASK_RUN, (vendor, outcome), TASK_RUN_BUCKETS, duration)
    for call_vendor, klass, seconds in calls:
        BUFFER.observe(client, VENDOR_CALL, (call_vendor, op, klass), VENDOR_CALL_BUCKETS, seconds)
    fields: dict[str, Any] = {
        "event_id": task.get("event_id"),
        "source": task.get("source"),
        "rule": task.get("rule"),
        "task_id": task_id,
        "gen": gen,
        "vendor": vendor,
        "op": op,
        "target": task.get("target"),
        "attempt": len(attempts),
        "outcome": outcome,
        "duration_ms": round(duration * 1000, 2),
        "vendor_calls": len(calls),
    }
    if last and outcome in ("retrying", "dead", "applied"):
        fields["status"] = last.get("status")
        if outcome != "applied":
            fields["error"] = last.get("code") or last.get("outcome")
    if code:
        fields["code"] = code
    if outcome == "retrying" and isinstance(last.get("retry_at"), int | float):
        fields["retry_in_s"] = round(max(0.0, last["retry_at"] - time.time()), 3)
    if outcome in QUIET_OUTCOMES:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("task %s", outcome, extra={"sb": fields})
    else:  # a dead letter needs a human: WARNING
        at = logging.WARNING if outcome == "dead" else logging.INFO
        log_event(log, f"task {outcome}", at=at, **fields)
