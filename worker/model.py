"""The update task: plain data passed from the rules engine through Redis to a connector."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


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
