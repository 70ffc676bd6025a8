"""Per-target ordering: one task at a time per (vendor, target), and no stale overwrites.

- A record is the target, or ``<kind>:<target>`` where a vendor's ops change records
  whose ids may coincide (PortaBilling customer 1001 and account 1001): see
  :meth:`worker.vendors.base.Connector.record_key`.
- :class:`TargetLock`: a random token under ``sb:lock:<vendor>:<record>``, taken with
  ``SET NX PX`` inside the ``begin`` step (:mod:`worker.steps`), released only by its
  holder (compare-and-delete in Lua), expiring on its own if the holder dies. Its time to live
  (:func:`worker.timing.hold_seconds`) is above the longest run, so it cannot expire
  under a live holder; after a vendor timeout the holder keeps it one vendor timeout
  longer (:meth:`TargetLock.hold`) so a late write of the timed-out request lands first.
- Field versions: ``sb:fields:<vendor>:<record>`` maps each field (each member of a
  group, dotted) to the ``occurred_at`` of the event that last set it. ``begin`` reads
  them, :func:`split_by_versions` keeps the names this task may still set (its event is
  not older than the one that set them), and ``complete`` raises the versions of the
  names it set. All of it happens while the lock is held, so two tasks for one record
  cannot interleave.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
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

    def __init__(self, client: redis_lib.Redis, vendor: str, record: str):
        self.redis = client
        self.record = record  # the field versions' key names it too (worker.steps)
        self.key = keys.target_lock(vendor, record)
        self.token = uuid.uuid4().hex
        self._release = client.register_script(_RELEASE)
        self._hold = client.register_script(_HOLD)

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.token])

    def hold(self, seconds: float) -> None:
        """Keep the lock ``seconds`` more, then let it expire (instead of releasing it)."""
        self._hold(keys=[self.key], args=[self.token, max(1, int(seconds * 1000))])


Path = tuple[str, ...]  # a field, or a member of a group: ("physical_address", "city")


def version_paths(fields: Mapping[str, Any]) -> list[Path]:
    """What field versions are kept for: each field, and for a group of fields (a mapping,
    as Soliditech's ``physical_address``) each member, so an older event still sets the
    members a newer one did not touch."""
    paths: list[Path] = []
    for name, value in fields.items():
        if isinstance(value, Mapping) and value:
            paths += [(name, *member) for member in version_paths(value)]
        else:
            paths.append((name,))
    return paths


def dotted(paths: Sequence[Path]) -> list[str]:
    """The names versions are kept under in Redis and shown as (``physical_address.city``)."""
    return [".".join(path) for path in paths]


def version_names(fields: Mapping[str, Any]) -> list[str]:
    return dotted(version_paths(fields))


def split_by_versions(
    fields: Mapping[str, Any], versions: Sequence[float | None], occurred_at: float
) -> tuple[list[Path], list[Path]]:
    """(paths still to set, paths skipped because a newer event already set them).

    ``versions`` holds, in :func:`version_paths` order, the ``occurred_at`` of the event
    that last set each path (None: never set). Equal times are not stale (the later task
    wins).
    """
    fresh: list[Path] = []
    stale: list[Path] = []
    for path, version in zip(version_paths(fields), versions, strict=True):
        (stale if version is not None and version > occurred_at else fresh).append(path)
    return fresh, stale


def pick(fields: Mapping[str, Any], paths: Sequence[Path]) -> dict[str, Any]:
    """The part of ``fields`` that ``paths`` cover (a member validation left out: none)."""
    out: dict[str, Any] = {}
    for *groups, last in paths:
        source: Any = fields
        for group in groups:
            source = source.get(group) if isinstance(source, Mapping) else None
        if isinstance(source, Mapping) and last in source:
            target = out
            for group in groups:
                target = target.setdefault(group, {})
            target[last] = source[last]
    return out
