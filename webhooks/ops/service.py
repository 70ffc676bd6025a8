"""Every ops operation, as plain calls on Redis: used by the API, the page and the CLI.

The CLI builds an :class:`Ops` from the config and Redis directly (it works while the web
is down); the web builds one per request from its app state. Its failures are
:mod:`webhooks.ops.errors` (imported from here too).

Replay of a dead letter re-queues its stored task, except a ``mapping_error``: that one
is mapped again from the stored event with the *current* rules (the fixed template),
keeping the task's id so the entry's history follows it. Bulk replay jobs are
:class:`webhooks.ops.bulk.BulkReplays`.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import redis as redis_lib
from redis.exceptions import LockError

from webhooks.ops.bulk import BulkReplays
from webhooks.ops.errors import ConflictError, NotFoundError, OpsError
from webhooks.rules import RuleSet
from worker import keys
from worker.deadletter import DeadLetters, Page
from worker.model import Event, UpdateTask
from worker.queue import Queue
from worker.redact import Redactor
from worker.replication import confirm_writes

__all__ = ["ConflictError", "NotFoundError", "Ops", "OpsError"]

ACTIVE_STATES = frozenset({"queued", "retrying"})
REPLAY_LOCK_SECONDS = 30.0  # an event's replay lock outlives a replay; a dead one's lapses
REPLAY_LOCK_WAIT = 5.0  # how long a press waits for another replay of the event
#: seconds after an event replay in which another is refused: a double press whose first
#: replay's tasks had already ended (``stale`` in milliseconds) queued the event twice
EVENT_REPLAY_GAP = 10.0


class Ops(BulkReplays):
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

    def _event_json(self, event: Event) -> dict[str, Any]:
        return {
            "source": event.source,
            "id": event.id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "payload": self.redactor.deep(event.payload),
            "headers": self.redactor.deep(dict(event.headers)),
        }
