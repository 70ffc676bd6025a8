"""Redaction of known secrets (every config value under a source secret or vendor auth),
in every form a vendor's answer or our own text may carry them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MARK = "[redacted]"


def secret_forms(secret: str) -> set[str]:
    """``secret`` as is, URL-encoded (a form body or query a vendor echoes: PortaBilling's
    and HaloPSA's logins are forms), JSON-escaped, Python's way and PHP's (``\\/``), and
    both: JSON carried in a form field, as PortaBilling's ``params``."""
    escaped = json.dumps(secret)[1:-1]
    plain = {secret, escaped, escaped.replace("/", "\\/")}  # JSON inside a form, too
    return {form for p in plain for form in (p, quote_plus(p), quote(p, "")) if form}


def _longest_first(forms: Iterable[str]) -> list[str]:
    return sorted(set(forms), key=len, reverse=True)  # a secret holding another goes whole


class Redactor:
    def __init__(self, secrets: Iterable[str]):
        self.secrets = _longest_first(f for s in secrets if s for f in secret_forms(s))
        # in JSON text each form appears escaped once more (json.dumps of a string)
        self._escaped = _longest_first(
            {json.dumps(s)[1:-1] for s in self.secrets} | set(self.secrets)
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
