"""The config as the rest of Switchboard sees it: frozen data the loader
(:mod:`config.loader`) builds from ``switchboard.yaml`` once it is valid."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.vendors.base import VendorInstance


@dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class ActionConfig:
    vendor: str
    op: str
    target: Any
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class RuleConfig:
    name: str
    source: str
    events: tuple[str, ...]
    condition: str | None
    actions: tuple[ActionConfig, ...]


@dataclass(frozen=True)
class Config:
    file: str
    sources: Mapping[str, SourceConfig]
    vendors: Mapping[str, VendorInstance]
    rules: tuple[RuleConfig, ...]
    secrets: frozenset[str] = field(default_factory=frozenset)
    #: (path, variable) of each signing secret taken from a ``${VAR:-default}`` because VAR
    #: is unset: whoever reads the config can sign webhooks (see :func:`demo_secrets`)
    defaulted_secrets: tuple[tuple[str, str], ...] = ()


def demo_secrets(config: Config) -> str | None:
    """Why ``web`` must not serve ``config`` as it is, or None: a source's signing secret is
    the config file's own default, known to everyone who can read it."""
    if not config.defaulted_secrets:
        return None
    named = ", ".join(f"{path} ({var} is not set)" for path, var in config.defaulted_secrets)
    return (
        f"{config.file}: {named}: the secret is the default written in the config, so "
        f"anyone who reads it can sign webhooks; set the variable (or SWITCHBOARD_DEMO=1 to "
        "run the demo as is)"
    )
