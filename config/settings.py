"""Settings from the environment (DESIGN §2), read once into a frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG = "config/switchboard.yaml"


@dataclass(frozen=True)
class Settings:
    config_path: Path
    redis_url: str | None  # None: the embedded Redis (see config.embedded_redis)
    ops_token: str | None
    port: int = 8000
    event_ttl_days: float = 7
    max_body: int = 1024 * 1024
    var_dir: Path = Path("var")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            config_path=Path(env.get("SWITCHBOARD_CONFIG") or DEFAULT_CONFIG),
            redis_url=env.get("REDIS_URL") or None,
            ops_token=env.get("SWITCHBOARD_OPS_TOKEN") or None,
            port=int(env.get("PORT") or 8000),
            event_ttl_days=float(env.get("SWITCHBOARD_EVENT_TTL_DAYS") or 7),
            max_body=int(env.get("SWITCHBOARD_MAX_BODY") or 1024 * 1024),
            var_dir=Path(env.get("SWITCHBOARD_VAR_DIR") or "var"),
        )

    @property
    def event_ttl_seconds(self) -> int:
        return int(self.event_ttl_days * 86400)
