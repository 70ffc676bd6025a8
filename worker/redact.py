"""Redaction of known secrets (every config value under a source secret or vendor auth)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

MARK = "[redacted]"


class Redactor:
    def __init__(self, secrets: Iterable[str]):
        # longest first, so a secret containing another is replaced whole
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._escaped = sorted(
            {json.dumps(s)[1:-1] for s in self.secrets} | set(self.secrets), key=len, reverse=True
        )

    def json_text(self, text: str) -> str:
        """``text`` (JSON made by ``json.dumps`` with its defaults) with every secret blanked,
        as it appears there: escaped the way ``json.dumps`` escapes a string."""
        for secret in self._escaped:
            if secret in text:
                text = text.replace(secret, MARK)
        return text

    def text(self, value: str | None) -> str | None:
        if not value:
            return value
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MARK)
        return value

    def deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        return value
