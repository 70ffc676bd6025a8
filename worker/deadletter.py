"""The dead-letter store (Redis): put / list / get / replay / discard, for worker, ops and CLI.

An entry's id is its task's id. ``sb:dl:<id>`` is a hash: ``entry`` (JSON: task, rule,
event, code, message, every attempt), ``replaying`` ("1" while a replay is queued);
``sb:dl:index`` orders entries by the time they (last) died, newest first.
Replay is idempotent: an entry already being replayed is not queued again. The entry
leaves the store once its replay is applied, and comes back with the new attempts
appended if the replay fails. Messages and excerpts are redacted before they are stored.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis as redis_lib

from worker import keys
from worker.model import UpdateTask
from worker.queue import Queue
from worker.redact import Redactor

_MARK_REPLAYING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'replaying') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'replaying', '1')
return 1
"""

FILTERS = ("vendor", "rule", "source", "code")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


class DeadLetters:
    def __init__(
        self, client: redis_lib.Redis, redactor: Redactor | None = None, event_ttl: int = 7 * 86400
    ):
        self.redis = client
        self.redactor = redactor or Redactor(())
        self.queue = Queue(client, event_ttl)
        self._mark = client.register_script(_MARK_REPLAYING)

    def put(
        self,
        task: UpdateTask,
        code: str,
        message: str,
        attempts: list[dict[str, Any]],
        now: float | None = None,
    ) -> dict[str, Any]:
        now = time.time() if now is None else now
        previous = self.get(task.id)
        entry = {
            "id": task.id,
            "code": code,
            "message": self.redactor.text(message),
            "vendor": task.vendor,
            "op": task.op,
            "rule": task.rule,
            "source": task.source,
            "event_id": task.event_id,
            "event_type": task.event_type,
            "target": task.target,
            "died_at": now,
            "first_died_at": previous["first_died_at"] if previous else now,
            "replays": (previous or {}).get("replays", 0),
            "attempts": self.redactor.deep(attempts),
            "task": task.to_dict(),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.dead(task.id), mapping={"entry": json.dumps(entry), "replaying": "0"})
        pipe.zadd(keys.DEAD_INDEX, {task.id: now})
        pipe.execute()
        return entry

    def get(self, entry_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(keys.dead(entry_id), "entry")
        return json.loads(raw) if raw else None

    def count(self) -> int:
        return int(self.redis.zcard(keys.DEAD_INDEX))

    def iter_newest(self, **filters: str | None) -> Iterator[dict[str, Any]]:
        """Every entry matching ``filters`` (vendor, rule, source, code), newest first."""
        wanted = {k: v for k, v in filters.items() if v}
        start = 0
        while True:
            ids = self.redis.zrevrange(keys.DEAD_INDEX, start, start + 199)
            if not ids:
                return
            start += len(ids)
            pipe = self.redis.pipeline()
            for entry_id in ids:
                pipe.hget(keys.dead(entry_id.decode()), "entry")
            for raw in pipe.execute():
                if raw is None:
                    continue
                entry = json.loads(raw)
                if all(str(entry.get(k)) == v for k, v in wanted.items()):
                    yield entry

    def list(self, limit: int = 50, cursor: str | None = None, **filters: str | None) -> Page:
        """A page newest first; ``cursor`` is the id of the last item of the previous page.

        Pages follow the (died_at, id) order, so entries added meanwhile (newer) never
        shift later pages and removed ones are simply skipped.
        """
        after = self._position(cursor) if cursor else None
        items: list[dict[str, Any]] = []
        for entry in self.iter_newest(**filters):
            if after and (entry["died_at"], entry["id"]) >= after:
                continue
            items.append(self.summary(entry))
            if len(items) > limit:
                break
        more = len(items) > limit
        items = items[:limit]
        next_cursor = f"{items[-1]['died_at']!r}:{items[-1]['id']}" if more and items else None
        return Page(items, next_cursor)

    @staticmethod
    def _position(cursor: str) -> tuple[float, str] | None:
        died_at, _, entry_id = cursor.partition(":")
        try:
            return float(died_at), entry_id
        except ValueError:
            return None

    @staticmethod
    def summary(entry: dict[str, Any]) -> dict[str, Any]:
        keep = (
            "id",
            "code",
            "message",
            "vendor",
            "op",
            "rule",
            "source",
            "event_id",
            "event_type",
            "target",
            "died_at",
            "first_died_at",
            "replays",
        )
        out = {k: entry.get(k) for k in keep}
        out["attempts"] = len(entry.get("attempts", []))
        return out

    def replay(self, entry_id: str) -> bool | None:
        """Queue the entry's task again: True queued, False already replaying, None unknown."""
        marked = int(self._mark(keys=[keys.dead(entry_id)]))
        if marked < 0:
            return None
        if marked == 0:
            return False
        entry = self.get(entry_id)
        assert entry is not None
        entry["replays"] = entry.get("replays", 0) + 1
        self.redis.hset(keys.dead(entry_id), "entry", json.dumps(entry))
        self.queue.requeue(UpdateTask(**entry["task"]), entry["attempts"])
        return True

    def resolve(self, entry_id: str) -> None:
        """The replayed task was applied: the entry leaves the store."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.dead(entry_id))
        pipe.zrem(keys.DEAD_INDEX, entry_id)
        pipe.execute()

    def discard(self, entry_id: str, who: str = "unknown") -> bool:
        entry = self.get(entry_id)
        if entry is None:
            return False
        self.resolve(entry_id)
        self.audit("discard", entry_id, who, code=entry["code"], vendor=entry["vendor"])
        return True

    def audit(self, action: str, entry_id: str, who: str, **detail: Any) -> None:
        record = {"at": time.time(), "action": action, "id": entry_id, "who": who, **detail}
        self.redis.lpush(keys.AUDIT, json.dumps(record))

    def audit_log(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        return [json.loads(r) for r in self.redis.lrange(keys.AUDIT, 0, limit - 1)]
