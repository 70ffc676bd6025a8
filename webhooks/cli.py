"""The ``switchboard`` command (click): run the parts, check config, dry-run rules, ops.

Exit codes: 0 success, 1 a failure the command reports (config errors, not found),
2 usage errors (click's own).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from config.errors import ConfigError
from config.loader import Config, load_config
from config.settings import EnvError, Settings
from worker.deadletter import AUDIT_ACTIONS, CODES


def _settings() -> Settings:
    """The settings from the environment; a bad variable ends the command (exit 1)."""
    try:
        return Settings.from_env()
    except EnvError as exc:
        raise click.ClickException("bad environment: " + "; ".join(exc.problems)) from None


def _load(path: str | None = None) -> Config:
    settings = _settings()
    try:
        return load_config(path or settings.config_path)
    except ConfigError as exc:
        _echo(str(exc), err=True)
        _echo(f"{len(exc.problems)} problem(s) found", err=True)
        sys.exit(1)


def _load_or_none(path: str | Path) -> Config:
    """The config, or (with a warning) an empty one when it does not load: dead letters
    and events are in Redis, and a broken rule is when they are most needed."""
    try:
        return load_config(path)
    except ConfigError as exc:
        _echo(f"warning: {exc.problems[0]} (and {len(exc.problems) - 1} more); "
              "showing what is in Redis without the config", err=True)  # fmt: skip
        return Config(file=str(path), sources={}, vendors={}, rules=())


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` with control characters written out (``\\x1b``): a vendor's answer or a
    stored target must not move the cursor, clear the screen or set the clipboard."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


def _echo(text: str, err: bool = False) -> None:
    """Every line the CLI prints goes through here (JSON is escaped by json.dumps)."""
    click.echo(terminal_safe(text), err=err)


def _emit(data: Any, as_json: bool, human: str) -> None:
    _echo(json.dumps(data, indent=2, default=str) if as_json else human)


@click.group()
def main() -> None:
    """Switchboard: signed webhooks in, ordered and retried vendor updates out."""


# -- running ------------------------------------------------------------------------------
@main.command()
def up() -> None:
    """Run everything: Redis (embedded unless REDIS_URL), sandbox, web, worker.

    Ports: PORT (8000) for the web, SWITCHBOARD_SANDBOX_PORT (8100) for the sandbox; state
    in ./var (one `up` per directory).
    """
    from webhooks.supervisor import Supervisor

    settings = _settings()
    # the demo config's vendors point at ${SANDBOX_URL:-http://127.0.0.1:8100}: another
    # sandbox port must move them too, or tasks retry against a port nobody serves
    os.environ.setdefault("SANDBOX_URL", f"http://127.0.0.1:{settings.sandbox_port}")
    sys.exit(Supervisor(settings, _load()).run())


@main.command()
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn worker processes",
)
def web(workers: int) -> None:
    """Run the web service under gunicorn on $PORT."""
    from webhooks.supervisor import web_command

    _load()  # fail early and clearly on a bad config
    _share_redis()
    command = web_command(_settings().port, workers)
    os.execvp(command[0], command)


def _share_redis() -> None:
    """Settle the Redis URL once, here, for every process the command starts (gunicorn's
    workers): with REDIS_URL unset, they all use the one embedded Redis found or started
    now."""
    from config.embedded_redis import resolve_redis_url

    os.environ["REDIS_URL"] = resolve_redis_url(_settings())


@main.command()
@click.option("--concurrency", "-c", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option("--name", default="worker", show_default=True)
def worker(concurrency: int, name: str) -> None:
    """Run a Celery worker (same as `celery -A worker worker --pool threads`)."""
    from webhooks.supervisor import worker_command

    _load()  # also checks the environment: fail here, clearly, not in the worker
    _share_redis()
    command = worker_command(concurrency, name)
    os.execvp(command[0], command)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=click.IntRange(1, 65535))
def sandbox(host: str, port: int) -> None:
    """Run the vendor simulators (all of them, one server, /<kind> each)."""
    from sandbox.server import SIMULATORS, serve_forever

    _echo(f"sandbox on http://{host}:{port}/ ({', '.join(sorted(SIMULATORS))})")
    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(host, port)


# -- config and rules ---------------------------------------------------------------------
@main.group("config")
def config_group() -> None:
    """Configuration commands."""


@config_group.command("check")
@click.argument("path", required=False)
def config_check(path: str | None) -> None:
    """Validate the config file; lists every problem with its YAML path."""
    config = _load(path)
    _echo(
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
    _emit(out, as_json, _describe_matches(out))
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


# -- dead letters and events (talk to Redis directly: work when the web is down) -----------
def _ops(replays: bool = False) -> Any:
    """The ops service on the configured Redis. Only a replay maps with the rules: the
    other commands read Redis, and work on while the config file is broken (a warning)."""
    from config.embedded_redis import NoRedis, resolve_redis_url
    from webhooks.ops.service import Ops
    from webhooks.rules import RuleSet
    from worker.redact import Redactor
    from worker.runtime import connect

    settings = _settings()
    config = _load() if replays else _load_or_none(settings.config_path)
    try:  # ops commands read what is there: they never start a Redis of their own
        url = resolve_redis_url(settings, start_if_missing=False)
    except NoRedis as exc:
        _fail(str(exc))
    return Ops(
        connect(url),
        RuleSet(config),
        Redactor(config.secrets),
        settings.event_ttl_seconds,
        settings.min_replicas,
        settings.replica_timeout,
    )


def _who() -> str:
    """``cli:<user>`` for the audit log: $USER, else the account (containers and cron often
    have no $USER)."""
    name = os.environ.get("USER") or os.environ.get("USERNAME")
    if not name:
        with contextlib.suppress(Exception):  # no passwd entry for this uid
            name = getpass.getuser()
    return f"cli:{name or 'unknown'}"


def _fail(message: str) -> None:
    _echo(f"Error: {message}", err=True)
    sys.exit(1)


def _run(call: Any) -> Any:
    """Run an ops call; its NotFound / Conflict / NotReplicated become a message and
    exit code 1."""
    import redis as redis_lib

    from webhooks.ops.service import OpsError
    from worker.replication import NotReplicated

    try:
        return call()
    except OpsError as exc:
        _fail(str(exc))
    except NotReplicated as exc:
        _fail(_ops_error(exc))
    except redis_lib.RedisError as exc:
        _fail(f"Redis is unreachable ({type(exc).__name__}); is REDIS_URL right?")


def _time(value: str | None) -> float | None:
    if value is None:
        return None
    from marshmallow import ValidationError

    from webhooks.ops.schemas import Timestamp

    try:
        return float(Timestamp().deserialize(value))
    except ValidationError:
        raise click.BadParameter(f"{value!r}: not unix seconds or ISO 8601") from None


def _cursor(_ctx: Any, _param: Any, value: str | None) -> str | None:
    from worker.deadletter import parse_cursor

    if value is not None:
        try:
            parse_cursor(value)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
    return value


def _filters(**given: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in given.items() if v and k not in ("since", "until")}
    for key in ("since", "until"):
        if given.get(key):
            out[key] = _time(given[key])
    return out


def _stamp(value: float | None) -> str:
    from datetime import UTC, datetime

    if value is None:
        return "-"
    try:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):  # not a time datetime can show
        return str(value)


def filter_options(func: Any) -> Any:
    for name, kind, help_text in reversed(
        [
            ("--vendor", None, "vendor instance name"),
            ("--rule", None, "rule name"),
            ("--source", None, "source name"),
            ("--code", click.Choice(CODES), "dead-letter code"),
            ("--since", None, "died at or after (unix seconds or ISO 8601, UTC)"),
            ("--until", None, "died at or before (unix seconds or ISO 8601, UTC)"),
        ]
    ):
        func = click.option(name, type=kind, help=help_text)(func)
    return func


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, discard, stats, audit, cancel."""


