"""What every ``switchboard`` command shares: the click group, reading the environment
and the config (a bad one ends the command, exit 1), terminal-safe output, and the ops
service on the configured Redis with its errors as messages."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from config.errors import ConfigError
from config.loader import load_config
from config.model import Config
from config.settings import EnvError, Settings

if TYPE_CHECKING:
    from webhooks.ops.service import Ops


@click.group()
def main() -> None:
    """Switchboard: signed webhooks in, ordered and retried vendor updates out."""


def settings_or_exit() -> Settings:
    """The settings from the environment; a bad variable ends the command (exit 1)."""
    try:
        return Settings.from_env()
    except EnvError as exc:
        raise click.ClickException("bad environment: " + "; ".join(exc.problems)) from None


def load_or_exit(path: str | None = None) -> Config:
    settings = settings_or_exit()
    try:
        return load_config(path or settings.config_path)
    except ConfigError as exc:
        echo(str(exc), err=True)
        echo(f"{len(exc.problems)} problem(s) found", err=True)
        sys.exit(1)


def load_or_empty(path: str | Path) -> Config:
    """The config, or (with a warning) an empty one when it does not load: dead letters
    and events are in Redis, and a broken rule is when they are most needed."""
    try:
        return load_config(path)
    except ConfigError as exc:
        echo(f"warning: {exc.problems[0]} (and {len(exc.problems) - 1} more); "
              "showing what is in Redis without the config", err=True)  # fmt: skip
        return Config(file=str(path), sources={}, vendors={}, rules=())


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def terminal_safe(text: str) -> str:
    """``text`` with control characters written out (``\\x1b``): a vendor's answer or a
    stored target must not move the cursor, clear the screen or set the clipboard."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


def echo(text: str, err: bool = False) -> None:
    """Every line the CLI prints goes through here (JSON is escaped by json.dumps)."""
    click.echo(terminal_safe(text), err=err)


def emit(data: Any, as_json: bool, human: str) -> None:
    echo(json.dumps(data, indent=2, default=str) if as_json else human)


def ops_service(replays: bool = False) -> Ops:
    """The ops service on the configured Redis. Only a replay maps with the rules: the
    other commands read Redis, and work on while the config file is broken (a warning)."""
    from config.embedded_redis import NoRedis, resolve_redis_url
    from webhooks.ops.service import Ops
    from webhooks.rules import RuleSet
    from worker.redact import Redactor
    from worker.runtime import connect

    settings = settings_or_exit()
    config = load_or_exit() if replays else load_or_empty(settings.config_path)
    try:  # ops commands read what is there: they never start a Redis of their own
        url = resolve_redis_url(settings, start_if_missing=False)
    except NoRedis as exc:
        fail(str(exc))
    return Ops(
        connect(url),
        RuleSet(config),
        Redactor(config.secrets),
        settings.event_ttl_seconds,
        settings.min_replicas,
        settings.replica_timeout,
    )


def who() -> str:
    """``cli:<user>`` for the audit log: $USER, else the account (containers and cron often
    have no $USER)."""
    name = os.environ.get("USER") or os.environ.get("USERNAME")
    if not name:
        with contextlib.suppress(Exception):  # no passwd entry for this uid
            name = getpass.getuser()
    return f"cli:{name or 'unknown'}"


def fail(message: str) -> NoReturn:
    echo(f"Error: {message}", err=True)
    sys.exit(1)


def run_ops(call: Any) -> Any:
    """Run an ops call; its NotFound / Conflict / NotReplicated become a message and
    exit code 1."""
    import redis as redis_lib

    from webhooks.ops.service import OpsError
    from worker.replication import NotReplicated

    try:
        return call()
    except OpsError as exc:
        fail(str(exc))
    except NotReplicated as exc:
        fail(ops_error(exc))
    except redis_lib.RedisError as exc:
        fail(f"Redis is unreachable ({type(exc).__name__}); is REDIS_URL right?")


def ops_error(exc: Exception) -> str:
    """An ops call's error for the terminal; one not confirmed by replicas was done on the
    master, and doing it again is safe, so the line says to."""
    from worker.replication import NotReplicated

    return f"{exc}; run it again" if isinstance(exc, NotReplicated) else str(exc)


def stamp(value: float | None) -> str:
    from datetime import UTC, datetime

    if value is None:
        return "-"
    try:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):  # not a time datetime can show
        return str(value)
