"""Helpers every verifier uses: secret lists, timestamp windows, body parsing, time parsing."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields

from webhooks.errors import MalformedPayload, StaleTimestamp
from webhooks.sources.base import Event


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


#: a unix time in a header: ASCII digits only (str.isdigit() also accepts "²" and "١",
#: which float() then rejects or misreads)
_DIGITS = re.compile(r"[0-9]{1,20}")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup on any mapping (werkzeug Headers or a plain dict)."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def unix_digits(value: str) -> int | None:
    """The integer in a timestamp header made of ASCII digits only, else None."""
    text = value.strip()
    return int(text) if _DIGITS.fullmatch(text) else None


def check_window(timestamp: float, now: float, tolerance: float) -> None:
    """Reject timestamps too old (replays) or too far in the future."""
    # not finite -> reject: NaN compares False with everything and would slip through
    if not math.isfinite(timestamp) or abs(now - timestamp) > tolerance:
        hint = ""
        if math.isfinite(timestamp) and abs(now - timestamp / 1000) <= tolerance:
            hint = " (it reads as milliseconds; this scheme signs seconds)"
        raise StaleTimestamp(f"timestamp outside the {int(tolerance)} s tolerance{hint}")


FUTURE_SLACK = 86400.0  # an event may say it happened up to a day after we received it


def check_occurred_at(event: Event) -> None:
    """An event's time orders its field updates against every later event's, for as long
    as the field versions are kept: one from the far future would make every later update
    of those fields ``stale``, silently. So it must fall between 1970 and a day after
    receipt (clock skew); anything else is a 400 naming the event."""
    if not 0 <= event.occurred_at <= event.received_at + FUTURE_SLACK:
        raise MalformedPayload(
            f"event {event.id!r}: its time ({event.occurred_at:.0f} unix seconds) is not "
            "between 1970 and a day from now; seconds, milliseconds, microseconds and "
            "nanoseconds are understood",
            code="invalid_time",
        )


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    # RecursionError: a body of 100k "[" is within the size limit and must be a 400, not a 500
    except (ValueError, RecursionError) as exc:
        raise MalformedPayload("body is not valid JSON", code="malformed_json") from exc


def _unit(value: float) -> float:
    """How many of ``value``'s units make a second, by magnitude: unix seconds pass 1e11
    only in the year 5138, milliseconds pass 1e14 in 5138 too, and so on."""
    return 1e9 if value > 1e17 else 1e6 if value > 1e14 else 1e3 if value > 1e11 else 1.0


def to_epoch(value: Any) -> float:
    """Unix seconds from seconds, milliseconds (>1e11), microseconds (>1e14), nanoseconds
    (>1e17), a numeric string or ISO-8601.

    Raises ValueError for anything else, including NaN, infinities and numbers too big
    for a float (a JSON body may hold any of them).
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        try:
            seconds = float(value) / _unit(value)
        except OverflowError as exc:
            raise ValueError("time out of range") from exc
        if not math.isfinite(seconds):
            raise ValueError("time is not finite")
        return seconds
    if isinstance(value, str):
        text = value.strip()
        try:
            return to_epoch(float(text))
        except ValueError:
            pass
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        try:
            return moment.timestamp()
        except (OverflowError, OSError) as exc:  # e.g. year 9999 with a negative offset
            raise ValueError("time out of range") from exc
    raise ValueError(f"not a time: {value!r}")
