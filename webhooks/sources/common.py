"""Helpers every verifier uses: secret lists, timestamp windows, body parsing, time parsing."""

from __future__ import annotations

import datetime as dt
import hmac
import json
from typing import Any

from marshmallow import ValidationError, fields

from webhooks.errors import MalformedPayload, StaleTimestamp


class Secrets(fields.Field):
    """``secret: "..."`` or ``secret: ["new", "old"]`` (rotation): always a list of str."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[str]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise ValidationError("must be a string or a non-empty list of strings")
        if not all(isinstance(v, str) and v for v in values):
            raise ValidationError("every secret must be a non-empty string")
        return list(values)


def any_digest_matches(expected: list[bytes], given: list[bytes]) -> bool:
    """Constant-time: compares every pair, no early exit on the first match."""
    matched = False
    for want in expected:
        for got in given:
            matched |= hmac.compare_digest(want, got)
    return matched


def check_window(timestamp: float, now: float, tolerance: float) -> None:
    """Reject timestamps too old (replays) or too far in the future."""
    if abs(now - timestamp) > tolerance:
        raise StaleTimestamp(f"timestamp outside the {int(tolerance)} s tolerance")


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload("body is not valid JSON", code="malformed_json") from exc


def to_epoch(value: Any) -> float:
    """Unix seconds from seconds, milliseconds (>1e11), a numeric string or ISO-8601."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return to_epoch(float(text))
        except ValueError:
            pass
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    raise ValueError(f"not a time: {value!r}")
