"""Bulk-replay jobs kept in Redis so that any web process can finish one another began.

A job is a JSON record (``sb:job:<id>``), the entry ids its filter matched when it
started (a list, ``sb:job:<id>:ids``, so a resumed job replays exactly the rest) and a
runner lease (a redis-py ``Lock``, ``sb:job:<id>:runner``) held by whoever runs it and
renewed as it goes. Running jobs are listed in ``sb:jobs:active``. A job with no
lease that has not moved for ``STALLED_AFTER`` seconds lost its process: it shows as
``stalled``, and :class:`JobResumer` (a thread in each gunicorn worker) starts it again
where it stopped. A job can be cancelled (API, page, CLI, or Ctrl-C on the CLI running
it): a flag its runner checks after every entry; with no runner, the canceller finishes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import redis as redis_lib
from redis.lock import Lock

from worker import keys

log = logging.getLogger("switchboard.ops")

TTL = 7 * 86400
STALLED_AFTER = 60.0  # seconds without progress (and no runner) before a job is stalled
LEASE_SECONDS = 30.0  # a runner renews it with every entry; a dead one loses it this fast
RESUME_EVERY = 15.0
ACTIVE = keys.JOBS_ACTIVE


record_key = keys.job
ids_key = keys.job_ids
runner_key = keys.job_runner
cancel_key = keys.job_cancel


def cancel_requested(client: redis_lib.Redis, job_id: str) -> bool:
    return bool(client.exists(cancel_key(job_id)))


def cancelled_by(client: redis_lib.Redis, job_id: str) -> str | None:
    """Who asked a job to stop, or None."""
    who = client.get(cancel_key(job_id))
    return who.decode() if isinstance(who, bytes) else who


def lease(client: redis_lib.Redis, job_id: str) -> Lock:
    """The runner lease of one job (taken without blocking: a job has one runner)."""
    return client.lock(runner_key(job_id), timeout=LEASE_SECONDS, blocking=False)


_SAVE_AS_RUNNER = """
-- KEYS[1] runner lease, KEYS[2] job record; ARGV[1] token, ARGV[2] record, ARGV[3] ttl s,
-- ARGV[4] lease ms. Written (and the lease renewed) only while the lease is still ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


def save_as_runner(client: redis_lib.Redis, runner: Lock, job_id: str, record: str) -> bool:
    """Write the job's record and renew ``runner``'s lease, in one step, only while the
    lease is still ``runner``'s: a runner that stalled past its lease must not write its
    stale copy over the record of the one that took the job over. False if it lost it."""
    token = runner.local.token
    if token is None:
        return False
    args = [token, record, TTL, int(LEASE_SECONDS * 1000)]
    return bool(client.eval(_SAVE_AS_RUNNER, 2, runner_key(job_id), record_key(job_id), *args))


def has_runner(client: redis_lib.Redis, job_id: str) -> bool:
    return bool(client.exists(runner_key(job_id)))


def save_ids(client: redis_lib.Redis, job_id: str, ids: list[str]) -> None:
    pipe = client.pipeline()
    pipe.delete(ids_key(job_id))
    for start in range(0, len(ids), 1000):
        pipe.rpush(ids_key(job_id), *ids[start : start + 1000])
    pipe.expire(ids_key(job_id), TTL)
    pipe.execute()


def iter_ids(client: redis_lib.Redis, job_id: str, start: int, page: int = 500) -> Iterator[str]:
    """The job's entry ids from index ``start`` on, read a page at a time."""
    while True:
        chunk = client.lrange(ids_key(job_id), start, start + page - 1)
        if not chunk:
            return
        for raw in chunk:
            yield raw.decode() if isinstance(raw, bytes) else str(raw)
        start += len(chunk)


class JobResumer(threading.Thread):
    """Every ``every`` seconds, runs ``resume()`` (:meth:`Ops.resume_stalled`); errors are
    logged and the loop goes on (Redis may be restarting)."""

    def __init__(self, resume: Callable[[], list[str]], every: float = RESUME_EVERY):
        super().__init__(name="job-resumer", daemon=True)
        self.resume = resume
        self.every = every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                for job_id in self.resume():
                    log.warning("bulk replay job %s had stalled; resumed here", job_id)
            except redis_lib.RedisError as exc:
                log.warning("job resumer: redis unavailable (%s)", type(exc).__name__)
