"""Plain HMAC (GitHub's ``X-Hub-Signature-256`` pattern and many portals).

Hex HMAC-SHA256 of the raw body with a shared secret in a configured header, with or
without a ``sha256=`` prefix. No timestamp in the scheme, so de-duplication by event id
is the only replay defence: the id is required. ``id``, ``type`` and ``occurred_at`` come
from templates over ``payload`` and ``headers`` (``occurred_at`` defaults to receipt time).
"""

from __future__ import annotations

import hashlib
import hmac as hmac_lib
from typing import Any

from jinja2 import TemplateError
from marshmallow import Schema, ValidationError, fields, validate

from webhooks.errors import InvalidSignature, MalformedPayload, MissingSignature
from webhooks.sources.base import Event, InboundRequest, Source, kept_headers
from webhooks.sources.common import Secrets, any_digest_matches, header, parse_json
from webhooks.templating import ENV, render_value, template_problems
from worker.times import to_epoch

#: what an hmac source's templates see
SOURCE_NAMES = frozenset({"payload", "headers"})


class TemplateString(fields.String):
    """A string that must compile as a Jinja2 template over ``payload`` and ``headers``
    (checked at config load: a typo such as ``paylod.id`` refused every webhook with a 400,
    and a sender that gives up on 4xx loses them)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            tree = ENV.parse(text)
            ENV.from_string(tree)  # an unknown filter outside an {% if %} fails here
        except TemplateError as exc:
            raise ValidationError(f"not a valid template: {exc.message}") from exc
        if problems := template_problems(tree, SOURCE_NAMES, "a source sees payload and headers"):
            raise ValidationError("; ".join(problems))
        return text


class HmacSchema(Schema):
    secret = Secrets(required=True)
    header = fields.String(
        load_default="X-Signature",
        validate=validate.Regexp(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", error="not a header name"),
    )
    id = TemplateString(required=True)
    type = TemplateString(required=True)
    occurred_at = TemplateString(load_default=None)


class HmacSource(Source):
    kind = "hmac"
    schema = HmacSchema

    def __init__(self, name: str, settings: dict[str, Any]):
        super().__init__(name, settings)
        self._id = ENV.from_string(settings["id"])
        self._type = ENV.from_string(settings["type"])
        occurred = settings.get("occurred_at")
        self._occurred = ENV.from_string(occurred) if occurred else None

    def verify(self, request: InboundRequest) -> None:
        name = self.settings["header"]
        given = header(request.headers, name)
        if not given or not given.strip():
            raise MissingSignature(f"{name} header is missing")
        signature = given.strip().lower()
        if signature.startswith("sha256="):
            signature = signature[len("sha256=") :]
        expected = [
            hmac_lib.new(secret.encode(), request.body, hashlib.sha256).hexdigest().encode()
            for secret in self.settings["secret"]
        ]
        if not any_digest_matches(expected, [signature.encode()]):
            raise InvalidSignature("signature does not match")

    def parse(self, request: InboundRequest) -> list[Event]:
        payload = parse_json(request.body)
        headers = kept_headers(request.headers, frozenset({self.settings["header"].lower()}))
        scope = {"payload": payload, "headers": headers}
        event_id = self._render(self._id, scope, "id")
        # no id, no de-duplication, and with no timestamp in this scheme a replay would pass
        if not _is_scalar(event_id) or str(event_id).strip() == "":
            raise MalformedPayload(
                "event has no id (a string or an integer)", code="missing_event_id"
            )
        event_type = self._render(self._type, scope, "type")
        if not _is_scalar(event_type) or str(event_type).strip() == "":
            raise MalformedPayload("event has no type (a string)")
        occurred_at = request.received_at
        if self._occurred is not None:
            try:
                occurred_at = to_epoch(self._render(self._occurred, scope, "occurred_at"))
            except ValueError as exc:
                raise MalformedPayload("occurred_at is not a time") from exc
        return [
            Event(
                self.name,
                str(event_id).strip(),  # " pe-1 " and "pe-1" are one event (de-duplicated)
                str(event_type).strip(),
                occurred_at,
                request.received_at,
                payload,
                headers,
            )
        ]

    @staticmethod
    def _render(template: Any, scope: dict[str, Any], what: str) -> Any:
        try:
            return render_value(template, scope)
        # any failure, not only TemplateError: the body is the sender's, and a template such
        # as "{{ payload.at / 1000 }}" raises TypeError on a string; that is a 400, not a 500
        except Exception as exc:
            raise MalformedPayload(
                f"cannot read the event {what} from the body",
                code="missing_event_id" if what == "id" else None,
            ) from exc


def _is_scalar(value: Any) -> bool:
    """An id or type is text or an integer: None, booleans, lists and objects are not."""
    return isinstance(value, str | int) and not isinstance(value, bool)
