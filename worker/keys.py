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
JOBS_ACTIVE = PREFIX + "jobs:active"  # set of bulk replay jobs not ended (webhooks.ops.jobs)
# metrics (worker.metrics): hashes of counts and histogram buckets every process adds to
M_WEBHOOKS = PREFIX + "m:webhooks"
M_TASKS = PREFIX + "m:tasks"
M_DEAD = PREFIX + "m:dead"
M_VENDOR_CALL = PREFIX + "m:vendor_call"
M_TASK_RUN = PREFIX + "m:task_run"
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


def job(job_id: str) -> str:
    """A bulk replay job's record (JSON)."""
    return f"{PREFIX}job:{job_id}"


def job_ids(job_id: str) -> str:
    """The list of dead letters a job replays, fixed when it starts."""
    return f"{PREFIX}job:{job_id}:ids"


def job_runner(job_id: str) -> str:
    """The lease of the process running a job."""
    return f"{PREFIX}job:{job_id}:runner"


def job_cancel(job_id: str) -> str:
    """Set (to who asked) when a job is to stop: its runner stops after the entry at hand."""
    return f"{PREFIX}job:{job_id}:cancel"


def ops_fails(address: str) -> str:
    """Failed ops sign-ins from one address (the throttle's count)."""
    return f"{PREFIX}ops:fails:{address}"
