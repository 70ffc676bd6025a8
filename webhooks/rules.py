"""The rules engine: rules compiled once at startup map an event to update tasks (pure).

A rule matches an event from its ``source`` whose type matches one of its ``events``
(exact or glob) and whose optional ``if`` test is true. Each action becomes one
:class:`~worker.model.UpdateTask`. A template that fails on this event (a missing key,
a type error) does not drop the event: the task carries ``mapping_error`` and becomes a
dead letter, so ops can fix the rule and replay the event. So does an ``if`` test that
fails with an error (every action of its rule does); one that names a key this event
lacks is simply false (``is defined`` asks that on purpose).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from jinja2 import UndefinedError

from config.model import Config, RuleConfig
from webhooks.templating import (
    ENV,
    NOTHING,
    compile_value,
    render_part,
    render_value,
    time_limit,
)
from worker.model import Event, UpdateTask


@dataclass(frozen=True)
class CompiledAction:
    vendor: str
    op: str
    target: Any
    fields: Any


@dataclass(frozen=True)
class CompiledRule:
    name: str
    source: str
    events: tuple[str, ...]
    condition: Any  # a compiled Jinja expression, or None
    actions: tuple[CompiledAction, ...]

    def matches_type(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.events)


@dataclass(frozen=True)
class Match:
    """A rule that matched, with the tasks it produced (for the dry run and ingest)."""

    rule: str
    tasks: tuple[UpdateTask, ...]


def compile_rule(rule: RuleConfig) -> CompiledRule:
    condition = ENV.compile_expression(rule.condition) if rule.condition else None
    actions = tuple(
        CompiledAction(a.vendor, a.op, compile_value(a.target), compile_value(dict(a.fields)))
        for a in rule.actions
    )
    return CompiledRule(rule.name, rule.source, rule.events, condition, actions)


class RuleSet:
    """All rules of a config, indexed by source."""

    def __init__(self, config: Config):
        self.by_source: dict[str, list[CompiledRule]] = {}
        for rule in config.rules:
            self.by_source.setdefault(rule.source, []).append(compile_rule(rule))

    def map_event(self, event: Event) -> list[Match]:
        with time_limit():  # one deadline for all of this event's templates
            return self._map_event(event)

    def _map_event(self, event: Event) -> list[Match]:
        scope = {"payload": event.payload, "event": event.scope()}
        matches = []
        for rule in self.by_source.get(event.source, []):
            if not rule.matches_type(event.type):
                continue
            try:
                if rule.condition is not None and not rule.condition(**scope):
                    continue
            except UndefinedError:
                continue  # a test on a key this event lacks is false
            except Exception as exc:  # a broken test must not drop the event: dead letters
                error = f"if: {_error(exc)}"
                tasks = tuple(
                    _failed(rule.name, i, a, event, error) for i, a in enumerate(rule.actions)
                )
            else:
                tasks = tuple(
                    _render_action(rule.name, i, a, event, scope)
                    for i, a in enumerate(rule.actions)
                )
            matches.append(Match(rule.name, tasks))
        return matches

    def tasks_for(self, event: Event) -> list[UpdateTask]:
        return [task for match in self.map_event(event) for task in match.tasks]


def _common(rule: str, index: int, action: CompiledAction, event: Event) -> dict[str, Any]:
    return dict(
        source=event.source,
        event_id=event.id,
        event_type=event.type,
        rule=rule,
        action=index,
        vendor=action.vendor,
        op=action.op,
        occurred_at=event.occurred_at,
    )


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _failed(rule: str, index: int, action: CompiledAction, event: Event, error: str) -> UpdateTask:
    """The action as a task that cannot run: it becomes a ``mapping_error`` dead letter."""
    common = _common(rule, index, action, event)
    return UpdateTask(target="", fields={}, mapping_error=error, **common)


def _render_action(
    rule: str, index: int, action: CompiledAction, event: Event, scope: dict[str, Any]
) -> UpdateTask:
    where = "target"  # named in the error ("fields.credit_limit: TypeError: ...")
    try:
        target = render_value(action.target, scope)
        fields = {}
        for name, compiled in action.fields.items():
            where = f"fields.{name}"
            value = render_part(compiled, scope)
            if value is not NOTHING:  # a template that wrote nothing leaves its field out
                fields[name] = value
    except Exception as exc:  # whatever a template raises on this event: a dead letter
        return _failed(rule, index, action, event, f"{where}: {_error(exc)}")
    if target is None or target == "":
        return _failed(rule, index, action, event, "target rendered empty")
    return UpdateTask(target=str(target), fields=fields, **_common(rule, index, action, event))
