"""The dead-letter store (Redis): put / list / get / replay / discard, for worker, ops and CLI.

An entry's id is its task's id. ``sb:dl:<id>`` is a hash: ``entry`` (JSON: task, rule,
event, code, message, every attempt), ``replaying`` (the time a replay was queued, "0"
when none is), ``replays`` (how many times it was replayed), and the four filter fields
(vendor, rule, source, code) in plain. ``sb:dl:index`` orders entries by the time they
(last) died, newest first; ``sb:dl:by:<field>:<value>`` does the same for the entries with
one filter value, and ``sb:dl:counts`` counts them, so a filtered page and the counts cost
the same with a million entries as with ten. Put and resolve keep all three in one script.
Replay is idempotent: an entry already being replayed is not queued again (one Lua check
and mark, so two presses at once queue it once). The entry leaves the store once its
replay is applied (or found stale: newer events already set every field it carries), and
comes back with the new attempts appended if the replay fails.
Messages and excerpts are redacted before they are stored. Every replay and discard can
be written to the audit log (:mod:`worker.audit`).
"""

from __future__ import annotations

import builtins
import itertools
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis as redis_lib

from worker import audit, keys
from worker.model import UpdateTask
from worker.queue import EVENT_HOLD, Queue
from worker.redact import Redactor

log = logging.getLogger("switchboard.ops")

# KEYS[1] the entry, KEYS[2] its task record; ARGV[1] now, ARGV[2] seconds after which a
# mark whose task never left 'dead' is taken as a replay that died before it was queued.
# -2: the task was applied (or found stale) after the entry was written (a worker died
# between writing the entry and marking the task dead, and a later run succeeded): the
# entry is left over, and replaying it would send an applied task again.
_MARK_REPLAYING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'applied' or state == 'stale' then return -2 end  -- it ended after all
local mark = redis.call('HGET', KEYS[1], 'replaying')
if mark and mark ~= '0' then
  if state == 'queued' or state == 'retrying' then return 0 end
  if tonumber(ARGV[1]) - (tonumber(mark) or 0) < tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], 'replaying', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'replays', 1)
return 1
"""

FILTERS = ("vendor", "rule", "source", "code")  # the order the scripts below take them in
_NAMES = "local names = {" + ", ".join(f"'{name}'" for name in FILTERS) + "}\n"

# Drop 'id' from the by-value index and count of the filter value 'value' of field 'name'.
_UNCOUNT = """
local function uncount(counts, by, name, value, id)
  redis.call('ZREM', by .. name .. ':' .. value, id)
  if redis.call('HINCRBY', counts, name .. ':' .. value, -1) <= 0 then
    redis.call('HDEL', counts, name .. ':' .. value)
  end
end
"""

# KEYS[1] the entry, KEYS[2] the index, KEYS[3] the counts, KEYS[4] the task's record;
# ARGV[1] id, ARGV[2] now, ARGV[3] the entry's JSON, ARGV[4] the by-value key prefix,
# ARGV[5..8] its filter values, ARGV[9] (optional) the key of the event the entry needs
# to be replayed (a mapping_error's): the event is kept, without expiry, while entries
# need it ('dl_refs' counts them; _DROP gives it its expiry back at 0). The task record
# is marked 'dead_letter': should the worker die before it marks the task dead, the run
# that applies it later resolves the entry.
# An entry that died again with another code moves from the old code's index and count.
_PUT = (
    _NAMES
    + _UNCOUNT
    + """
local id, now, by = ARGV[1], ARGV[2], ARGV[4]
local old = redis.call('HMGET', KEYS[1], unpack(names))
for i, name in ipairs(names) do
  local value = ARGV[4 + i]
  if old[i] ~= value then
    if old[i] then uncount(KEYS[3], by, name, old[i], id) end
    redis.call('HINCRBY', KEYS[3], name .. ':' .. value, 1)
  end
  redis.call('ZADD', by .. name .. ':' .. value, now, id)
  redis.call('HSET', KEYS[1], name, value)
end
redis.call('HSET', KEYS[1], 'entry', ARGV[3], 'replaying', '0')
if ARGV[9] and redis.call('EXISTS', ARGV[9]) == 1
    and redis.call('HSETNX', KEYS[1], 'event_key', ARGV[9]) == 1 then
  redis.call('HINCRBY', ARGV[9], 'dl_refs', 1)
  redis.call('PERSIST', ARGV[9])
end
redis.call('ZADD', KEYS[2], now, id)
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'dead_letter', '1') end
"""
)

# KEYS as _PUT; ARGV[1] id, ARGV[2] the by-value key prefix, ARGV[3] the event ttl.
# 1 if the entry was there.
_DROP = (
    _NAMES
    + _UNCOUNT
    + EVENT_HOLD
    + """
