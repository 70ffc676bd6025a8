"""The Celery tasks: thin shells around :func:`worker.runner.process`.

The relay publishes ``apply_updates`` with one or more ``(task id, gen)`` deliveries per
message (see :mod:`worker.relay`); each delivery is run on its own, in order, and one that
fails unexpectedly does not stop the rest: if it failed before it began (Redis went away),
it is given back, due in a few seconds; if after, its run lease brings it back. One whose
record is busy (another worker holds its lock) is deferred at once rather than waited for.
``apply_update`` (one delivery) stays for messages published before batching. Every run
is timed, counted and logged by one wrapper (:func:`worker.metrics.run_observed`), not by
the task body.

The worker's logging is ours (JSON lines, :mod:`config.logs`): connecting
``setup_logging`` stops Celery from configuring the root logger itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from celery import signals

from worker.celery_app import app
from worker.metrics import run_observed
from worker.runner import COMPLETE_RETRY, LOCK_WAIT, process
from worker.runtime import Runtime, get_runtime

log = logging.getLogger("switchboard.worker")

GIVE_BACK_AFTER = 5.0  # seconds before a delivery that failed before it began runs again


@app.task(name="switchboard.apply_update")
def apply_update(task_id: str, gen: int) -> str:
    return apply_updates([(task_id, gen)])[0]


@app.task(name="switchboard.apply_updates")
def apply_updates(deliveries: Sequence[Sequence[Any]]) -> list[str]:
    rt = get_runtime()
    pairs = [(str(task_id), int(gen)) for task_id, gen in deliveries]
    try:  # read-only: retried through a Redis restart or failover, as outcomes are
        records = COMPLETE_RETRY.call_with_retry(
            lambda: rt.queue.load_tasks([task_id for task_id, _ in pairs]), lambda _exc: None
        )
    except Exception:
        _give_back(rt, pairs)
        raise
    # with several deliveries, a busy target is deferred at once instead of waited for:
    # waiting would hold up the other records of this message (head-of-line blocking)
    wait = LOCK_WAIT if len(pairs) == 1 else 0.0
    run = functools.partial(process, preloaded=records, lock_wait=wait)
    outcomes = []
    for task_id, gen in pairs:
        try:
            outcomes.append(run_observed(rt, task_id, gen, run))
        except Exception:  # counted as "error" by run_observed
            log.exception("task %s failed unexpectedly", task_id)
            _give_back(rt, [(task_id, gen)])
            outcomes.append("error")
    return outcomes


def _give_back(rt: Runtime, deliveries: list[tuple[str, int]]) -> None:
    """Deliveries that failed before they began are due again in ``GIVE_BACK_AFTER``
    seconds, not when the relay's claim lease ends (an hour); one that began keeps its run
    lease (minutes). Not at once: a failure that repeats (a bug) must not spin."""
    due_at = time.time() + GIVE_BACK_AFTER
    try:
        COMPLETE_RETRY.call_with_retry(
            lambda: rt.queue.give_back(deliveries, due_at), lambda _exc: None
        )
    except Exception as exc:
        log.warning("cannot give back %d deliveries (%s)", len(deliveries), type(exc).__name__)


@signals.celeryd_init.connect  # before Celery's own start-up checks warn (as root, ...)
@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    import logging

    from config.logs import configure_logging

    secrets: list[str] = []
    # a bad config fails the worker later, with its own clear message
    with contextlib.suppress(Exception):
        secrets = list(get_runtime().config.secrets)
    configure_logging(secrets)
    if isinstance(loglevel, int | str) and loglevel:
        logging.getLogger().setLevel(loglevel)
