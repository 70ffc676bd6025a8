"""Marshmallow schemas for the config file's shape (per-kind parts live with each kind).

Source kinds bring their own schema (``webhooks.sources``), vendor kinds their ``auth``
and ``options`` schemas and per-op field schemas (``worker.vendors``); this module holds
the common frame: top level, vendor instance, rule, action.
"""

from __future__ import annotations

import math
import re
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from worker.vendors.values import WholeNumber

RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)\s*$")
UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
}
NAME = validate.Regexp(r"^[A-Za-z0-9_.-]+$", error="use letters, digits, '_', '-' or '.'")


def parse_rate(text: str) -> tuple[int, float]:
    """``"20/s"`` -> (20, 1.0); ``"100/10s"`` -> (100, 10.0); ``"600/min"`` -> (600, 60.0)."""
    match = RATE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a rate like '20/s', '600/min' or '100/10s'")
    count, per, unit = match.groups()
    if not math.isfinite(float(count)) or not math.isfinite(float(per or 1)):
        raise ValueError(f"{text!r} has a number too large")
    if float(count) < 1:
        raise ValueError("a rate needs a count of at least 1")
    window = float(per or 1) * UNIT_SECONDS[unit]
    if window <= 0:  # "5/0s" would mean no limit at all
        raise ValueError("a rate needs a window above zero, like '5/s' or '5/10s'")
    return int(float(count)), window


class RateField(fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> tuple[int, float]:
        if not isinstance(value, str):
            raise ValidationError("must be a string like '20/s'")
        try:
            return parse_rate(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


class RetrySchema(Schema):
    max_attempts = WholeNumber(load_default=8, validate=validate.Range(min=1, max=100))
    base_delay = fields.Float(load_default=2.0, validate=validate.Range(min=0))
    max_delay = fields.Float(load_default=600.0, validate=validate.Range(min=0))


class CircuitSchema(Schema):
    """Circuit breaker: open after ``failures`` transient failures in a row, for ``cooldown`` s."""

    failures = WholeNumber(load_default=5, validate=validate.Range(min=1, max=1000))
    cooldown = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=3600))


class VendorSchema(Schema):
    """Common frame; ``auth`` and ``options`` are checked by the kind's own schemas."""

    kind = fields.String(required=True)
    base_url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    auth = fields.Dict(load_default=dict)
    options = fields.Dict(load_default=dict)
    rate_limit = RateField(load_default=None)
    retry = fields.Nested(RetrySchema, load_default=lambda: RetrySchema().load({}))
    circuit = fields.Nested(CircuitSchema, load_default=lambda: CircuitSchema().load({}))
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300))
    max_in_flight = WholeNumber(load_default=5, validate=validate.Range(min=1, max=100))
    #: calls in flight at once across all workers (shared through Redis); null: no cap;
    #: unset: the connector's default (``Connector.concurrency``)
    concurrency = WholeNumber(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=1000)
    )


class SourceFrame(Schema):
    """Only ``kind`` here; the rest is the kind's schema."""

    class Meta:
        unknown = INCLUDE

    kind = fields.String(required=True)


class ActionSchema(Schema):
    vendor = fields.String(required=True)
    op = fields.String(required=True)
    target = fields.Raw(required=True)
    fields = fields.Dict(  # type: ignore[assignment]  # the YAML key is 'fields'
        keys=fields.String(), required=True, validate=validate.Length(min=1)
    )


class RuleSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    source = fields.String(required=True)
    events = fields.List(
        fields.String(validate=validate.Length(min=1)),
        required=True,
        validate=validate.Length(min=1),
    )
    if_ = fields.String(data_key="if", load_default=None)
    actions = fields.List(
        fields.Nested(ActionSchema), required=True, validate=validate.Length(min=1)
    )


class TopSchema(Schema):
    sources = fields.Dict(keys=fields.String(validate=NAME), values=fields.Raw(), required=True)
    vendors = fields.Dict(keys=fields.String(validate=NAME), values=fields.Raw(), required=True)
    rules = fields.List(fields.Raw(), load_default=list)
