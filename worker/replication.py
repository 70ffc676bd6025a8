"""Replica confirmation (Redis ``WAIT``), for ingest and the worker alike.

With ``SWITCHBOARD_MIN_REPLICAS`` above 0, a write counts as durable only once that many
replicas hold it: Redis replicates asynchronously, so a master that dies right after
answering can take an unreplicated write with it, and Sentinel then promotes a replica
that never saw it.
"""

from __future__ import annotations

from typing import Any

import redis as redis_lib

from worker import keys


class NotReplicated(redis_lib.RedisError):
    """Written on the master, but not confirmed by enough replicas in time."""


def require(acked: Any, wanted: int, timeout: float) -> None:
    """Raise :class:`NotReplicated` unless ``acked`` (``WAIT``'s reply) reached ``wanted``."""
    if isinstance(acked, int) and acked >= wanted:
        return
    count = acked if isinstance(acked, int) else "no"
    raise NotReplicated(f"{count} of {wanted} replica(s) confirmed the write within {timeout:g} s")


def add_wait(pipe: Any, wanted: int, timeout: float) -> None:
    """End ``pipe`` with a write of its own, then ``WAIT`` (two replies: see :func:`confirm`).

    ``WAIT`` only covers the writes made on the calling connection. A retry after
    :class:`NotReplicated` (another pooled connection, another web process) may write
    nothing (the event is a duplicate now, the task already finished) and would be
    "confirmed" at once while the first write is still unreplicated. The mark moves this
    connection's offset to the master's current one, which covers every earlier write.
    (The Redis 6.2 we test with waits for the current offset on a fresh connection
    anyway, so the tests cannot show the difference; the documented contract is only
    "this connection's writes", and that is what we build on.)
    """
    pipe.set(keys.REPLICATION_MARK, "1")
    pipe.execute_command("WAIT", wanted, int(timeout * 1000))


def confirm(replies: list[Any], wanted: int, timeout: float) -> None:
    """Take :func:`add_wait`'s two replies off the end of ``replies``; raise
    :class:`NotReplicated` unless enough replicas confirmed."""
    acked = replies.pop()
    replies.pop()
    require(acked, wanted, timeout)


def confirm_writes(client: redis_lib.Redis, wanted: int, timeout: float) -> None:
    """After writes made through ``client`` (any of its pooled connections): raise
    :class:`NotReplicated` unless ``wanted`` replicas hold them (see :func:`add_wait`)."""
    pipe = client.pipeline(transaction=False)
    add_wait(pipe, wanted, timeout)
    confirm(pipe.execute(), wanted, timeout)
