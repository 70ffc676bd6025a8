"""``switchboard config check`` and ``switchboard rules test``: a config and its rules
tried without queueing anything."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from config.model import Config
from webhooks.cli.base import echo, emit, load_or_exit, main


@main.group("config")
def config_group() -> None:
    """Configuration commands."""


@config_group.command("check")
@click.argument("path", required=False)
def config_check(path: str | None) -> None:
    """Validate the config file; lists every problem with its YAML path."""
    config = load_or_exit(path)
    echo(
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
    from webhooks.sources.common import check_occurred_at

    config = load_or_exit()
    if source not in config.sources:
        raise click.ClickException(f"no source named {source!r} in {config.file}")
    spec = config.sources[source]
    verifier = SOURCE_KINDS[spec.kind](source, spec.settings)
    body = Path(event_file).read_bytes()
    try:
        events = verifier.parse(
            InboundRequest("POST", "", _dry_run_headers(headers), body, time.time())
        )
        for event in events:
            check_occurred_at(event)
    except ApiError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    ruleset = RuleSet(config)
    out: list[dict[str, Any]] = []
    for event in events:
        for match in ruleset.map_event(event):
            out.append(
                {
                    "event_id": event.id,
                    "event_type": event.type,
                    "rule": match.rule,
                    "tasks": [_checked(config, t) for t in match.tasks],
                }
            )
    emit(out, as_json, _describe_matches(out))
    if any(t["mapping_error"] or t["invalid_fields"] for m in out for t in m["tasks"]):
        sys.exit(1)  # the worker would dead-letter a task: a failed dry run, for scripts


def _checked(config: Config, task: Any) -> dict[str, Any]:
    """The task as JSON, with ``invalid_fields`` set when the worker would refuse its target
    or fields (the vendor op's schema) and dead-letter it without a call."""
    from worker.vendors import connector_for
    from worker.vendors.errors import InvalidFields

    out: dict[str, Any] = {**task.to_dict(), "invalid_fields": None}
    if task.mapping_error or task.vendor not in config.vendors:
        return out
    connector = connector_for(config.vendors[task.vendor])
    try:
        connector.validate_target(task.target)
        connector.validate_fields(task.op, task.fields)
    except InvalidFields as exc:
        out["invalid_fields"] = str(exc)
    finally:
        connector.close()
    return out


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
            elif t["invalid_fields"]:
                lines.append(f"  {t['vendor']}.{t['op']}: INVALID FIELDS {t['invalid_fields']}")
            else:
                lines.append(
                    f"  {t['vendor']}.{t['op']} target={t['target']} "
                    f"fields={json.dumps(t['fields'])}"
                )
    return "\n".join(lines)