local old = redis.call('HMGET', KEYS[1], unpack(names))
local event = redis.call('HGET', KEYS[1], 'event_key')
if event and redis.call('EXISTS', event) == 1
    and redis.call('HINCRBY', event, 'dl_refs', -1) <= 0 then
  redis.call('HDEL', event, 'dl_refs')
  event_ttl(event, ARGV[3])  -- no entry needs it now: its ttl runs again (if no task does)
end
local gone = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
for i, name in ipairs(names) do
  if old[i] then uncount(KEYS[3], ARGV[2], name, old[i], ARGV[1]) end
end
return gone
"""
)

# Index entries stored before the by-value indexes existed (no plain 'vendor' field).
# KEYS[1] the index, KEYS[2] the counts; ARGV[1] the entry key prefix, ARGV[2] the
# by-value key prefix, ARGV[3..] ids. Each entry is indexed whole or not at all.
_INDEX_OLD = (
    _NAMES
    + """
local n = 0
for j = 3, #ARGV do
  local id = ARGV[j]
  local key = ARGV[1] .. id
  local found = redis.call('HMGET', key, 'entry', 'vendor')
  if found[1] and not found[2] then
    local entry = cjson.decode(found[1])
    local score = redis.call('ZSCORE', KEYS[1], id) or entry['died_at']
    for _, name in ipairs(names) do
      local value = tostring(entry[name])
      redis.call('HSET', key, name, value)
      redis.call('ZADD', ARGV[2] .. name .. ':' .. value, score, id)
      redis.call('HINCRBY', KEYS[2], name .. ':' .. value, 1)
    end
    n = n + 1
  end
