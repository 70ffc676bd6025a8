"""Bulk replay jobs: replay every dead letter matching a filter, as a job whose state lives
in Redis (:mod:`webhooks.ops.jobs`), readable from any process, resumable by another web
process if the one running it dies, cancellable from anywhere.

:class:`BulkReplays` is a part of :class:`webhooks.ops.service.Ops`, which supplies
``redis``, ``dead_letters`` and ``replay`` (one entry's replay, audited).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis as redis_lib
from redis.exceptions import LockError
from redis.lock import Lock

from webhooks.ops import jobs
from webhooks.ops.errors import ConflictError, NotFoundError, OpsError
from worker.replication import NotReplicated

if TYPE_CHECKING:
    from worker.deadletter import DeadLetters

JOB_ERRORS_KEPT = 20
FINISHED = ("done", "failed", "cancelled")  # job states that never change again


class BulkReplays:
    redis: redis_lib.Redis
    dead_letters: DeadLetters

    def replay(self, entry_id: str, who: str, job: str | None = None) -> dict[str, Any]:
        raise NotImplementedError  # Ops's

    def start_bulk_replay(self, filters: dict[str, Any], who: str) -> dict[str, Any]:
        """Record a job for replaying every entry matching ``filters``; run it with
        :meth:`run_bulk_replay` (in a thread for the API, inline for the CLI)."""
        job_id = uuid.uuid4().hex
        now = time.time()
        job = {
            "id": job_id,
            "state": "pending",
            "filter": filters,
            "who": who,
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
            "total": None,
            "done": 0,
            "queued": 0,
            "already_replaying": 0,
            "failed": 0,
            "gone": 0,
            "resumed": 0,
            "errors": [],
        }
        self._save_job(job)
        self.redis.sadd(jobs.ACTIVE, job_id)
        self.dead_letters.audit("bulk_replay", job_id, who, filter=filters)
        return job

    def run_bulk_replay(
        self, job_id: str, progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Run (or resume: from the first entry not yet done) a job; ConflictError if
        another process is running it."""
        runner = jobs.lease(self.redis, job_id)
        if not runner.acquire():
            raise ConflictError(f"job {job_id} is being run by another process")
        try:
            return self._run_job(self.job(job_id), runner, progress)
        finally:
            with contextlib.suppress(LockError):
                runner.release()

    def _run_job(
        self, job: dict[str, Any], runner: Lock, progress: Callable[..., None] | None
    ) -> dict[str, Any]:
        if job["total"] is None:  # first run: fix the list of entries it will replay
            ids = [e["id"] for e in self.dead_letters.iter_newest(**dict(job["filter"]))]
            jobs.save_ids(self.redis, job["id"], ids)
            job["total"] = len(ids)
        else:  # resumed after its runner died: the entries not yet done
            job["resumed"] = job.get("resumed", 0) + 1
        job["state"] = "running"
        if not self._save_job(job, runner):
            return job
        if progress:
            progress(job)
        for entry_id in jobs.iter_ids(self.redis, job["id"], job["done"]):
            if jobs.cancel_requested(self.redis, job["id"]):
                break
            self._replay_one(job, entry_id)
            job["done"] += 1
            # after every entry (a resumed job starts right after it), renewing the lease;
            # a runner that lost it (this process stalled) leaves the job to its new one
            if not self._save_job(job, runner):
                return job
            if progress:
                progress(job)
        self._finish(job, "done", runner)
        if progress:
            progress(job)
        return job

    def _finish(
        self, job: dict[str, Any], state: str, runner: Lock | None = None
    ) -> dict[str, Any]:
        """End ``job`` as ``state``, or as ``cancelled`` (naming who) if someone asked."""
        if state != "failed" and (by := jobs.cancelled_by(self.redis, job["id"])):
            state, job["cancelled_by"] = "cancelled", by
        job.update(state=state, finished_at=time.time())
        if self._save_job(job, runner):
            self.redis.srem(jobs.ACTIVE, job["id"])
        return job

    def cancel_bulk_replay(self, job_id: str, who: str) -> dict[str, Any]:
        """Stop a job: entries not yet replayed are left as they are. A running job stops
        after the entry at hand (it shows ``cancelling`` until then); one nobody runs
        (pending, stalled) is finished here. ConflictError if it already ended."""
        job = self.job(job_id)
        if job["state"] in FINISHED:
            raise ConflictError(f"job {job_id} has already ended ({job['state']})")
        self.redis.set(jobs.cancel_key(job_id), who, ex=jobs.TTL)
        self.dead_letters.audit("bulk_replay_cancel", job_id, who, done=job["done"])
        runner = jobs.lease(self.redis, job_id)
        if runner.acquire():  # nobody is running it: finish it here
            try:
                return self._finish(self.job(job_id), "cancelled")
            finally:
                with contextlib.suppress(LockError):
                    runner.release()
        return self.job(job_id)

    def _replay_one(self, job: dict[str, Any], entry_id: str) -> None:
        try:
            outcome = self.replay(entry_id, who=job["who"], job=job["id"])["status"]
            job[outcome] += 1
        except NotFoundError:  # resolved or discarded since the list was made
            job["gone"] = job.get("gone", 0) + 1  # (jobs saved before it had none)
        except (OpsError, NotReplicated) as exc:
            job["failed"] += 1
            if len(job["errors"]) < JOB_ERRORS_KEPT:
                job["errors"].append({"id": entry_id, "message": str(exc)})

    def run_bulk_replay_in_thread(self, job_id: str) -> threading.Thread:
        def run() -> None:
            try:
                self.run_bulk_replay(job_id)
            except ConflictError:
                pass  # another process took it first: it is running
            except Exception as exc:  # logged, and recorded on the job if Redis lets us
                jobs.log.exception("bulk replay %s stopped", job_id)
                try:
                    if jobs.has_runner(self.redis, job_id):
                        return  # this runner had stalled: another one has the job now
                    job = self.job(job_id)
                    job["errors"].append({"id": None, "message": type(exc).__name__})
                    self._finish(job, "failed")
                except redis_lib.RedisError:  # a later web resumes the job once it is stalled
                    jobs.log.warning("bulk replay %s not marked failed: redis unavailable", job_id)

        thread = threading.Thread(target=run, name=f"bulk-replay-{job_id}", daemon=True)
        thread.start()
        return thread

    def resume_stalled(self) -> builtins.list[str]:
        """Start every stalled job again in a thread of this process; returns their ids."""
        resumed = []
        for raw in self.redis.smembers(jobs.ACTIVE):
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                job = self.job(job_id)
            except NotFoundError:  # expired
                self.redis.srem(jobs.ACTIVE, job_id)
                continue
            if job["state"] == "stalled":
                self.run_bulk_replay_in_thread(job_id)
                resumed.append(job_id)
        return resumed

    def job(self, job_id: str) -> dict[str, Any]:
        raw = self.redis.get(jobs.record_key(job_id))
        if raw is None:
            raise NotFoundError(f"no job {job_id}")
        job: dict[str, Any] = json.loads(raw)
        if job["state"] in ("pending", "running"):
            if time.time() - job["updated_at"] > jobs.STALLED_AFTER and not jobs.has_runner(
                self.redis, job_id
            ):
                job["state"] = "stalled"  # its process went away; resumed by a JobResumer
            elif jobs.cancel_requested(self.redis, job_id):
                job["state"] = "cancelling"  # its runner stops after the entry at hand
        return job

    def _save_job(self, job: dict[str, Any], runner: Lock | None = None) -> bool:
        """Write the job's record; with ``runner`` (its lease), only while the lease is
        still held (and renewing it). False when it was not written."""
        job["updated_at"] = time.time()
        record = json.dumps(job, default=str)
        if runner is not None:
            return jobs.save_as_runner(self.redis, runner, job["id"], record)
        self.redis.set(jobs.record_key(job["id"]), record, ex=jobs.TTL)
        return True
