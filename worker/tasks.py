"""The Celery task: a thin shell around :func:`worker.runner.process`.

Every run is timed, counted and logged by one wrapper (:func:`worker.metrics.run_observed`),
not by the task body. The worker's logging is ours (JSON lines, :mod:`config.logs`):
connecting ``setup_logging`` stops Celery from configuring the root logger itself.
"""

from __future__ import annotations

import contextlib
from typing import Any

from celery import signals

from worker.celery_app import app
from worker.metrics import run_observed
from worker.runner import process
from worker.runtime import get_runtime


@app.task(name="switchboard.apply_update")
def apply_update(task_id: str, gen: int) -> str:
    return run_observed(get_runtime(), task_id, gen, process)


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
