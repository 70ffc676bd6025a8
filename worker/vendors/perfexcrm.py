"""PerfexCRM (REST API module) connector: ``update_customer`` via ``PUT /api/customers/{id}``.

Facts (see shared/vendors/perfexcrm.md):
- Confirmed (module source ``api-v3/controllers/Customers.php``): ``authtoken`` header; PUT
  with JSON changes only the fields sent; the field list below; answers 200
  ``{"status": true}``, 404 "Customer not found"/"Invalid Customers ID" (-> not_found),
  406 empty body (-> rejected), 404 "Customers Update Fail." (-> rejected).
- Confirmed (seed): ``active`` is updatable. Inferred: it travels as 1/0.
- Inferred: a wrong token answers 401 ``{"status": false, ...}`` (-> auth_failed; a static
  token cannot be refreshed). The ``/api`` prefix is configurable (``options.api_prefix``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import Schema, fields, validate

from worker.vendors import errors
from worker.vendors.base import Connector, json_body
from worker.vendors.values import Text, WholeNumber


class PerfexAuth(Schema):
    token = fields.String(required=True)


class PerfexOptions(Schema):
    api_prefix = fields.String(load_default="/api")


class NumericId(fields.String):
    """Perfex ids travel as strings of digits; accept ints from templates too."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int):
            value = str(value)
        text = super()._deserialize(value, attr, data, **kwargs)
        if not (text.isascii() and text.isdigit()):  # "٧" and "²" are digits to isdigit
            raise self.make_error("invalid")
        return text


class UpdateCustomer(Schema):
    company = Text(validate=validate.Length(max=191))
    vat = Text()
    phonenumber = Text()
    website = Text()
    groups_in = fields.List(WholeNumber())
    default_language = Text()
    default_currency = WholeNumber()
    address = Text()
    city = Text()
    state = Text()
    zip = Text()
    country = NumericId()
    billing_street = Text()
    billing_city = Text()
    billing_state = Text()
    billing_zip = Text()
    billing_country = NumericId()
    shipping_street = Text()
    shipping_city = Text()
    shipping_state = Text()
    shipping_zip = Text()
    shipping_country = NumericId()
    custom_fields = fields.Dict(keys=fields.String(), values=fields.Dict())
    active = fields.Boolean()


class PerfexCRM(Connector):
    kind = "perfexcrm"
    ops: ClassVar = {"update_customer": UpdateCustomer}
    auth_schema = PerfexAuth
    options_schema = PerfexOptions
    target_field = NumericId(required=True)
    concurrency: ClassVar[int | None] = 5  # vendor file: "default 5 in flight"

    def _url(self, path: str) -> str:
        prefix = str(self.instance.options.get("api_prefix", "/api")).rstrip("/")
        return f"{prefix}{path}"

    def _headers(self) -> dict[str, str]:
        return {"authtoken": str(self.instance.auth["token"])}

    def op_update_customer(self, target: str, fields_: dict[str, Any]) -> dict[str, Any]:
        body = {k: (int(v) if k == "active" else v) for k, v in fields_.items()}
        response = self.send(
            "PUT", self._url(f"/customers/{target}"), json=body, headers=self._headers()
        )
        self._raise_for_answer(response)
        return {"status": response.status_code}

    def secret_values(self) -> list[str]:
        return [str(self.instance.auth["token"])]

    def _raise_for_answer(self, response: Any) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        data = json_body(response)
        message = str(data.get("message", "")) if isinstance(data, dict) else ""
        detail = f"{self.name} answered {status}: {message or 'no message'}"
        kw = {"status": status, "excerpt": self.excerpt(response)}
        if status in (401, 403):
            raise self.scrub(errors.AuthFailed(detail, **kw))
        lowered = message.lower()
        if status == 404 and ("not found" in lowered or "invalid" in lowered):
            raise self.scrub(errors.NotFound(detail, **kw))
        raise self.scrub(errors.Rejected(detail, **kw))
