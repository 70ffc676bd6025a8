"""Kombu's Redis transports (plain and Sentinel), with one fix for a lost connection.

When the broker connection drops (a Redis restart, a Sentinel failover) while messages
are unacknowledged, kombu closes the old channel and, to put those messages back,
rebuilds its connection pool from a connection that is already gone: an
``AttributeError`` (``'NoneType' object has no attribute 'hostname'``) that Celery treats
as unrecoverable, so the whole worker exits (seen in
``tests/chaos/test_sentinel_failover.py``; kombu 5.7). Here that rebuild raises a
connection error instead, which kombu's close path already ignores: the worker
reconnects and goes on, and the unacknowledged messages are restored later by kombu's
visibility timeout, their tasks sooner by our own leases (:mod:`worker.relay`).

``worker.celery_app`` selects these classes through Celery's ``broker_transport``.
"""

from __future__ import annotations

from typing import Any

import redis as redis_lib
from kombu.transport import redis as kombu_redis


class _ClosedConnectionSafe:
    """Refuses to build connection parameters once the connection is closed."""

    connection: Any

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis_lib.ConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous)  # type: ignore[misc,no-any-return]


class Channel(_ClosedConnectionSafe, kombu_redis.Channel):  # type: ignore[misc]
    pass


class SentinelChannel(_ClosedConnectionSafe, kombu_redis.SentinelChannel):  # type: ignore[misc]
    pass


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel


def transport_for(url: str) -> str:
    """The ``broker_transport`` for a ``redis://`` or ``sentinel://`` broker URL."""
    name = "SentinelTransport" if url.startswith("sentinel://") else "Transport"
    return f"{__name__}:{name}"
