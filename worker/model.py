r"""The data that flows one way through Switchboard: an inbound :class:`Event` (a source
makes it, rules read it, Redis keeps it) and the :class:`UpdateTask`\ s the rules make of
it, passed through Redis to a connector."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """One inbound event, as stored and as rules see it (``event`` in templates)."""

    source: str
    id: str
    type: str
    occurred_at: float  # unix seconds; orders updates per field
    received_at: float
    payload: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    def scope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "occurred_at": self.occurred_at,
            "received_at": self.received_at,
            "headers": dict(self.headers),
        }


@dataclass(frozen=True)
class UpdateTask:
    """One action of one rule for one event: set ``fields`` on ``target`` at ``vendor``.

    ``mapping_error`` is set (and fields empty) when a template failed on this event: the
    worker turns such a task into a ``mapping_error`` dead letter without calling anyone.
    """

    source: str
    event_id: str
    event_type: str
    rule: str
    action: int
    vendor: str
    op: str
    target: str
    fields: dict[str, Any]
    occurred_at: float
    mapping_error: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        # vars(), not asdict(): asdict deep-copies every nested value, and this runs once
        # per task at ingest (the fields dict is only read by json.dumps)
        return json.dumps(vars(self), separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> UpdateTask:
        return cls(**json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
