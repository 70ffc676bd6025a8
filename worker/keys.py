"""Every Redis key Switchboard uses, in one place (prefix ``sb:``)."""

from __future__ import annotations

PREFIX = "sb:"
DUE = PREFIX + "due"  # zset task_id -> unix time it is due to be (re)published
WAKE = PREFIX + "wake"  # list pushed on new work so the relay wakes at once
WAITING = PREFIX + "waiting"  # zset task_id -> time queued (oldest waiting task age)
HEARTBEATS = PREFIX + "heartbeats"  # hash worker name -> last beat (unix time)
REPLICATION_MARK = PREFIX + "replication-mark"  # written before each WAIT (worker.replication)
RECOVERED = PREFIX + "m:recovered"  # hash worker name -> deliveries made due after it died
DEAD_INDEX = PREFIX + "dl:index"  # zset dead-letter id -> time it (last) died
DEAD_BY = PREFIX + "dl:by:"  # + "<field>:<value>": zset, the DEAD_INDEX entries with that value
DEAD_COUNTS = PREFIX + "dl:counts"  # hash "<field>:<value>" -> entries with that value
DEAD_INDEXED = PREFIX + "dl:indexed"  # set once every entry is in DEAD_BY and DEAD_COUNTS
AUDIT = PREFIX + "audit"  # list of JSON audit records, newest first
AUDIT_BULK = PREFIX + "audit:bulk"  # the same, for each entry a bulk replay replayed
CELERY_QUEUE = "switchboard"


def event(source: str, event_id: str) -> str:
    return f"{PREFIX}event:{source}:{event_id}"


def event_replay(source: str, event_id: str) -> str:
    """Held (a redis-py lock) while ops replay the event or one of its dead letters."""
    return f"{PREFIX}replaying:{source}:{event_id}"


def event_replayed(source: str, event_id: str) -> str:
    """Set for a few seconds after ops replayed the event (a second press is refused)."""
    return f"{PREFIX}replayed:{source}:{event_id}"


def task(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def held(worker: str) -> str:
    """JSON [[task id, gen], ...]: what the worker has reserved (worker.holdings)."""
    return f"{PREFIX}held:{worker}"


def dead(entry_id: str) -> str:
    return f"{PREFIX}dl:{entry_id}"


def field_versions(vendor: str, target: str) -> str:
    return f"{PREFIX}fields:{vendor}:{target}"


def target_lock(vendor: str, target: str) -> str:
    return f"{PREFIX}lock:{vendor}:{target}"


def rate(vendor: str) -> str:
    return f"{PREFIX}rate:{vendor}"


def circuit(vendor: str) -> str:
    return f"{PREFIX}circuit:{vendor}"


def inflight(vendor: str) -> str:
    """zset slot token -> lease end: calls in flight to the vendor (worker.inflight)."""
    return f"{PREFIX}inflight:{vendor}"


def ops_session(session_id: str) -> str:
    """The operator name a signed-in ops page session belongs to (expires with it)."""
    return f"{PREFIX}ops:session:{session_id}"
