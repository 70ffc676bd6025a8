"""Every ops operation, as plain calls on Redis: used by the API, the page and the CLI.

The CLI builds an :class:`Ops` from the config and Redis directly (it works while the web
is down); the web builds one per request from its app state. Tree of failures::

    OpsError
    ├── NotFoundError       no such dead letter / event / job
    └── ConflictError       cannot replay (event expired, rule gone, replay in progress)

Replay of a dead letter re-queues its stored task, except a ``mapping_error``: that one
is mapped again from the stored event with the *current* rules (the fixed template),
keeping the task's id so the entry's history follows it. Bulk replay runs as a job whose
progress lives in Redis (:mod:`webhooks.ops.jobs`), readable from any process, and resumed
by another web process if the one running it dies.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis as redis_lib
from redis.exceptions import LockError

from webhooks.ops import jobs
from webhooks.rules import RuleSet
from worker import keys
from worker.deadletter import DeadLetters, Page
from worker.model import Event, UpdateTask
from worker.queue import Queue
from worker.redact import Redactor
from worker.replication import NotReplicated, confirm_writes

JOB_ERRORS_KEPT = 20
FINISHED = ("done", "failed", "cancelled")  # job states that never change again
ACTIVE_STATES = frozenset({"queued", "retrying"})
REPLAY_LOCK_SECONDS = 30.0  # an event's replay lock outlives a replay; a dead one's lapses
REPLAY_LOCK_WAIT = 5.0  # how long a press waits for another replay of the event
#: seconds after an event replay in which another is refused: a double press whose first
#: replay's tasks had already ended (``stale`` in milliseconds) queued the event twice
EVENT_REPLAY_GAP = 10.0


class OpsError(Exception):
    pass


class NotFoundError(OpsError):
    pass


class ConflictError(OpsError):
    pass


class Ops:
    def __init__(
        self,
        client: redis_lib.Redis,
        rules: RuleSet,
        redactor: Redactor | None = None,
        event_ttl: int = 7 * 86400,
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
    ):
        self.redis = client
        self.min_replicas = min_replicas  # SWITCHBOARD_MIN_REPLICAS: see _confirm
        self.replica_timeout = replica_timeout
        self.rules = rules
        self.redactor = redactor or Redactor(())
        self.queue = Queue(client, event_ttl)
        self.dead_letters = DeadLetters(client, self.redactor, event_ttl)

    # -- dead letters ----------------------------------------------------------------
    def list(self, limit: int = 50, cursor: str | None = None, **filters: Any) -> Page:
        return self.dead_letters.list(limit=limit, cursor=cursor, **filters)

    def entry(self, entry_id: str) -> dict[str, Any]:
        """One entry in full: task, rule, every attempt, and the stored event (if kept)."""
        entry = self.dead_letters.get(entry_id)
        if entry is None:
            raise NotFoundError(f"no dead letter {entry_id}")
        event = self._event_of(entry)
        entry["event"] = self._event_json(event) if event else None
        return entry

    def _event_of(self, entry: dict[str, Any]) -> Event | None:
        """The entry's event, while it is stored (a ``mapping_error``'s is kept as long as
        the entry: see :meth:`worker.deadletter.DeadLetters.put`)."""
        loaded = self.queue.load_event(entry["source"], entry["event_id"])
        return loaded[0] if loaded else None

    def replay(self, entry_id: str, who: str, job: str | None = None) -> dict[str, Any]:
        """Replay one entry; ``{"status": "queued" | "already_replaying", "entry": ...}``.
        ``job``: the bulk replay doing it (its audit record says so, see DeadLetters.audit)."""
        entry = self.dead_letters.get(entry_id)
        if entry is None:
            raise NotFoundError(f"no dead letter {entry_id}")
        with self._replaying(entry["source"], entry["event_id"]):
            task = self._remap(entry) if entry["code"] == "mapping_error" else None
            queued = self.dead_letters.replay(entry_id, task=task, who=who, job=job)
        if queued is None:  # resolved or discarded between the two reads
            raise NotFoundError(f"no dead letter {entry_id}")
        self._confirm()
        current = self.dead_letters.get(entry_id) or entry
        return {
            "status": "queued" if queued else "already_replaying",
            "entry": DeadLetters.summary(current),
        }

    def _remap(self, entry: dict[str, Any]) -> UpdateTask:
        """The entry's action mapped again, with today's rules, from the stored event."""
        event = self._event_of(entry)
        if event is None:
            raise ConflictError(f"event {entry['source']}/{entry['event_id']} is no longer stored")
        action = entry["task"]["action"]
        for match in self.rules.map_event(event):
            if match.rule == entry["rule"]:
                for task in match.tasks:
                    if task.action == action:
                        return dataclasses.replace(task, id=entry["id"])
        raise ConflictError(
            f"rule {entry['rule']!r} no longer produces action {action} for this event; "
            "replay the event instead"
        )

    def discard(self, entry_id: str, who: str) -> None:
        if not self.dead_letters.discard(entry_id, who=who):
            raise NotFoundError(f"no dead letter {entry_id}")
        self._confirm()

    def _confirm(self) -> None:
        """With ``min_replicas``: raise NotReplicated (a 503 / an error line) unless that
        many replicas hold what this call wrote, as ingest does for webhooks. Replaying
        or discarding again is safe, so the operator just does it again."""
        if self.min_replicas:
            confirm_writes(self.redis, self.min_replicas, self.replica_timeout)

    def counts(self) -> dict[str, Any]:
        counts = self.dead_letters.counts()
        return {"total": self.dead_letters.count(), **counts}

    def audit(
        self,
        limit: int = 100,
        action: str | None = None,
        entry_id: str | None = None,
        each: bool = True,
    ) -> builtins.list[dict[str, Any]]:
        return self.dead_letters.audit_log(limit, action, entry_id, each)

    # -- bulk replay jobs (state in Redis: webhooks.ops.jobs) ---------------------------
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
        self, job: dict[str, Any], runner: Any, progress: Callable[..., None] | None
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

    def _finish(self, job: dict[str, Any], state: str, runner: Any = None) -> dict[str, Any]:
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

    def _save_job(self, job: dict[str, Any], runner: Any = None) -> bool:
        """Write the job's record; with ``runner`` (its lease), only while the lease is
        still held (and renewing it). False when it was not written."""
        job["updated_at"] = time.time()
        record = json.dumps(job, default=str)
        if runner is not None:
            return jobs.save_as_runner(self.redis, runner, job["id"], record)
        self.redis.set(jobs.record_key(job["id"]), record, ex=jobs.TTL)
        return True

    # -- events ------------------------------------------------------------------------
    def event(self, source: str, event_id: str) -> dict[str, Any]:
        """The stored event, its tasks and each task's state (and dead letter, if any)."""
        loaded = self.queue.load_event(source, event_id)
        if loaded is None:
            raise NotFoundError(f"no stored event {source}/{event_id}")
        event, task_ids = loaded
        tasks: builtins.list[dict[str, Any]] = []
        for task_id in task_ids:
            record = self.queue.load_task(task_id)
            if record is None:
                tasks.append({"id": task_id, "state": "expired"})
                continue
            tasks.append(
                {
                    **{k: v for k, v in record.task.to_dict().items() if k != "id"},
                    "id": task_id,
                    "state": record.state,
                    "attempts": self.redactor.deep(record.attempts),
                    "stale_fields": record.stale_fields,
                    "dead_letter": task_id if self.redis.exists(keys.dead(task_id)) else None,
                }
            )
        return {"event": self._event_json(event), "tasks": tasks}

    def replay_event(self, source: str, event_id: str, who: str) -> dict[str, Any]:
        """Map the stored event again with the current rules and queue the new tasks
        (bypasses de-duplication). Refused while a task of this event is still in
        flight, and for :data:`EVENT_REPLAY_GAP` after a replay, so pressing it twice
        does not queue the event twice."""
        with self._replaying(source, event_id):
            tasks = self._replay_event(source, event_id, who)
        self._confirm()
        return {
            "status": "queued" if tasks else "ignored",
            "event_id": event_id,
            "source": source,
            "tasks": len(tasks),
            "task_ids": [t.id for t in tasks],
        }

    def _replay_event(self, source: str, event_id: str, who: str) -> builtins.list[UpdateTask]:
        """The event's new tasks, queued (the replay lock is held)."""
        loaded = self.queue.load_event(source, event_id)
        if loaded is None:
            raise NotFoundError(f"no stored event {source}/{event_id}")
        event, task_ids = loaded
        for task_id in task_ids:
            record = self.queue.load_task(task_id)
            if record is not None and record.state in ACTIVE_STATES:
                raise ConflictError(
                    f"task {task_id} of this event is still {record.state}; "
                    "replay again once it has finished"
                )
        replayed = keys.event_replayed(source, event_id)
        if (left := self.redis.pttl(replayed)) > 0:
            raise ConflictError(
                f"event {source}/{event_id} was replayed {EVENT_REPLAY_GAP - left / 1000:.0f} s "
                f"ago; to replay it again, wait {left / 1000:.0f} s more"
            )
        tasks = self.rules.tasks_for(event)
        self.queue.store_event(event, tasks, replay=True)
        self.redis.set(replayed, who, px=int(EVENT_REPLAY_GAP * 1000))
        self.dead_letters.audit(
            "event_replay", f"{source}/{event_id}", who, tasks=[t.id for t in tasks]
        )
        self._supersede(task_ids, who, f"{source}/{event_id}")
        return tasks

    @contextlib.contextmanager
    def _replaying(self, source: str, event_id: str) -> Iterator[None]:
        """One replay of an event (or of one of its dead letters) at a time: two presses
        at once would both pass the in-flight check and queue the event twice, and a
        dead letter replayed in between would run beside the tasks that supersede it.
        The second press waits for the first, then finds its tasks queued."""
        lock = self.redis.lock(
            keys.event_replay(source, event_id),
            timeout=REPLAY_LOCK_SECONDS,
            blocking_timeout=REPLAY_LOCK_WAIT,  # the other replay takes milliseconds
        )
        if not lock.acquire():
            raise ConflictError(
                f"event {source}/{event_id} is being replayed right now; try again shortly"
            )
        try:
            yield
        finally:
            with contextlib.suppress(LockError):
                lock.release()

    def _supersede(self, task_ids: builtins.list[str], who: str, event: str) -> None:
        """The replayed event's earlier dead letters leave the store (audited as discards
        naming the replay): its new tasks redo them, and replaying one of them as well
        would send the old mapping again."""
        for task_id in task_ids:
            entry = self.dead_letters.get(task_id)
            if entry is not None:
                self.dead_letters.resolve(task_id)
                self.dead_letters.audit(
                    "discard", task_id, who, code=entry["code"], vendor=entry["vendor"],
                    superseded_by=f"event_replay {event}",
                )  # fmt: skip

    def _event_json(self, event: Any) -> dict[str, Any]:
        return {
            "source": event.source,
            "id": event.id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "payload": self.redactor.deep(event.payload),
            "headers": self.redactor.deep(dict(event.headers)),
        }
