"""Per-target ordering: one task at a time per (vendor, target), and no stale overwrites.

- :class:`TargetLock`: a random token under ``sb:lock:<vendor>:<target>``, taken with
  ``SET NX PX`` inside the ``begin`` step (:mod:`worker.steps`), released only by its
  holder (compare-and-delete in Lua), expiring on its own if the holder dies. Its time to live
  (:func:`worker.runner.hold_seconds`) is above the longest run, so it cannot expire
  under a live holder; after a vendor timeout the holder keeps it one vendor timeout
  longer (:meth:`TargetLock.hold`) so a late write of the timed-out request lands first.
- Field versions: ``sb:fields:<vendor>:<target>`` maps each field to the ``occurred_at``
  of the event that last set it. ``begin`` reads them, :func:`split_by_versions` keeps
  the fields this task may still set (its event is not older than the one that set
  them), and ``complete`` raises the versions of the fields it set. All of it happens
  while the lock is held, so two tasks for one target cannot interleave.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import redis as redis_lib

from worker import keys

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_HOLD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class TargetLock:
    """The holder's side of the lock: its token, release and hold. The lock is *taken*
    (with its time to live) by the ``begin`` step, atomically with the gen check."""

    def __init__(self, client: redis_lib.Redis, vendor: str, target: str):
        self.redis = client
        self.key = keys.target_lock(vendor, target)
        self.token = uuid.uuid4().hex
        self._release = client.register_script(_RELEASE)
        self._hold = client.register_script(_HOLD)

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.token])

    def hold(self, seconds: float) -> None:
        """Keep the lock ``seconds`` more, then let it expire (instead of releasing it)."""
        self._hold(keys=[self.key], args=[self.token, max(1, int(seconds * 1000))])


def split_by_versions(
    fields: dict[str, Any], versions: Sequence[float | None], occurred_at: float
) -> tuple[dict[str, Any], list[str]]:
    """(fields still to set, names skipped because a newer event already set them).

    ``versions`` holds, in the order of ``fields``, the ``occurred_at`` of the event that
    last set each field (None: never set). Equal times are not stale (the later task wins).
    """
    fresh, stale = {}, []
    for (name, value), version in zip(fields.items(), versions, strict=True):
        if version is not None and version > occurred_at:
            stale.append(name)
        else:
            fresh[name] = value
    return fresh, stale