@dlq.command("list")
@filter_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--cursor", callback=_cursor, help="next_cursor of the previous page")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON (items, next_cursor)")
def dlq_list(limit: int, cursor: str | None, as_json: bool, **given: str | None) -> None:
    """Dead letters, newest first (the same items as GET /ops/dead-letters)."""
    filters = _filters(**given)
    page = _run(lambda: _ops().list(limit=limit, cursor=cursor, **filters))
    data = {"items": page.items, "next_cursor": page.next_cursor}
    lines = [
        f"{i['id']}  {_stamp(i['died_at'])}  {i['code']:<14} {i['vendor']}.{i['op']} "
        f"target={i['target'] or '-'} rule={i['rule']} event={i['source']}/{i['event_id']}"
        f"{'  (replaying)' if i['replaying'] else ''}"
        for i in page.items
    ]
    if page.next_cursor:
        lines.append(f"more: --cursor {page.next_cursor}")
    _emit(data, as_json, "\n".join(lines) or "no dead letters")


@dlq.command("stats")
@click.option("--json", "as_json", is_flag=True)
def dlq_stats(as_json: bool) -> None:
    """How many dead letters there are, per vendor and per code."""
    counts = _run(lambda: _ops().counts())
    lines = [f"{counts['total']} dead letter(s)"]
    for key in ("vendor", "code"):
        for name, n in sorted(counts[key].items()):
            lines.append(f"  {key} {name}: {n}")
    _emit(counts, as_json, "\n".join(lines))


