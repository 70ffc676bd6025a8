"""Marshmallow schemas of the ops API: query/body validation and the OpenAPI document."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from worker.audit import AUDIT_ACTIONS
from worker.deadletter import CODES, parse_cursor


class Timestamp(fields.Field):
    """Unix seconds or an ISO 8601 date-time (a naive one is taken as UTC); finite, and
    never a boolean (JSON ``true`` is not a time)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool):
            raise ValidationError("not unix seconds or an ISO 8601 date-time")
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            return self._iso(value)
        if not math.isfinite(seconds):
            raise ValidationError("not a finite number of unix seconds")
        return seconds

    @staticmethod
    def _iso(value: Any) -> float:
        try:
            text = str(value).replace("Z", "+00:00")
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError("not unix seconds or an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            from datetime import UTC

            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()


class Cursor(fields.String):
    """A page cursor: the ``next_cursor`` a previous page gave, nothing else."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            parse_cursor(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return text


class Error(Schema):
    class Body(Schema):
        code = fields.String(required=True)
        message = fields.String(required=True)

    error = fields.Nested(Body, required=True)


_GIVEN = validate.Length(min=1)  # an empty filter value is refused, not read as no filter


class DeadLetterFilter(Schema):
    vendor = fields.String(validate=_GIVEN, metadata={"description": "vendor instance name"})
    rule = fields.String(validate=_GIVEN, metadata={"description": "rule name"})
    source = fields.String(validate=_GIVEN, metadata={"description": "source name"})
    code = fields.String(
        validate=validate.OneOf(CODES),
        metadata={"description": "dead-letter code: " + ", ".join(CODES)},
    )
    since = Timestamp(metadata={"description": "died at or after (unix seconds or ISO 8601)"})
    until = Timestamp(metadata={"description": "died at or before (unix seconds or ISO 8601)"})


class DeadLetterListArgs(DeadLetterFilter):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = Cursor(metadata={"description": "next_cursor of the previous page"})


class BulkReplayRequest(DeadLetterFilter):
    all = fields.Boolean(
        load_default=False,
        metadata={"description": "required (true) to replay every entry when no filter is set"},
    )


class AuditArgs(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    action = fields.String(validate=validate.OneOf(AUDIT_ACTIONS))
    id = fields.String(metadata={"description": "only the records of this entry / event"})


class Attempt(Schema):
    at = fields.Float(metadata={"description": "unix seconds the attempt started"})
    duration = fields.Float(allow_none=True)
    outcome = fields.String()
    code = fields.String(metadata={"description": "dead-letter code, on the final attempt"})
    status = fields.Integer(allow_none=True, metadata={"description": "vendor HTTP status"})
    message = fields.String(allow_none=True)
    excerpt = fields.String(
        allow_none=True, metadata={"description": "redacted excerpt of the vendor's answer"}
    )
    final = fields.Boolean()
    retry_at = fields.Float(metadata={"description": "unix seconds the next attempt is due"})


class Task(Schema):
    id = fields.String()
    source = fields.String()
    event_id = fields.String()
    event_type = fields.String()
    rule = fields.String()
    action = fields.Integer()
    vendor = fields.String()
    op = fields.String()
    target = fields.String()
    fields_ = fields.Dict(data_key="fields")
    occurred_at = fields.Float()
    mapping_error = fields.String(allow_none=True)


class StoredEvent(Schema):
    source = fields.String()
    id = fields.String()
    type = fields.String()
    occurred_at = fields.Float()
    received_at = fields.Float()
    payload = fields.Raw()
    headers = fields.Dict(keys=fields.String(), values=fields.String())


class DeadLetterSummary(Schema):
    id = fields.String()
    code = fields.String()
    message = fields.String(allow_none=True)
    vendor = fields.String()
    op = fields.String()
    rule = fields.String()
    source = fields.String()
    event_id = fields.String()
    event_type = fields.String()
    target = fields.String()
    died_at = fields.Float()
    first_died_at = fields.Float()
    replays = fields.Integer()
    replaying = fields.Boolean()
    attempts = fields.Integer(metadata={"description": "number of attempts so far"})


class DeadLetterPage(Schema):
    items = fields.List(fields.Nested(DeadLetterSummary))
    next_cursor = fields.String(allow_none=True)


class DeadLetter(DeadLetterSummary):
    attempts = fields.List(fields.Nested(Attempt))  # type: ignore[assignment]
    task = fields.Nested(Task)
    event = fields.Nested(StoredEvent, allow_none=True)


class ReplayResult(Schema):
    status = fields.String(validate=validate.OneOf(["queued", "already_replaying"]))
    entry = fields.Nested(DeadLetterSummary)


class Job(Schema):
    id = fields.String()
    state = fields.String(
        validate=validate.OneOf(
            ["pending", "running", "done", "failed", "stalled", "cancelling", "cancelled"]
        )
    )
    filter = fields.Dict()
    who = fields.String()
    created_at = fields.Float()
    updated_at = fields.Float()
    finished_at = fields.Float(allow_none=True)
    total = fields.Integer(allow_none=True)
    done = fields.Integer()
    queued = fields.Integer()
    already_replaying = fields.Integer()
    gone = fields.Integer(
        metadata={"description": "entries replayed or discarded since the job listed them"}
    )
    failed = fields.Integer()
    resumed = fields.Integer(metadata={"description": "times resumed after its runner died"})
    cancelled_by = fields.String(metadata={"description": "who cancelled it (when cancelled)"})
    errors = fields.List(fields.Dict())


class EventTask(Task):
    state = fields.String(
        validate=validate.OneOf(["queued", "retrying", "applied", "stale", "dead", "expired"])
    )
    attempts = fields.List(fields.Nested(Attempt))
    stale_fields = fields.List(fields.String())
    dead_letter = fields.String(allow_none=True)


class EventDetail(Schema):
    event = fields.Nested(StoredEvent)
    tasks = fields.List(fields.Nested(EventTask))


class EventReplay(Schema):
    status = fields.String(validate=validate.OneOf(["queued", "ignored"]))
    source = fields.String()
    event_id = fields.String()
    tasks = fields.Integer()
    task_ids = fields.List(fields.String())


class AuditRecord(Schema):
    at = fields.Float()
    action = fields.String()
    id = fields.String()
    who = fields.String()


class AuditLog(Schema):
    items = fields.List(fields.Nested(AuditRecord))


class Counts(Schema):
    total = fields.Integer()
    vendor = fields.Dict(keys=fields.String(), values=fields.Integer())
    code = fields.Dict(keys=fields.String(), values=fields.Integer())


class IngestAnswer(Schema):
    status = fields.String(validate=validate.OneOf(["accepted", "duplicate", "ignored"]))
    event_ids = fields.List(fields.String())
    tasks = fields.Integer()
    duplicates = fields.List(fields.String())


class Health(Schema):
    status = fields.String()


class Readiness(Schema):
    status = fields.String(validate=validate.OneOf(["ready", "not_ready"]))
    detail = fields.Dict()
