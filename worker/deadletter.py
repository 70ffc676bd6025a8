"""The dead-letter store (Redis): put / list / get / replay / discard, for worker, ops and CLI.

An entry's id is its task's id. ``sb:dl:<id>`` is a hash: ``entry`` (JSON: task, rule,
event, code, message, every attempt), ``replaying`` (the time a replay was queued, "0"
when none is), ``replays`` (how many times it was replayed); ``sb:dl:index`` orders
entries by the time they (last) died, newest first.
Replay is idempotent: an entry already being replayed is not queued again (one Lua check
and mark, so two presses at once queue it once). The entry leaves the store once its
replay is applied (or found stale: newer events already set every field it carries), and
comes back with the new attempts appended if the replay fails.
Messages and excerpts are redacted before they are stored. Every replay and discard can
be written to the audit log (``sb:audit``, newest first, capped at ``AUDIT_KEEP``).
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis as redis_lib

from worker import keys
from worker.model import UpdateTask
from worker.queue import Queue
from worker.redact import Redactor

# KEYS[1] the entry, KEYS[2] its task record; ARGV[1] now, ARGV[2] seconds after which a
# mark whose task never left 'dead' is taken as a replay that died before it was queued.
_MARK_REPLAYING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local mark = redis.call('HGET', KEYS[1], 'replaying')
if mark and mark ~= '0' then
  local state = redis.call('HGET', KEYS[2], 'state')
  if state == 'queued' or state == 'retrying' then return 0 end
  if tonumber(ARGV[1]) - (tonumber(mark) or 0) < tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], 'replaying', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'replays', 1)
return 1
"""

