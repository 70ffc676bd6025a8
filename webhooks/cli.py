"""The ``switchboard`` command (click): run the parts, check config, dry-run rules, ops.

Exit codes: 0 success, 1 a failure the command reports (config errors, not found),
2 usage errors (click's own).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from config.errors import ConfigError
from config.loader import Config, load_config
from config.settings import Settings


def _settings() -> Settings:
    return Settings.from_env()


def _load(path: str | None = None) -> Config:
    settings = _settings()
    try:
        return load_config(path or settings.config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        click.echo(f"{len(exc.problems)} problem(s) found", err=True)
        sys.exit(1)


def _emit(data: Any, as_json: bool, human: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human)


@click.group()
def main() -> None:
    """Switchboard: signed webhooks in, ordered and retried vendor updates out."""


# -- running ------------------------------------------------------------------------------
@main.command()
def up() -> None:
    """Run everything: Redis (embedded unless REDIS_URL), sandbox, web, worker."""
    from webhooks.supervisor import Supervisor

    sys.exit(Supervisor(_settings(), _load()).run())


@main.command()
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes")
def web(workers: int) -> None:
    """Run the web service under gunicorn on $PORT."""
    from webhooks.supervisor import web_command

    _load()  # fail early and clearly on a bad config
    command = web_command(_settings().port, workers)
    os.execvp(command[0], command)


@main.command()
@click.option("--concurrency", "-c", default=8, show_default=True)
@click.option("--name", default="worker", show_default=True)
def worker(concurrency: int, name: str) -> None:
    """Run a Celery worker (same as `celery -A worker worker --pool threads`)."""
    from webhooks.supervisor import worker_command

    _load()
    command = worker_command(concurrency, name)
    os.execvp(command[0], command)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True)
def sandbox(host: str, port: int) -> None:
    """Run the vendor simulators (all of them, one server, /<kind> each)."""
    from sandbox.server import SIMULATORS, serve

    server = serve(host, port)
    click.echo(f"sandbox on http://{host}:{port}/ ({', '.join(sorted(SIMULATORS))})")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


# -- config and rules ---------------------------------------------------------------------
@main.group("config")
def config_group() -> None:
    """Configuration commands."""


@config_group.command("check")
@click.argument("path", required=False)
def config_check(path: str | None) -> None:
    """Validate the config file; lists every problem with its YAML path."""
    config = _load(path)
    click.echo(
        f"{config.file}: OK ({len(config.sources)} sources, {len(config.vendors)} "
        f"vendors, {len(config.rules)} rules)"
    )


@main.group()
def rules() -> None:
    """Rule commands."""


@rules.command("test")
@click.argument("source")
@click.argument("event_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--header", "-H", "headers", multiple=True, help="NAME:VALUE a header the source reads"
)
@click.option("--json", "as_json", is_flag=True)
def rules_test(source: str, event_file: str, headers: tuple[str, ...], as_json: bool) -> None:
    """Dry run: which rules match EVENT_FILE from SOURCE and the tasks they render."""
    from webhooks.errors import ApiError
    from webhooks.rules import RuleSet
    from webhooks.sources import SOURCE_KINDS
    from webhooks.sources.base import InboundRequest

    config = _load()
    if source not in config.sources:
        raise click.ClickException(f"no source named {source!r} in {config.file}")
    spec = config.sources[source]
    verifier = SOURCE_KINDS[spec.kind](source, spec.settings)
    body = Path(event_file).read_bytes()
    try:
        events = verifier.parse(
            InboundRequest("POST", "", _dry_run_headers(headers), body, time.time())
        )
    except ApiError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    ruleset = RuleSet(config)
    out = []
    for event in events:
        for match in ruleset.map_event(event):
            out.append(
                {
                    "event_id": event.id,
                    "event_type": event.type,
                    "rule": match.rule,
                    "tasks": [t.to_dict() for t in match.tasks],
                }
            )
    _emit(out, as_json, _describe_matches(out))


def _dry_run_headers(given: tuple[str, ...]) -> dict[str, str]:
    """Headers for a dry run: placeholders for ids carried in headers, then ``--header``."""
    headers = {"webhook-id": "dry-run", "webhook-timestamp": str(int(time.time()))}
    for item in given:
        name, sep, value = item.partition(":")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME:VALUE", param_hint="--header")
        headers[name.strip().lower()] = value.strip()
    return headers


def _describe_matches(matches: list[dict[str, Any]]) -> str:
    if not matches:
        return "no rule matched"
    lines = []
    for m in matches:
        lines.append(f"rule {m['rule']} matched {m['event_type']} {m['event_id']}")
        for t in m["tasks"]:
            if t["mapping_error"]:
                lines.append(f"  {t['vendor']}.{t['op']}: MAPPING ERROR {t['mapping_error']}")
            else:
                lines.append(
                    f"  {t['vendor']}.{t['op']} target={t['target']} "
                    f"fields={json.dumps(t['fields'])}"
                )
    return "\n".join(lines)


# -- dead letters and events (talk to Redis directly: work when the web is down) -----------
def _dead_letters() -> Any:
    from config.embedded_redis import resolve_redis_url
    from worker.deadletter import DeadLetters
    from worker.redact import Redactor
    from worker.runtime import connect

    settings = _settings()
    return DeadLetters(
        connect(resolve_redis_url(settings)), Redactor(()), settings.event_ttl_seconds
    )


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, discard."""


@dlq.command("list")
@click.option("--vendor")
@click.option("--rule")
@click.option("--source")
@click.option("--code")
@click.option("--limit", default=50, show_default=True)
@click.option("--cursor")
@click.option("--json", "as_json", is_flag=True)
def dlq_list(
    vendor: str | None,
    rule: str | None,
    source: str | None,
    code: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Dead letters, newest first (the same items as GET /ops/dead-letters)."""
    page = _dead_letters().list(
        limit=limit, cursor=cursor, vendor=vendor, rule=rule, source=source, code=code
    )
    data = {"items": page.items, "next_cursor": page.next_cursor}
    lines = [
        f"{i['id']}  {i['code']:<15} {i['vendor']}.{i['op']} target={i['target']} "
        f"rule={i['rule']} event={i['source']}/{i['event_id']}"
        for i in page.items
    ]
    if page.next_cursor:
        lines.append(f"more: --cursor {page.next_cursor}")
    _emit(data, as_json, "\n".join(lines) or "no dead letters")


@dlq.command("show")
@click.argument("entry_id")
def dlq_show(entry_id: str) -> None:
    """One dead letter in full (JSON)."""
    entry = _dead_letters().get(entry_id)
    if entry is None:
        raise click.ClickException(f"no dead letter {entry_id}")
    click.echo(json.dumps(entry, indent=2, default=str))


@dlq.command("replay")
@click.argument("entry_id")
def dlq_replay(entry_id: str) -> None:
    """Queue a dead letter's task again (once, however often you press it)."""
    result = _dead_letters().replay(entry_id)
    if result is None:
        raise click.ClickException(f"no dead letter {entry_id}")
    click.echo("queued" if result else "already being replayed")


@dlq.command("discard")
@click.argument("entry_id")
def dlq_discard(entry_id: str) -> None:
    """Drop a dead letter (recorded in the audit log)."""
    if not _dead_letters().discard(entry_id, who=f"cli:{os.environ.get('USER', 'unknown')}"):
        raise click.ClickException(f"no dead letter {entry_id}")
    click.echo("discarded")


if __name__ == "__main__":
    main()