@dlq.command("show")
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON (GET /ops/dead-letters/ID)")
def dlq_show(entry_id: str, as_json: bool) -> None:
    """One dead letter in full: why it failed, every attempt, the task and its event."""
    entry = _run(lambda: _ops().entry(entry_id))
    _emit(entry, as_json, _describe_entry(entry))


def _describe_entry(e: dict[str, Any]) -> str:
    lines = [
        f"dead letter {e['id']}: {e['code']} — {e['message']}",
        f"  vendor {e['vendor']}.{e['op']} target={e['target'] or '-'}",
        f"  rule {e['rule']} (action {e['task']['action']}), "
        f"event {e['source']}/{e['event_id']} ({e['event_type']})",
        f"  died {_stamp(e['died_at'])} (first {_stamp(e['first_died_at'])}), "
        f"replays {e['replays']}{', replay in progress' if e['replaying'] else ''}",
        "  attempts:",
    ]
    for n, a in enumerate(e["attempts"], 1):
        lines.append(
            f"    {n}. {_stamp(a.get('at'))}  {a.get('code') or a.get('outcome')}"
            f"  status={a.get('status') or '-'}  {a.get('message') or ''}"
        )
        if a.get("excerpt"):
            lines.append(f"       vendor said: {a['excerpt'][:300]}")
    lines.append(f"  fields: {json.dumps(e['task']['fields'])}")
    if e["task"].get("mapping_error"):
        lines.append(f"  mapping error: {e['task']['mapping_error']}")
    if e.get("event") is None:
        lines.append("  (the event is no longer stored)")
    return "\n".join(lines)


@dlq.command("replay")
@click.argument("entry_ids", nargs=-1)
@filter_options
@click.option("--all", "replay_all", is_flag=True, help="replay every entry (no filter)")
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(
    entry_ids: tuple[str, ...], replay_all: bool, as_json: bool, **given: str | None
) -> None:
    """Replay ENTRY_IDS, or every entry matching the filter options (a progress bar).

    Idempotent: an entry already being replayed is not queued again. Exit 1 when an id
    is unknown or an entry cannot be replayed.
    """
    filters = _filters(**given)
    if entry_ids and (filters or replay_all):
        raise click.UsageError("give entry ids or filter options, not both")
    if not entry_ids and not filters and not replay_all:
        raise click.UsageError("give entry ids, filter options, or --all")
    ops = _ops(replays=True)
    if entry_ids:
        _run(lambda: _replay_ids(ops, entry_ids, as_json))
    else:
        _run(lambda: _replay_bulk(ops, filters, as_json))


_REPLAY_WORDS = {
    "queued": "queued",
    "already_replaying": "already being replayed (not queued again)",
}


def _ops_error(exc: Exception) -> str:
    """An ops call's error for the terminal; one not confirmed by replicas was done on the
    master, and doing it again is safe, so the line says to."""
    from worker.replication import NotReplicated

    return f"{exc}; run it again" if isinstance(exc, NotReplicated) else str(exc)


def _replay_ids(ops: Any, entry_ids: tuple[str, ...], as_json: bool) -> None:
    from webhooks.ops.service import OpsError
    from worker.replication import NotReplicated

    results, failed = [], False
    for entry_id in entry_ids:
        try:
            result = ops.replay(entry_id, who=_who())
        except (OpsError, NotReplicated) as exc:
            failed = True
            result = {"status": "error", "id": entry_id, "message": _ops_error(exc)}
            _echo(f"Error: {_ops_error(exc)}", err=True)
        else:
            result = {**result, "id": entry_id}
        results.append(result)
    human = "\n".join(
        f"{r['id']}: {_REPLAY_WORDS[r['status']]}" for r in results if r["status"] != "error"
    )
    if as_json:
        _emit(results, True, "")
    elif human:
        _echo(human)
    if failed:
        sys.exit(1)


def _replay_bulk(ops: Any, filters: dict[str, Any], as_json: bool) -> None:
    job = ops.start_bulk_replay(filters, who=_who())
    try:
        job = _run_bulk(ops, job, as_json)
    except KeyboardInterrupt:  # the operator wants it stopped: cancelled, not resumed later
        job = _run(lambda: ops.cancel_bulk_replay(job["id"], who=_who()))
        _echo(
            f"\njob {job['id']} cancelled after {job['done']} of {job['total']}; "
            "entries not reached are left as they are",
            err=True,
        )
        sys.exit(130)
    _emit(
        job,
        as_json,
        f"job {job['id']}: {job['done']} of {job['total']} done — {job['queued']} queued, "
        f"{job['already_replaying']} already being replayed, {job['failed']} failed",
    )
    for error in job["errors"]:
        _echo(f"Error: {error['id']}: {error['message']}", err=True)
    if job["failed"]:
        sys.exit(1)


