"""The worker: Celery app, the apply task, connectors, retries, ordering, dead letters.

``celery -A worker worker`` finds the app here.
"""

from worker.celery_app import app

__all__ = ["app"]
