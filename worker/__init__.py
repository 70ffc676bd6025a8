"""The worker: Celery app, the apply task, connectors, retries, ordering, dead letters.

``celery -A worker worker`` finds the app here. It is loaded lazily, so importing
``worker.vendors`` (the web does, for config validation) creates no Celery app.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.celery_app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
