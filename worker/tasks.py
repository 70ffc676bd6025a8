"""The Celery task: a thin shell around :func:`worker.runner.process`."""

from __future__ import annotations

from worker.celery_app import app
from worker.runner import process
from worker.runtime import get_runtime


@app.task(name="switchboard.apply_update")
def apply_update(task_id: str, gen: int) -> str:
    return process(get_runtime(), task_id, gen)