end
return n
"""
)
#: every code a dead letter can carry (DESIGN: dead-letter codes)
CODES = (
    "mapping_error",
    "invalid_fields",
    "not_found",
    "rejected",
    "auth_failed",
    "exhausted",
    "unknown_vendor",
)

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
        self._put = client.register_script(_PUT)
        self._drop = client.register_script(_DROP)
        self._index_old = client.register_script(_INDEX_OLD)
        self._indexed = False

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
        args = [task.id, now, json.dumps(entry), keys.DEAD_BY, *(entry[f] for f in FILTERS)]
        if code == "mapping_error":
            # replaying it maps the event again with the fixed rule: the event is kept as
            # long as the entry (else it expires SWITCHBOARD_EVENT_TTL_DAYS after it came)
            args.append(keys.event(task.source, task.event_id))
        self._put(
            keys=[keys.dead(task.id), keys.DEAD_INDEX, keys.DEAD_COUNTS, keys.task(task.id)],
            args=args,
        )
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
        indexes = self._indexes(wanted)
        if not indexes:
            return
        index, others = indexes[0], indexes[1:]
        high: float | str = "+inf" if until is None else until
        low: float | str = "-inf" if since is None else since
        seen_at_top: set[str] = set()  # ids already yielded at score ``high``
        while True:
            found = cast(
                "list[tuple[bytes, float]]",
                self.redis.zrevrangebyscore(
                    index, high, low, start=0, num=200 + len(seen_at_top), withscores=True
                ),
            )
            rows = [(m.decode(), sc) for m, sc in found if m.decode() not in seen_at_top]
            if not rows:
                return
            for (entry_id, score), stored in zip(rows, self._read_if_in(rows, others), strict=True):
                if score != high:
                    high, seen_at_top = score, set()
                seen_at_top.add(entry_id)
                if stored is None:
                    continue
                entry = _entry(*stored)
                if all(str(entry.get(k)) == v for k, v in wanted.items()):
                    yield entry

    def _read_if_in(
        self, rows: builtins.list[tuple[str, float]], others: builtins.list[str]
    ) -> builtins.list[Any]:
        """Each row's stored fields (entry, replays, replaying), read only when its id is
        in every one of ``others`` (the other filters' indexes: one ZMSCORE per batch
        each; a filter of two values read every entry of the larger one in full), else
        None, as for an entry gone since."""
        ids = [entry_id for entry_id, _ in rows]
        keep = [True] * len(ids)
        if others:
            pipe = self.redis.pipeline()
            for other in others:
                pipe.zmscore(other, ids)
            for scores in pipe.execute():
                keep = [k and score is not None for k, score in zip(keep, scores, strict=True)]
        pipe = self.redis.pipeline()
        for entry_id in itertools.compress(ids, keep):
            pipe.hmget(keys.dead(entry_id), ["entry", "replays", "replaying"])
        read = iter(pipe.execute())
        return [fields if k and (fields := next(read))[0] is not None else None for k in keep]

    def _indexes(self, wanted: dict[str, str]) -> builtins.list[str]:
        """The indexes of the entries that could match ``wanted``, smallest first (the
        first is walked, the others asked about its ids); none when one is empty."""
        if not wanted:
            return [keys.DEAD_INDEX]
        self._ensure_indexed()
        names = [f"{keys.DEAD_BY}{field}:{value}" for field, value in wanted.items()]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zcard(name)
        sized = sorted(zip(pipe.execute(), names, strict=True))
        return [name for _, name in sized] if sized[0][0] else []

    def _ensure_indexed(self) -> None:
        """Index, once per store, the entries written before the by-value indexes were.

        Every step is one script per batch that skips indexed entries, so processes doing
        this at once (or a put or resolve meanwhile) neither miss nor double-count any."""
        if self._indexed or self.redis.exists(keys.DEAD_INDEXED):
            self._indexed = True
            return
        start = 0
        while ids := self.redis.zrange(keys.DEAD_INDEX, start, start + 499):
            self._index_old(
                keys=[keys.DEAD_INDEX, keys.DEAD_COUNTS],
                args=[keys.dead(""), keys.DEAD_BY, *ids],
            )
            start += len(ids)
        self.redis.set(keys.DEAD_INDEXED, "1")
        self._indexed = True

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
        after = parse_cursor(cursor) if cursor else None
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
        self._ensure_indexed()
        out: dict[str, dict[str, int]] = {"vendor": {}, "code": {}}
        for field_value, count in self.redis.hgetall(keys.DEAD_COUNTS).items():
            field, _, value = field_value.decode().partition(":")
            if field in out:
                out[field][value] = int(count)
        return out

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
        self,
        entry_id: str,
        task: UpdateTask | None = None,
        who: str | None = None,
        job: str | None = None,
    ) -> bool | None:
        """Queue the entry's task (or ``task``, a re-mapped one with the same id) again.

        True queued, False already being replayed (nothing queued), None unknown entry (or
        one left over from a task that ended after all: it leaves the store).
        With ``who``, a queued replay is written to the audit log.
        """
        now = time.time()
        marked = int(
            self._mark(keys=[keys.dead(entry_id), keys.task(entry_id)], args=[now, STUCK_MARK])
        )
        if marked == -2:  # left over: its task ended after all
            self.resolve(entry_id)
            return None
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
            detail = {"job": job} if job else {}
            self.audit(
                "replay",
                entry_id,
                who,
                code=entry["code"],
                vendor=entry["vendor"],
                rule=entry["rule"],
                remapped=task is not None,
                event_id=entry.get("event_id"),
                source=entry.get("source"),
                **detail,
            )
        return True

    def resolve(self, entry_id: str) -> None:
        """The replayed task was applied (or was stale): the entry leaves the store."""
        self._drop(
            keys=[keys.dead(entry_id), keys.DEAD_INDEX, keys.DEAD_COUNTS],
            args=[entry_id, keys.DEAD_BY, self.queue.event_ttl],
        )

    def discard(self, entry_id: str, who: str = "unknown") -> bool:
        entry = self.get(entry_id)
        if entry is None:
            return False
        self.resolve(entry_id)
        self.audit(
            "discard", entry_id, who, code=entry["code"], vendor=entry["vendor"],
            event_id=entry.get("event_id"), source=entry.get("source"),
        )  # fmt: skip
        return True

    def audit(self, action: str, entry_id: str, who: str, **detail: Any) -> dict[str, Any]:
        return audit.write(self.redis, action, entry_id, who, **detail)

    def audit_log(
        self,
        limit: int = 100,
        action: str | None = None,
        entry_id: str | None = None,
        each: bool = True,
    ) -> builtins.list[dict[str, Any]]:
        return audit.read(self.redis, limit, action, entry_id, each)


def parse_cursor(cursor: str) -> tuple[float, str]:
    """``died_at:id`` (a page's ``next_cursor``) as (died_at, id); ValueError otherwise."""
    died_at, colon, entry_id = cursor.partition(":")
    try:
        position = float(died_at)
    except ValueError:
        position = math.nan
    if not (colon and entry_id and math.isfinite(position)):
        raise ValueError("not a cursor this listing gave (next_cursor)")
    return position, entry_id


def _entry(raw: bytes, replays: bytes | None, replaying: bytes | None) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(raw)
    entry["replays"] = int(replays or entry.get("replays", 0))
    entry["replaying"] = bool(replaying) and replaying not in (b"0", b"")
    return entry
