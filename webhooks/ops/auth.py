"""Ops tokens: ``SWITCHBOARD_OPS_TOKEN`` is one token (named ``ops``) or a comma-separated
list of ``name:token`` pairs (one per operator, so the audit log says who).

Tokens are compared in constant time, every configured token each time, so neither the
answer nor its timing says which one was close. A token is never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_PAIR = re.compile(r"^\s*([A-Za-z0-9_.@-]+):(\S+)\s*$")


def parse_tokens(value: str | None) -> dict[str, str]:
    """``{name: token}``: pairs when every comma-separated part is ``name:token``,
    otherwise the whole value is one token named ``ops``."""
    if not value or not value.strip():
        return {}
    parts = [p for p in value.split(",") if p.strip()]
    pairs = [_PAIR.match(p) for p in parts]
    if parts and all(pairs):
        return {m.group(1): m.group(2) for m in pairs if m}
    return {"ops": value.strip()}


def identify(tokens: dict[str, str], presented: str | None) -> str | None:
    """The name of the token ``presented`` matches, or None."""
    if not presented:
        return None
    given = presented.encode()
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(given, token.encode()) and found is None:
            found = name
    return found


def secret_key(tokens: dict[str, str]) -> bytes:
    """A session-signing key derived from the tokens: shared by every web process, and
    changing a token signs everyone out."""
    material = "\n".join(f"{n}:{t}" for n, t in sorted(tokens.items())).encode()
    return hmac.new(material, b"switchboard-ops-session", hashlib.sha256).digest()
