"""The Celery tasks: thin shells around :func:`worker.runner.process`.

The relay publishes ``apply_updates`` with one or more ``(task id, gen)`` deliveries per
message (see :mod:`worker.relay`); each delivery is run on its own, in order, and one that
fails unexpectedly does not stop the rest (its lease brings it back); one whose record is
busy (another worker holds its lock) is deferred at once rather than waited for.
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
from collections.abc import Sequence
from typing import Any

from celery import signals

from worker.celery_app import app
from worker.metrics import run_observed
from worker.runner import LOCK_WAIT, process
from worker.runtime import get_runtime

log = logging.getLogger("switchboard.worker")


@app.task(name="switchboard.apply_update")
def apply_update(task_id: str, gen: int) -> str:
    return run_observed(get_runtime(), task_id, gen, process)


@app.task(name="switchboard.apply_updates")
def apply_updates(deliveries: Sequence[Sequence[Any]]) -> list[str]:
    rt = get_runtime()
    records = rt.queue.load_tasks([str(task_id) for task_id, _ in deliveries])
    # with several deliveries, a busy target is deferred at once instead of waited for:
    # waiting would hold up the other records of this message (head-of-line blocking)
    wait = LOCK_WAIT if len(deliveries) == 1 else 0.0
    run = functools.partial(process, preloaded=records, lock_wait=wait)
    outcomes = []
    for task_id, gen in deliveries:
        try:
            outcomes.append(run_observed(rt, str(task_id), int(gen), run))
        except Exception:  # counted as "error" by run_observed; the lease retries it
            log.exception("task %s failed unexpectedly; its lease will bring it back", task_id)
            outcomes.append("error")
    return outcomes


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
