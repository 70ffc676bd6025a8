"""Soliditech connector: ``update_customer`` of one customer account (low-confidence wire format).

No public API reference was found (shared/vendors/soliditech.md). C = confirmed, I = inferred:
- C An API key authenticates; "update customer account" takes an account id plus optional
  fields and nested groups (business details, primary contact, physical/postal address).
- I Everything on the wire: ``PUT <base>/api/customers/{account_id}``, header
  ``X-API-Key: <key>``, a JSON body with camelCase names. Hence ``options``: ``method``
  (PUT), ``path`` (template with ``{account_id}``), ``auth_header`` (X-API-Key) and
  ``auth_prefix`` ("", e.g. "Bearer " should the key travel as ``Authorization: Bearer``).
- I Answers: 200 with the account; 401 bad key (``auth_failed``: a static key cannot be
  refreshed); 404 unknown account (``not_found``); 400/422 validation (``rejected``).
- I Field types: ``price_list_id`` is an integer id, ``email`` an address, the rest strings
  (no enum is known, so none is enforced here). GPS coordinates of the physical address are
  named in the node's docs but have no known wire name, so they are not offered.

Rules name fields in snake_case (``physical_address: {city: ...}``); each schema field
carries its wire name in ``metadata["wire"]``, so a corrected wire format changes this
module only. Nested groups are ``fields.Nested``, so ``config check`` rejects unknown
nested names.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from marshmallow import Schema, fields, validate

from worker.vendors import errors
from worker.vendors.base import Connector, VendorInstance, json_body
from worker.vendors.values import Text, WholeNumber


def wire(name: str, field: fields.Field) -> fields.Field:
    """Tag ``field`` with the vendor's name for it."""
    field.metadata = {**field.metadata, "wire": name}
    return field


def text(name: str) -> fields.Field:
    return wire(name, Text())


class BusinessDetails(Schema):
    business_name = text("businessName")
    id_number_type = text("idNumberType")
    id_number = text("idNumber")
    vat_number = text("vatNumber")
    phone_number = text("phoneNumber")


class PrimaryContact(Schema):
    title = text("title")
    first_name = text("firstName")
    last_name = text("lastName")
    job_title = text("jobTitle")
    phone = text("phone")
    mobile = text("mobile")
    fax = text("fax")
    email = wire("email", fields.Email())


class Address(Schema):
    """What physical and postal addresses share."""

    address_line1 = text("addressLine1")
    address_line2 = text("addressLine2")
    suburb = text("suburb")
    city = text("city")
    province = text("province")
    country = text("country")


class PhysicalAddress(Address):
    street_code = text("streetCode")


class PostalAddress(Address):
    postal_code = text("postalCode")


class UpdateCustomer(Schema):
    account_use = text("accountUse")
    account_class = text("accountClass")
    tax_type = text("taxType")
    price_list_id = wire("priceListId", WholeNumber())  # "3" from Stripe metadata too
    preferred_language = text("preferredLanguage")
    invoice_cycle_type = text("invoiceCycleType")
    dealer = text("dealer")
    ticket_center = text("ticketCenter")
    sales_manager = text("salesManager")
    business_details = wire("businessDetails", fields.Nested(BusinessDetails))
    primary_contact = wire("primaryContact", fields.Nested(PrimaryContact))
    physical_address = wire("physicalAddress", fields.Nested(PhysicalAddress))
    postal_address = wire("postalAddress", fields.Nested(PostalAddress))


class SoliditechAuth(Schema):
    api_key = fields.String(required=True, validate=validate.Length(min=1))


class SoliditechOptions(Schema):
    method = fields.String(load_default="PUT", validate=validate.OneOf(["PUT", "PATCH", "POST"]))
    path = fields.String(
        load_default="/api/customers/{account_id}",
        validate=validate.Regexp(
            r"^/.*\{account_id\}", error="must start with / and contain {{account_id}}"
        ),
    )
    auth_header = fields.String(
        load_default="X-API-Key", validate=validate.Regexp(r"^[A-Za-z0-9-]+$")
    )
    auth_prefix = fields.String(load_default="")


class AccountId(fields.String):
    """An account id: letters, digits, ``-`` and ``_`` (safe in a path); ints are accepted."""

    PATTERN = re.compile(r"[A-Za-z0-9_-]+")  # fullmatch: "$" would let "5005\n" through

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        result = super()._deserialize(value, attr, data, **kwargs)
        if not self.PATTERN.fullmatch(result):
            raise self.make_error("invalid")
        return result


def to_wire(schema: Schema, clean: dict[str, Any]) -> dict[str, Any]:
    """Rename loaded snake_case fields (recursively) to the vendor's wire names."""
    body: dict[str, Any] = {}
    for name, value in clean.items():
        declared = schema.fields[name]
        if isinstance(declared, fields.Nested) and isinstance(value, dict):
            value = to_wire(declared.schema, value)
        body[declared.metadata["wire"]] = value
    return body


class Soliditech(Connector):
    kind = "soliditech"
    ops: ClassVar = {"update_customer": UpdateCustomer}
    auth_schema = SoliditechAuth
    options_schema = SoliditechOptions
    target_field = AccountId(required=True)

    def __init__(self, instance: VendorInstance, transport: httpx.BaseTransport | None = None):
        super().__init__(instance, transport)
        # VendorInstance built by hand (tests, tools) has no defaults applied yet
        self.options = SoliditechOptions().load(dict(instance.options))
        self.api_key = str(SoliditechAuth().load(dict(instance.auth))["api_key"])

    def op_update_customer(self, target: str, fields_: dict[str, Any]) -> dict[str, Any]:
        body = to_wire(UpdateCustomer(), fields_)
        path = self.options["path"].replace("{account_id}", quote(target, safe=""))
        headers = {self.options["auth_header"]: f"{self.options['auth_prefix']}{self.api_key}"}
        response = self.send(self.options["method"], path, json=body, headers=headers)
        self._raise_for_answer(response, target)
        return {"status": response.status_code, "account_id": target}

    def _raise_for_answer(self, response: httpx.Response, target: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"{self.name} answered {status}: {vendor_message(response) or 'no message'}"
        kw: dict[str, Any] = {"status": status, "excerpt": self.excerpt(response)}
        if status in (401, 403):
            raise self.scrub(errors.AuthFailed(detail, **kw))
        if status == 404 and says_account_missing(response, target):
            raise self.scrub(errors.NotFound(detail, **kw))
        if status == 404:  # the wire format is inferred: a wrong path is the likely cause
            detail += " (no such route? check options.path and options.method)"
        raise self.scrub(errors.Rejected(detail, **kw))

    def secret_values(self) -> list[str]:
        return [self.api_key]


def says_account_missing(response: httpx.Response, target: str) -> bool:
    """A 404 about the account (a JSON error naming it, or saying "not found"), not one
    for a path the API does not have (a web server's page, "No route for ...")."""
    data = json_body(response)
    if not isinstance(data, dict):
        return False
    message = str(data.get("message") or data.get("error") or "").lower()
    return "route" not in message and (target.lower() in message or "not found" in message)


def vendor_message(response: httpx.Response) -> str:
    """``message`` (plus field ``errors`` when given) from a JSON error, else the text."""
    data = json_body(response)
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("error") or "")
        if isinstance(data.get("errors"), dict | list):
            message = f"{message} {data['errors']}".strip()
        return message[:300]
    body = response.text.strip()
    return "" if body.startswith("<") else body[:200]