FILTERS = ("vendor", "rule", "source", "code")
AUDIT_KEEP = 10_000  # audit records kept (newest); older ones are trimmed
STUCK_MARK = 60.0  # see _MARK_REPLAYING


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
            "attempts": self.redactor.deep(attempts),
            "task": task.to_dict(),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.dead(task.id), mapping={"entry": json.dumps(entry), "replaying": "0"})
        pipe.zadd(keys.DEAD_INDEX, {task.id: now})
        pipe.execute()
        return {**entry, "replays": (previous or {}).get("replays", 0), "replaying": False}

    def get(self, entry_id: str) -> dict[str, Any] | None:
        raw, replays, replaying = cast(
            "list[bytes | None]",
            self.redis.hmget(keys.dead(entry_id), ["entry", "replays", "replaying"]),
        )
        return _entry(raw, replays, replaying) if raw else None

    def count(self) -> int:
        return int(self.redis.zcard(keys.DEAD_INDEX))

    def iter_newest(
        self,
        since: float | None = None,
        until: float | None = None,
        **filters: str | None,
    ) -> Iterator[dict[str, Any]]:
        """Every entry matching ``filters`` (vendor, rule, source, code) that died in
        ``[since, until]``, newest first. Reads the index in batches from the top down, each
        batch starting at the score where the last one ended, so entries added or removed
        meanwhile neither shift nor repeat what is still to come."""
        wanted = {k: v for k, v in filters.items() if v}
        high: float | str = "+inf" if until is None else until
        low: float | str = "-inf" if since is None else since
        seen_at_top: set[str] = set()  # ids already yielded at score ``high``
        while True:
            found = cast(
                "list[tuple[bytes, float]]",
                self.redis.zrevrangebyscore(
                    keys.DEAD_INDEX, high, low, start=0, num=200 + len(seen_at_top), withscores=True
                ),
            )
            rows = [(m.decode(), sc) for m, sc in found if m.decode() not in seen_at_top]
            if not rows:
                return
            pipe = self.redis.pipeline()
            for entry_id, _ in rows:
                pipe.hmget(keys.dead(entry_id), ["entry", "replays", "replaying"])
            for (entry_id, score), (raw, replays, replaying) in zip(
                rows, pipe.execute(), strict=True
            ):
                if score != high:
                    high, seen_at_top = score, set()
                seen_at_top.add(entry_id)
                if raw is None:
                    continue
                entry = _entry(raw, replays, replaying)
                if all(str(entry.get(k)) == v for k, v in wanted.items()):
                    yield entry

    def list(
        self,
        limit: int = 50,
        cursor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        **filters: str | None,
    ) -> Page:
        """A page newest first; ``cursor`` is ``died_at:id`` of the last item of the
        previous page (``next_cursor``).

        Pages follow the (died_at, id) order, so entries added meanwhile (newer) never
        shift later pages and removed ones are simply skipped.
        """
        after = self._position(cursor) if cursor else None
        if after is not None:
            until = after[0] if until is None else min(until, after[0])
        items: list[dict[str, Any]] = []
        for entry in self.iter_newest(since=since, until=until, **filters):
            if after and (entry["died_at"], entry["id"]) >= after:
                continue
            items.append(self.summary(entry))
            if len(items) > limit:
                break
        more = len(items) > limit
        items = items[:limit]
        next_cursor = f"{items[-1]['died_at']!r}:{items[-1]['id']}" if more and items else None
        return Page(items, next_cursor)

    def counts(self) -> dict[str, dict[str, int]]:
        """How many entries there are per vendor and per code (for the top of the page)."""
        out: dict[str, dict[str, int]] = {"vendor": {}, "code": {}}
        for entry in self.iter_newest():
            for key in ("vendor", "code"):
                out[key][entry[key]] = out[key].get(entry[key], 0) + 1
        return out

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
            "replaying",
        )
        out = {k: entry.get(k) for k in keep}
        out["attempts"] = len(entry.get("attempts", []))
        return out

    def replay(
        self, entry_id: str, task: UpdateTask | None = None, who: str | None = None
    ) -> bool | None:
        """Queue the entry's task (or ``task``, a re-mapped one with the same id) again.

        True queued, False already being replayed (nothing queued), None unknown entry.
        With ``who``, a queued replay is written to the audit log.
        """
        now = time.time()
        marked = int(
            self._mark(keys=[keys.dead(entry_id), keys.task(entry_id)], args=[now, STUCK_MARK])
        )
        if marked < 0:
            return None
        if marked == 0:
            return False
        entry = self.get(entry_id)
        assert entry is not None
        try:
            self.queue.requeue(task or UpdateTask(**entry["task"]), entry["attempts"], now)
        except BaseException:
            self.redis.hset(keys.dead(entry_id), "replaying", "0")
            self.redis.hincrby(keys.dead(entry_id), "replays", -1)
            raise
        if who is not None:
            self.audit(
                "replay",
                entry_id,
                who,
                code=entry["code"],
                vendor=entry["vendor"],
                rule=entry["rule"],
                remapped=task is not None,
            )
        return True

    def resolve(self, entry_id: str) -> None:
        """The replayed task was applied (or was stale): the entry leaves the store."""
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

    def audit(self, action: str, entry_id: str, who: str, **detail: Any) -> dict[str, Any]:
        record = {"at": time.time(), "action": action, "id": entry_id, "who": who, **detail}
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(keys.AUDIT, json.dumps(record, default=str))
        pipe.ltrim(keys.AUDIT, 0, AUDIT_KEEP - 1)
        pipe.execute()
        return record

    def audit_log(
        self, limit: int = 100, action: str | None = None, entry_id: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Audit records newest first, optionally only one ``action`` or one entry's."""
        out: builtins.list[dict[str, Any]] = []
        start = 0
        while len(out) < limit:
            raw = self.redis.lrange(keys.AUDIT, start, start + 499)
            if not raw:
                break
            start += len(raw)
            for r in raw:
                record = json.loads(r)
                if action and record.get("action") != action:
                    continue
                if entry_id and record.get("id") != entry_id:
                    continue
                out.append(record)
                if len(out) >= limit:
                    break
        return out


def _entry(raw: bytes, replays: bytes | None, replaying: bytes | None) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(raw)
    entry["replays"] = int(replays or entry.get("replays", 0))
    entry["replaying"] = bool(replaying) and replaying not in (b"0", b"")
    return entry
