"""Settings from the environment (DESIGN §2), read once into a frozen dataclass.

Every variable is checked as it is read (:mod:`config.environment`): a bad value stops
the start with a message naming it, e.g. ``PORT must be a whole number from 1 to 65535``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from config.environment import EnvError, Reader
from config.redis_url import FORMS, redis_url_problem

DEFAULT_CONFIG = "config/switchboard.yaml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

__all__ = ["DEFAULT_CONFIG", "EnvError", "Settings"]


@dataclass(frozen=True)
class Settings:
    config_path: Path
    redis_url: str | None  # None: the embedded Redis (see config.embedded_redis)
    ops_token: str | None
    port: int = 8000
    #: the web's bind address: an IP address (0.0.0.0 or :: for every interface) or a name
    host: str = "127.0.0.1"
    event_ttl_days: float = 7
    max_body: int = 1024 * 1024
    var_dir: Path = Path("var")
    #: how long a running task's lease lasts (its vendor timeout is far below it)
    run_lease: float = 120.0
    #: how long a published task may wait in the Celery queue before it is published again
    queue_lease: float = 3600.0
    #: most deliveries the relay puts in one Celery message
    batch_max: int = 20
    #: a worker silent this long is gone: what it had reserved is due again
    worker_dead_after: float = 30.0
    sandbox_port: int = 8100
    #: replicas that must have an event before ingest answers 2xx (Redis WAIT); 0: none
    min_replicas: int = 0
    #: how long ingest waits for them before answering 503
    replica_timeout: float = 1.0
    #: longest silence while a webhook's body arrives before it is answered 408: a sender
    #: that stalls mid-body must not hold one of the web's few threads for good
    body_timeout: float = 10.0
    #: SWITCHBOARD_DEMO=1 (``switchboard up`` sets it): web may serve signing secrets that
    #: are the config's own ``${VAR:-default}`` (config.model.demo_secrets)
    demo: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; :class:`EnvError` lists every variable with a bad value."""
        read = Reader(env)
        settings = cls(
            config_path=Path(read.text("SWITCHBOARD_CONFIG", DEFAULT_CONFIG) or DEFAULT_CONFIG),
            redis_url=read.text("REDIS_URL"),
            ops_token=read.text("SWITCHBOARD_OPS_TOKEN", strip=True),
            port=read.integer("PORT", 8000, minimum=1, maximum=65535),
            host=(read.text("SWITCHBOARD_HOST", strip=True) or "127.0.0.1").strip("[]"),
            event_ttl_days=read.number("SWITCHBOARD_EVENT_TTL_DAYS", 7),
            max_body=read.integer("SWITCHBOARD_MAX_BODY", 1024 * 1024, minimum=1),
            var_dir=Path(read.text("SWITCHBOARD_VAR_DIR", "var") or "var"),
            run_lease=read.number("SWITCHBOARD_RUN_LEASE", 120),
            queue_lease=read.number("SWITCHBOARD_QUEUE_LEASE", 3600),
            batch_max=read.integer("SWITCHBOARD_BATCH_MAX", 20, minimum=1, maximum=1000),
            worker_dead_after=read.number("SWITCHBOARD_WORKER_DEAD_AFTER", 30),
            sandbox_port=read.integer("SWITCHBOARD_SANDBOX_PORT", 8100, minimum=1, maximum=65535),
            min_replicas=read.integer("SWITCHBOARD_MIN_REPLICAS", 0, minimum=0, maximum=100),
            replica_timeout=read.number("SWITCHBOARD_REPLICA_TIMEOUT", 1.0),
            body_timeout=read.number("SWITCHBOARD_BODY_TIMEOUT", 10.0),
            demo=read.choice("SWITCHBOARD_DEMO", "0", ("0", "1")) == "1",
        )
        if settings.redis_url and (problem := redis_url_problem(settings.redis_url)):
            read.note(f"REDIS_URL must be {FORMS}: {problem}")
        if not is_bind_host(settings.host):
            read.note(
                f"SWITCHBOARD_HOST must be an IP address (0.0.0.0, ::, 127.0.0.1) or a host "
                f"name, not {settings.host!r}"
            )
        if settings.event_ttl_seconds < 1:
            read.note("SWITCHBOARD_EVENT_TTL_DAYS must make at least one second")
        read.choice("SWITCHBOARD_LOG_LEVEL", "INFO", LOG_LEVELS)  # checked here, used by logs
        read.choice("SWITCHBOARD_LOG_FORMAT", "json", ("json", "text"))
        read.done()
        return settings

    @property
    def event_ttl_seconds(self) -> int:
        return int(self.event_ttl_days * 86400)


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def is_bind_host(host: str) -> bool:
    """An IP address (v4 or v6) or a host name a server can be told to bind."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and _HOST_NAME.fullmatch(host) is not None
    return True
