"""Typed reading of environment variables: a bad value becomes an :class:`EnvError` that
names the variable, the value and what it must be, never a bare ``int()`` traceback.

A :class:`Reader` collects every problem before raising, so one start-up reports them all.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

_T = TypeVar("_T")
_WHOLE = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: str.isdigit() takes "²", int() not


class EnvError(ValueError):
    """One or more environment variables hold values Switchboard cannot use."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class Reader:
    """Reads variables from ``env`` (default ``os.environ``); unset or empty: the default.

    A bad value is noted and the default returned, so reading can go on;
    :meth:`done` raises :class:`EnvError` with every problem noted.
    """

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None, strip: bool = False) -> str | None:
        """The value as it is (``strip``: without surrounding blanks, which would make
        a token nobody can send); unset or empty: ``default``."""
        value = self.env.get(name)
        return (value.strip() if strip and value else value) or default

    def note(self, problem: str) -> None:
        """A problem found by a check of its own (reported with the others by done)."""
        self.problems.append(problem)

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        value = int(raw) if _WHOLE.fullmatch(raw) else None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            return self._bad(name, raw, f"a whole number{_range(minimum, maximum)}", default)
        return value

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        """A finite number above ``minimum`` (exclusive: 0 means "more than zero")."""
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= minimum:
            return self._bad(name, raw, f"a number above {minimum:g}", default)
        return value

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        """One of ``choices``, matched without regard to case; returned as listed."""
        raw = self._raw(name)
        if raw is None:
            return default
        by_key = {c.lower(): c for c in choices}
        if raw.lower() not in by_key:
            return self._bad(name, raw, "one of " + ", ".join(by_key.values()), default)
        return by_key[raw.lower()]

    def _raw(self, name: str) -> str | None:
        """The variable's value without surrounding blanks; None when unset or blank."""
        return self.env.get(name, "").strip() or None

    def done(self) -> None:
        if self.problems:
            raise EnvError(self.problems)

    def _bad(self, name: str, raw: str, wanted: str, default: _T) -> _T:
        self.problems.append(f"{name} must be {wanted}, not {raw!r}")
        return default


def _range(minimum: int, maximum: int | None) -> str:
    if maximum is None:
        return f" >= {minimum}"
    return f" from {minimum} to {maximum}"
