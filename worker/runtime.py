"""What a worker process needs, built once per process: config, Redis, connectors, helpers.

Nothing is built at import time: :func:`get_runtime` builds it on first use (in the
Celery worker process, after any fork), from the environment settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib

from config.loader import load_config
from config.logs import configure_logging
from config.logs import event as log_event
from config.model import Config
from config.redis_url import parse_sentinel_url
from config.settings import Settings
from config.watch import ConfigFile
from worker.deadletter import DeadLetters
from worker.inflight import InFlight
from worker.queue import Queue
from worker.ratelimit import RateLimiter
from worker.redact import Redactor
from worker.steps import Steps
from worker.timing import hold_seconds
from worker.vendors import connector_for
from worker.vendors.base import Connector

log = logging.getLogger("switchboard.worker")


@dataclass
class Runtime:
    settings: Settings
    config: Config
    redis: redis_lib.Redis
    queue: Queue
    dead_letters: DeadLetters
    limiter: RateLimiter
    inflight: InFlight
    steps: Steps
    redactor: Redactor
    _connectors: dict[str, Connector] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connector(self, vendor: str) -> Connector | None:
        with self._lock:
            if vendor not in self._connectors:
                instance = self.config.vendors.get(vendor)
                if instance is None:
                    return None
                self._connectors[vendor] = connector_for(instance)
            return self._connectors[vendor]

    def close(self) -> None:
        for connector in self._connectors.values():
            connector.close()
        self._connectors.clear()

    def hand_over(self, fresh: Runtime) -> list[Connector]:
        """Give ``fresh`` the connectors whose vendor settings it shares; the others (to
        close once the tasks using them are done)."""
        with self._lock:
            kept = {
                name: connector
                for name, connector in self._connectors.items()
                if fresh.config.vendors.get(name) == self.config.vendors.get(name)
            }
            replaced = [c for n, c in self._connectors.items() if n not in kept]
        with fresh._lock:
            fresh._connectors.update(kept)
        return replaced


CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
    "health_check_interval": 30,
    "retry_on_timeout": False,
}


def connect(url: str) -> redis_lib.Redis:
    """A Redis client that fails fast (never hangs a request) and retries once on reconnect.

    ``sentinel://[:password@]host:port[/db][;sentinel://host2:port...]`` (Celery's own
    broker URL form) asks the Sentinels for the current master of
    ``SWITCHBOARD_SENTINEL_MASTER`` (default ``mymaster``) and follows failovers.
    """
    if url.startswith("sentinel://"):
        return connect_sentinel(url, os.environ.get("SWITCHBOARD_SENTINEL_MASTER") or "mymaster")
    return redis_lib.Redis.from_url(url, **CLIENT_OPTIONS)


def connect_sentinel(url: str, master: str) -> redis_lib.Redis:
    from redis.sentinel import Sentinel

    hosts, db, password = parse_sentinel_url(url)
    sentinel = Sentinel(
        hosts,
        socket_timeout=CLIENT_OPTIONS["socket_connect_timeout"],
        sentinel_kwargs={"password": password} if password else None,
    )
    return sentinel.master_for(master, db=db, password=password, **CLIENT_OPTIONS)


def build_runtime(
    settings: Settings, config: Config | None = None, client: redis_lib.Redis | None = None
) -> Runtime:
    """Everything a worker needs; ``client``: a Redis connection to reuse (a reload)."""
    from config.embedded_redis import resolve_redis_url

    config = config or load_config(settings.config_path)
    client = client or connect(resolve_redis_url(settings))
    redactor = Redactor(config.secrets)
    return Runtime(
        settings=settings,
        config=config,
        redis=client,
        queue=Queue(client, settings.event_ttl_seconds),
        dead_letters=DeadLetters(client, redactor, settings.event_ttl_seconds),
        limiter=RateLimiter(client),
        inflight=InFlight(client),
        steps=Steps(
            client, settings.min_replicas, settings.replica_timeout, settings.event_ttl_seconds
        ),
        redactor=redactor,
    )


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


@dataclass
class _Watch:
    """The config file as this process watches it (None until the first runtime), and
    when it was last looked at."""

    file: ConfigFile | None = None
    checked: float = 0.0


_watch = _Watch()

#: seconds between looks at the config file: a changed one (vendors: limits, URLs, a new
#: vendor) is used by the next task; one that does not load is refused, logged once
CONFIG_CHECK_EVERY = 2.0


def get_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.redis.connection_pool.pid != os.getpid():
            _runtime = build_runtime(Settings.from_env())
            _watch.file, _watch.checked = ConfigFile(_runtime.config.file, log), time.monotonic()
        elif time.monotonic() - _watch.checked >= CONFIG_CHECK_EVERY:
            _watch.checked = time.monotonic()
            _runtime = _reloaded(_runtime)
        return _runtime


def _reloaded(rt: Runtime) -> Runtime:
    """``rt`` on the config file as it is now, if that changed and loads; else ``rt``.

    Connectors of vendors whose settings did not change carry over (their connections and
    sessions); replaced ones are closed once the tasks that began with them are done (a
    run's lock time). Tasks running keep the runtime they began with."""
    assert _watch.file is not None
    config = _watch.file.changed(rt.config)
    if config is None:
        return rt
    fresh = build_runtime(rt.settings, config, rt.redis)
    replaced = rt.hand_over(fresh)
    if replaced:
        timer = threading.Timer(close_after(rt, replaced), _close, [replaced])
        timer.daemon = True
        timer.start()
    configure_logging(_watch.file.secrets)  # every config's: old lines may quote old ones
    log_event(log, "config reloaded", file=config.file, vendors=len(config.vendors))
    return fresh


def close_after(rt: Runtime, replaced: list[Connector]) -> float:
    """Seconds to keep ``replaced`` open: a task that began with one may use it for as
    long as a run can last (a PortaBilling op at ``timeout: 300`` for over an hour);
    closed earlier, its next request fails as a closed client, after the vendor may have
    taken the first."""
    return max(RELOAD_CLOSE_AFTER, *(hold_seconds(rt, c.instance) + 1.0 for c in replaced))


def _close(connectors: list[Connector]) -> None:
    for connector in connectors:
        with contextlib.suppress(Exception):
            connector.close()


#: seconds a replaced connector is kept open after a reload at least; longer when a run
#: with it can last longer (:func:`worker.timing.hold_seconds`), so the tasks that began
#: with it finish first
RELOAD_CLOSE_AFTER = 600.0
