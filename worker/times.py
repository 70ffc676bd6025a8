"""Times as senders and vendors write them (seconds, milliseconds, ISO-8601), read as
unix seconds: event times at ingest, PortaBilling's date fields in the worker."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any


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
