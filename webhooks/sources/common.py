"""Helpers every verifier uses: secret lists, timestamp windows, body parsing, event-time
checks (reading a time is :func:`worker.times.to_epoch`)."""

from __future__ import annotations

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


#: deepest nesting of objects and arrays a body may have: no sender's event comes near
#: it, and deeper ones fail later (storing the event, showing it in ops: RecursionError)
MAX_DEPTH = 100
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # "\ud800": half a character


def parse_json(body: bytes) -> Any:
    """The body as JSON data a later step can store and show; a 400 ``malformed_json``
    for what is not JSON, and for what is but cannot go further: ``NaN``/``Infinity``
    (no JSON reader takes them back), a lone UTF-16 surrogate (no UTF-8 text: the event
    could not be stored), or nesting deeper than :data:`MAX_DEPTH`."""
    try:
        payload = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    # RecursionError: a body of 100k "[" is within the size limit and must be a 400, not a 500
    except (ValueError, RecursionError) as exc:
        raise MalformedPayload(
            f"body is not valid JSON ({_reason(exc)})", code="malformed_json"
        ) from exc
    if _SURROGATE.search(body) and not _is_text(payload):
        raise MalformedPayload(
            "body holds a lone UTF-16 surrogate (\\ud800-\\udfff not in a pair): no text",
            code="malformed_json",
        )
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _deeper_than(payload, MAX_DEPTH):
        raise MalformedPayload(
            f"body nests objects and arrays deeper than {MAX_DEPTH} levels", code="malformed_json"
        )
    return payload


def _finite(text: str) -> float:
    """A JSON number as a float; ``1e400`` overflows to infinity, no JSON number either."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large for a JSON number")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _reason(exc: Exception) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _is_text(payload: Any) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _deeper_than(payload: Any, limit: int) -> bool:
    """Whether ``payload`` nests containers deeper than ``limit`` (walked without
    recursion: it is what is being checked)."""
    stack = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False
