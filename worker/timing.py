"""How long one run of a task may take, which sizes its target lock, its lease, its
shared in-flight slot and how long a replaced connector stays open after a reload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.vendors import CONNECTORS
from worker.vendors.base import VendorInstance

if TYPE_CHECKING:
    from worker.runtime import Runtime

RATE_WAIT_INLINE = 1.0  # rate-limit waits up to this long are slept, longer ones deferred
SLOT_WAIT_INLINE = 1.0  # how long to wait for a shared in-flight slot before deferring


def call_seconds(instance: VendorInstance) -> float:
    """Above the longest one vendor call can last: pool + connect + write + read timeouts
    (httpx applies each separately), and some slack."""
    return 4 * instance.timeout + 2


def op_seconds(instance: VendorInstance) -> float:
    """Above the longest one op can take: every request it may make (a login, the call,
    and both again after a refused session), each up to :func:`call_seconds`."""
    return CONNECTORS[instance.kind].max_requests * call_seconds(instance)


def hold_seconds(rt: Runtime, instance: VendorInstance) -> float:
    """Lock and lease length for one run: above the longest a run can take (the op, plus
    the inline rate-limit and in-flight slot waits, each bounded)."""
    return max(rt.settings.run_lease, op_seconds(instance) + RATE_WAIT_INLINE + SLOT_WAIT_INLINE)
