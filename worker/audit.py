"""The ops audit log in Redis: who replayed or discarded what, and when.

``sb:audit`` holds operators' actions, newest first, capped at :data:`AUDIT_KEEP`; the one
record per entry a bulk replay writes goes to ``sb:audit:bulk`` (capped at
:data:`AUDIT_BULK_KEEP`), so one big job cannot push every discard out of the log. Each
record is also a log line, so ``grep <event id>`` shows what ops did beside what the web
and the workers did.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis as redis_lib

from config.logs import event as log_event
from worker import keys

log = logging.getLogger("switchboard.ops")

AUDIT_ACTIONS = ("replay", "discard", "bulk_replay", "bulk_replay_cancel", "event_replay")
AUDIT_KEEP = 10_000  # audit records kept (newest); older ones are trimmed
AUDIT_BULK_KEEP = 20_000  # the same, for the per-entry records of bulk replays


def write(
    client: redis_lib.Redis, action: str, entry_id: str, who: str, **detail: Any
) -> dict[str, Any]:
    """Write an audit record (and its log line); a bulk replay's per-entry records carry
    ``job`` in ``detail`` and go to their own list."""
    record = {"at": time.time(), "action": action, "id": entry_id, "who": who, **detail}
    key, keep = (keys.AUDIT_BULK, AUDIT_BULK_KEEP) if "job" in detail else (keys.AUDIT, AUDIT_KEEP)
    pipe = client.pipeline(transaction=True)
    pipe.lpush(key, json.dumps(record, default=str))
    pipe.ltrim(key, 0, keep - 1)
    pipe.execute()
    fields = {k: v for k, v in record.items() if k not in ("at", "id", "action")}
    log_event(log, f"ops {action}", entry_id=entry_id, **fields)
    return record


def read(
    client: redis_lib.Redis,
    limit: int = 100,
    action: str | None = None,
    entry_id: str | None = None,
    each: bool = True,
) -> list[dict[str, Any]]:
    """Audit records newest first (both lists, merged; ``each=False``: without the
    one-per-entry records of bulk replays), optionally only one ``action``'s, or only
    those about ``entry_id``: a dead letter's id, a job's, or an event's
    ``source/event_id`` (its event replays and the replays and discards of its dead
    letters)."""
    lists = [_records(client, keys.AUDIT)]
    if each:
        lists.append(_records(client, keys.AUDIT_BULK))
    merged = heapq.merge(*lists, key=lambda record: -float(record.get("at") or 0))
    wanted = (
        r for r in merged if (not action or r.get("action") == action) and _about(r, entry_id)
    )
    return list(itertools.islice(wanted, limit))


def _about(record: dict[str, Any], entry_id: str | None) -> bool:
    event = f"{record.get('source')}/{record.get('event_id')}"
    return not entry_id or entry_id in (record.get("id"), event)


def _records(client: redis_lib.Redis, key: str) -> Iterator[dict[str, Any]]:
    start = 0
    while raw := client.lrange(key, start, start + 499):
        start += len(raw)
        yield from (json.loads(r) for r in raw)
