"""Per-app state built by the factory: settings, config, sources, rules, and Redis access.

Redis is opened lazily on first use (one pool per app), so building an app connects to
nothing; ``get_state()`` is the only way views reach any of it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import redis as redis_lib
from flask import current_app

from config.model import Config
from config.settings import Settings
from webhooks.commit import GroupCommit
from webhooks.rules import RuleSet
from webhooks.sources import SOURCE_KINDS, Source
from worker.deadletter import DeadLetters
from worker.queue import Queue
from worker.redact import Redactor


@dataclass(frozen=True)
class Loaded:
    """One config as the web serves it: swapped whole on a reload, so a request that read
    it once (``AppState.loaded``) verifies and maps with the same one."""

    config: Config
    sources: dict[str, Source]
    rules: RuleSet
    at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, config: Config) -> Loaded:
        sources = {
            name: SOURCE_KINDS[s.kind](name, s.settings) for name, s in config.sources.items()
        }
        return cls(config, sources, RuleSet(config))


@dataclass
class AppState:
    settings: Settings
    loaded: Loaded
    redis_url: str | None = None
    #: the problems of the last config refused by a reload (webhooks.reload), [] if none
    refused: list[str] = field(default_factory=list)
    _redis: redis_lib.Redis | None = None
    _queue: Queue | None = None
    _commit: GroupCommit | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings, config: Config, redis_url: str | None = None) -> AppState:
        return cls(settings, Loaded.of(config), redis_url)

    def use_config(self, config: Config) -> None:
        """Serve ``config`` from now on (webhooks.reload): built whole, then swapped in one
        assignment (a request in flight finishes with the one it read)."""
        self.loaded = Loaded.of(config)

    @property
    def config(self) -> Config:
        return self.loaded.config

    @property
    def sources(self) -> dict[str, Source]:
        return self.loaded.sources

    @property
    def rules(self) -> RuleSet:
        return self.loaded.rules

    @property
    def redis(self) -> redis_lib.Redis:
        with self._lock:
            if self._redis is None:
                from config.embedded_redis import resolve_redis_url
                from worker.runtime import connect

                self._redis = connect(self.redis_url or resolve_redis_url(self.settings))
            return self._redis

    @property
    def queue(self) -> Queue:
        # one per app: building it registers (hashes) the Lua script, ~0.1 ms a request
        if self._queue is None:
            self._queue = Queue(self.redis, self.settings.event_ttl_seconds)
        return self._queue

    @property
    def commit(self) -> GroupCommit:
        """Ingest's writer: concurrent requests share one pipeline (webhooks.commit)."""
        if self._commit is None:
            self._commit = GroupCommit(
                self.queue,
                min_replicas=self.settings.min_replicas,
                replica_timeout=self.settings.replica_timeout,
            )
        return self._commit

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(
            self.redis, Redactor(self.config.secrets), self.settings.event_ttl_seconds
        )


def get_state() -> AppState:
    return current_app.extensions["switchboard"]  # type: ignore[no-any-return]