def _run_bulk(ops: Any, job: dict[str, Any], as_json: bool) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if as_json:
        return _run(lambda: ops.run_bulk_replay(job["id"]))  # type: ignore[no-any-return]
    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("queued {task.fields[queued]}, skipped {task.fields[skipped]}"),
        console=_console(),
    ) as bar:
        task = bar.add_task("replay", total=None, queued=0, skipped=0)

        def progress(state: dict[str, Any]) -> None:
            bar.update(
                task,
                total=state["total"],
                completed=state["done"],
                queued=state["queued"],
                skipped=state["already_replaying"],
            )

        return _run(lambda: ops.run_bulk_replay(job["id"], progress))  # type: ignore[no-any-return]


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@dlq.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="the job as JSON (GET /ops/jobs/<id>)")
def dlq_cancel(job_id: str, as_json: bool) -> None:
    """Stop a bulk replay job: a running one stops after the entry at hand; entries not
    reached stay as they are. Exit 1 on an unknown job or one that already ended."""
    job = _run(lambda: _ops().cancel_bulk_replay(job_id, who=_who()))
    _emit(job, as_json, f"job {job['id']}: {job['state']} after {job['done']} of {job['total']}")


@dlq.command("discard")
@click.argument("entry_ids", nargs=-1, required=True)
def dlq_discard(entry_ids: tuple[str, ...]) -> None:
    """Drop dead letters (each recorded in the audit log). Exit 1 on an unknown id."""
    from webhooks.ops.service import OpsError
    from worker.replication import NotReplicated

    ops = _ops()

    def discard_each() -> bool:
        failed = False
        for entry_id in entry_ids:
            try:
                ops.discard(entry_id, who=_who())
                _echo(f"{entry_id}: discarded")
            except (OpsError, NotReplicated) as exc:
                failed = True
                _echo(f"Error: {_ops_error(exc)}", err=True)
        return failed

    if _run(discard_each):
        sys.exit(1)


@dlq.command("audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--action", type=click.Choice(AUDIT_ACTIONS))
@click.option("--id", "entry_id", help="only this entry's (or source/event's) records")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON items (GET /ops/audit)")
def dlq_audit(limit: int, action: str | None, entry_id: str | None, as_json: bool) -> None:
    """The audit log of replays and discards, newest first."""
    items = _run(lambda: _ops().audit(limit=limit, action=action, entry_id=entry_id))
    lines = [f"{_stamp(r['at'])}  {r['action']:<12} {r['id']}  by {r['who']}" for r in items]
    _emit({"items": items}, as_json, "\n".join(lines) or "no audit records")


@main.group()
def events() -> None:
    """Stored events: show one with its tasks, replay one through the current rules."""


@events.command("show")
@click.argument("source")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON (GET /ops/events/...)")
def events_show(source: str, event_id: str, as_json: bool) -> None:
    """The stored event SOURCE/EVENT_ID, its tasks and each task's state."""
    data = _run(lambda: _ops().event(source, event_id))
    ev = data["event"]
    lines = [
        f"event {ev['source']}/{ev['id']} ({ev['type']}) occurred {_stamp(ev['occurred_at'])}, "
        f"received {_stamp(ev['received_at'])}",
        f"{len(data['tasks'])} task(s):" if data["tasks"] else "no tasks (no rule matched)",
    ]
    for t in data["tasks"]:
        dead = f"  dead letter {t['dead_letter']}" if t.get("dead_letter") else ""
        lines.append(
            f"  {t['id']}  {t['state']:<8} {t.get('rule', '-')}: {t.get('vendor', '-')}."
            f"{t.get('op', '-')} target={t.get('target') or '-'} "
            f"attempts={len(t.get('attempts') or [])}{dead}"
        )
        if t.get("attempts"):  # why it is retrying (or died), as `dlq show` says it
            last = t["attempts"][-1]
            lines.append(
                f"    last attempt {_stamp(last.get('at'))}: "
                f"{last.get('code') or last.get('outcome')} status={last.get('status') or '-'}"
                f"  {last.get('message') or ''}".rstrip()
            )
            if t["state"] == "retrying" and last.get("retry_at"):
                lines.append(f"    next attempt {_stamp(last['retry_at'])}")
    _emit(data, as_json, "\n".join(lines))


@events.command("replay")
@click.argument("source")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True)
def events_replay(source: str, event_id: str, as_json: bool) -> None:
    """Map SOURCE/EVENT_ID again with the current rules and queue it (no de-duplication)."""
    result = _run(lambda: _ops(replays=True).replay_event(source, event_id, who=_who()))
    _emit(result, as_json, f"{result['status']}: {result['tasks']} task(s)")


if __name__ == "__main__":
    main()
