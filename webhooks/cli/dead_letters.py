"""``switchboard dlq``: dead letters straight from Redis (the web may be down): list, show,
stats, replay (one by one, or in bulk with a progress bar), cancel, discard, audit."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from webhooks.cli.base import (
    echo,
    emit,
    main,
    ops_error,
    ops_service,
    run_ops,
    stamp,
    who,
)
from webhooks.ops import jobs
from worker.audit import AUDIT_ACTIONS
from worker.deadletter import CODES

if TYPE_CHECKING:
    from webhooks.ops.service import Ops


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
    page = run_ops(lambda: ops_service().list(limit=limit, cursor=cursor, **filters))
    data = {"items": page.items, "next_cursor": page.next_cursor}
    lines = [
        f"{i['id']}  {stamp(i['died_at'])}  {i['code']:<14} {i['vendor']}.{i['op']} "
        f"target={i['target'] or '-'} rule={i['rule']} event={i['source']}/{i['event_id']}"
        f"{'  (replaying)' if i['replaying'] else ''}\n    {_short(i['message'])}"
        for i in page.items
    ]
    if page.next_cursor:
        lines.append(f"more: --cursor {page.next_cursor}")
    emit(data, as_json, "\n".join(lines) or "no dead letters")


def _short(message: str | None, width: int = 100) -> str:
    text = " ".join((message or "-").split())
    return text if len(text) <= width else text[: width - 1] + "…"


@dlq.command("stats")
@click.option("--json", "as_json", is_flag=True)
def dlq_stats(as_json: bool) -> None:
    """How many dead letters there are, per vendor and per code."""
    counts = run_ops(lambda: ops_service().counts())
    lines = [f"{counts['total']} dead letter(s)"]
    for key in ("vendor", "code"):
        for name, n in sorted(counts[key].items()):
            lines.append(f"  {key} {name}: {n}")
    emit(counts, as_json, "\n".join(lines))


@dlq.command("show")
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON (GET /ops/dead-letters/ID)")
def dlq_show(entry_id: str, as_json: bool) -> None:
    """One dead letter in full: why it failed, every attempt, the task and its event."""
    entry = run_ops(lambda: ops_service().entry(entry_id))
    emit(entry, as_json, _describe_entry(entry))


def _describe_entry(e: dict[str, Any]) -> str:
    lines = [
        f"dead letter {e['id']}: {e['code']} — {e['message']}",
        f"  vendor {e['vendor']}.{e['op']} target={e['target'] or '-'}",
        f"  rule {e['rule']} (action {e['task']['action']}), "
        f"event {e['source']}/{e['event_id']} ({e['event_type']})",
        f"  died {stamp(e['died_at'])} (first {stamp(e['first_died_at'])}), "
        f"replays {e['replays']}{', replay in progress' if e['replaying'] else ''}",
        "  attempts:",
    ]
    for n, a in enumerate(e["attempts"], 1):
        lines.append(
            f"    {n}. {stamp(a.get('at'))}  {a.get('code') or a.get('outcome')}"
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
    ops = ops_service(replays=True)
    if entry_ids:
        run_ops(lambda: _replay_ids(ops, entry_ids, as_json))
    else:
        run_ops(lambda: _replay_bulk(ops, filters, as_json))


_REPLAY_WORDS = {
    "queued": "queued",
    "already_replaying": "already being replayed (not queued again)",
}


def _replay_ids(ops: Ops, entry_ids: tuple[str, ...], as_json: bool) -> None:
    from webhooks.ops.service import OpsError
    from worker.replication import NotReplicated

    results, failed = [], False
    for entry_id in entry_ids:
        try:
            result = ops.replay(entry_id, who=who())
        except (OpsError, NotReplicated) as exc:
            failed = True
            result = {"status": "error", "id": entry_id, "message": ops_error(exc)}
            echo(f"Error: {ops_error(exc)}", err=True)
        else:
            result = {**result, "id": entry_id}
        results.append(result)
    human = "\n".join(
        f"{r['id']}: {_REPLAY_WORDS[r['status']]}" for r in results if r["status"] != "error"
    )
    if as_json:
        emit(results, True, "")
    elif human:
        echo(human)
    if failed:
        sys.exit(1)


def _replay_bulk(ops: Ops, filters: dict[str, Any], as_json: bool) -> None:
    job = ops.start_bulk_replay(filters, who=who())
    with _cancel_on_ctrl_c() as asked:
        try:
            job = _run_bulk(ops, job, as_json, asked)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, the job cancelled
            job = run_ops(lambda: ops.cancel_bulk_replay(job["id"], who=who()))
    if job["state"] != "done":  # cancelled: by this Ctrl-C, or by someone else
        by = f" by {job['cancelled_by']}" if job.get("cancelled_by") else ""
        echo(
            f"\njob {job['id']} cancelled{by} after {job['done']} of {job['total']}; "
            "entries not reached are left as they are",
            err=True,
        )
        sys.exit(130 if asked.is_set() else 1)
    emit(
        job,
        as_json,
        f"job {job['id']}: {job['done']} of {job['total']} done — {job['queued']} queued, "
        f"{job['already_replaying']} already being replayed, {job.get('gone', 0)} gone "
        f"since the list was made, {job['failed']} failed",
    )
    for error in job["errors"]:
        echo(f"Error: {error['id']}: {error['message']}", err=True)
    if job["failed"]:
        sys.exit(1)


@contextlib.contextmanager
def _cancel_on_ctrl_c() -> Iterator[threading.Event]:
    """The first Ctrl-C cancels the job after the entry at hand (replayed and counted:
    raising mid-entry left one replayed but not counted); a second one stops at once.
    The Event says whether it was asked. The job is cancelled from :func:`_run_bulk`'s
    progress call, between entries, never from inside the handler."""
    asked = threading.Event()

    def on_sigint(_signum: int, _frame: Any) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_bulk(
    ops: Ops, job: dict[str, Any], as_json: bool, asked: threading.Event
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    def stop_if_asked() -> None:
        if asked.is_set() and not jobs.cancel_requested(ops.redis, job["id"]):
            ops.cancel_bulk_replay(job["id"], who=who())

    if as_json:
        return run_ops(lambda: ops.run_bulk_replay(job["id"], lambda _: stop_if_asked()))  # type: ignore[no-any-return]
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
                skipped=state["already_replaying"] + state.get("gone", 0),
            )
            stop_if_asked()

        return run_ops(lambda: ops.run_bulk_replay(job["id"], progress))  # type: ignore[no-any-return]


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@dlq.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="the job as JSON (GET /ops/jobs/<id>)")
def dlq_cancel(job_id: str, as_json: bool) -> None:
    """Stop a bulk replay job: a running one stops after the entry at hand; entries not
    reached stay as they are. Exit 1 on an unknown job or one that already ended."""
    job = run_ops(lambda: ops_service().cancel_bulk_replay(job_id, who=who()))
    emit(job, as_json, f"job {job['id']}: {job['state']} after {job['done']} of {job['total']}")


@dlq.command("discard")
@click.argument("entry_ids", nargs=-1, required=True)
def dlq_discard(entry_ids: tuple[str, ...]) -> None:
    """Drop dead letters (each recorded in the audit log). Exit 1 on an unknown id."""
    from webhooks.ops.service import OpsError
    from worker.replication import NotReplicated

    ops = ops_service()

    def discard_each() -> bool:
        failed = False
        for entry_id in entry_ids:
            try:
                ops.discard(entry_id, who=who())
                echo(f"{entry_id}: discarded")
            except (OpsError, NotReplicated) as exc:
                failed = True
                echo(f"Error: {ops_error(exc)}", err=True)
        return failed

    if run_ops(discard_each):
        sys.exit(1)


@dlq.command("audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--action", type=click.Choice(AUDIT_ACTIONS))
@click.option("--id", "entry_id", help="only this entry's (or source/event's) records")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON items (GET /ops/audit)")
def dlq_audit(limit: int, action: str | None, entry_id: str | None, as_json: bool) -> None:
    """The audit log of replays and discards, newest first."""
    items = run_ops(lambda: ops_service().audit(limit=limit, action=action, entry_id=entry_id))
    lines = [f"{stamp(r['at'])}  {r['action']:<12} {r['id']}  by {r['who']}" for r in items]
    emit({"items": items}, as_json, "\n".join(lines) or "no audit records")
