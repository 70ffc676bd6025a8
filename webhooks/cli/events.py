"""``switchboard events``: a stored event with its tasks' states, and replaying it through
the current rules."""

from __future__ import annotations

import click

from webhooks.cli.base import emit, main, ops_service, run_ops, stamp, who


@main.group()
def events() -> None:
    """Stored events: show one with its tasks, replay one through the current rules."""


@events.command("show")
@click.argument("source")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="the API's JSON (GET /ops/events/...)")
def events_show(source: str, event_id: str, as_json: bool) -> None:
    """The stored event SOURCE/EVENT_ID, its tasks and each task's state."""
    data = run_ops(lambda: ops_service().event(source, event_id))
    ev = data["event"]
    lines = [
        f"event {ev['source']}/{ev['id']} ({ev['type']}) occurred {stamp(ev['occurred_at'])}, "
        f"received {stamp(ev['received_at'])}",
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
                f"    last attempt {stamp(last.get('at'))}: "
                f"{last.get('code') or last.get('outcome')} status={last.get('status') or '-'}"
                f"  {last.get('message') or ''}".rstrip()
            )
            if t["state"] == "retrying" and last.get("retry_at"):
                lines.append(f"    next attempt {stamp(last['retry_at'])}")
    emit(data, as_json, "\n".join(lines))


@events.command("replay")
@click.argument("source")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True)
def events_replay(source: str, event_id: str, as_json: bool) -> None:
    """Map SOURCE/EVENT_ID again with the current rules and queue it (no de-duplication)."""
    result = run_ops(lambda: ops_service(replays=True).replay_event(source, event_id, who=who()))
    emit(result, as_json, f"{result['status']}: {result['tasks']} task(s)")
