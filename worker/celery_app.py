"""The Celery app: every broker and worker setting in one block, each with its reason.

Only worker processes import this module (``worker/__init__`` loads it lazily for
``celery -A worker``); importing it resolves the broker URL (see :func:`broker_url`).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, bootsteps

from worker import keys
from worker.broker import transport_for

app = Celery("switchboard", include=["worker.tasks"])

app.conf.update(
    # Tasks carry two plain values (task id, gen); JSON only, never pickle.
    task_serializer="json",
    accept_content=["json"],
    # Results live in our own task records, not in a result backend.
    task_ignore_result=True,
    # Acknowledge after the task ran, so a worker killed mid-task leaves it to be redelivered.
    task_acks_late=True,
    # A pool child that dies (kill -9) returns its task to the queue instead of acking it.
    task_reject_on_worker_lost=True,
    # Vendor calls are slow I/O: take one message at a time so a busy worker does not
    # hoard tasks that an idle one could run.
    worker_prefetch_multiplier=1,
    task_default_queue=keys.CELERY_QUEUE,
    broker_transport_options={
        # We never use countdown/eta (waits live in sb:due), so the visibility timeout only
        # bounds how long a reserved message may take; our own leases recover lost tasks
        # sooner. An hour is far above any task's run time (vendor timeouts <= 300 s).
        "visibility_timeout": 3600,
        "socket_connect_timeout": 5,
    },
    broker_connection_retry_on_startup=True,
    # Our JSON log lines, not Celery's reformatting of the root logger.
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    # Long-lived connectors hold pooled HTTP clients; don't recycle children needlessly.
    worker_max_tasks_per_child=None,
)


def broker_url() -> str:
    """Always our Redis: REDIS_URL, else the embedded one (started if not running).

    Never left unset: Celery's default broker is AMQP on localhost, and a machine that
    happens to run RabbitMQ would silently carry (and share) our tasks there.
    """
    from config.embedded_redis import resolve_redis_url
    from config.settings import EnvError, Settings

    try:
        return resolve_redis_url(Settings.from_env())
    except EnvError as exc:  # `celery -A worker worker` run by hand: one line, no traceback
        raise SystemExit(f"switchboard: bad environment: {exc}") from None


app.conf.broker_url = broker_url()
# kombu's Redis transports with a fix for a dropped connection (see worker.broker)
app.conf.broker_transport = transport_for(app.conf.broker_url)
if app.conf.broker_url.startswith("sentinel://"):
    # Redis Sentinel: kombu asks the sentinels for this master (worker.runtime.connect too)
    app.conf.broker_transport_options["master_name"] = (
        os.environ.get("SWITCHBOARD_SENTINEL_MASTER") or "mymaster"
    )


class RelayStep(bootsteps.StartStopStep):
    """Runs the relay (due tasks -> Celery queue, heartbeat) and the holdings writer (what
    this worker has reserved, see worker.holdings) beside the worker."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.threads: list[Any] = []

    def start(self, parent: Any) -> None:
        from worker.holdings import HoldingsWriter
        from worker.relay import Relay

        threads = parent.concurrency if isinstance(parent.concurrency, int) else 1
        self.threads = [
            Relay(name=parent.hostname, concurrency=threads),
            HoldingsWriter(name=parent.hostname),
        ]
        for thread in self.threads:
            thread.start()

    def stop(self, parent: Any) -> None:
        for thread in self.threads:
            thread.stop()


app.steps["worker"].add(RelayStep)
