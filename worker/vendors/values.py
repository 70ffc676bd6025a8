"""Field types the connectors' op schemas share (marshmallow)."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate


class WholeNumber(fields.Integer):
    """An integer id: digit strings from templates are fine; 4.5 or True are not.

    ``fields.Integer(strict=False)`` would truncate 4.5 to 4, and 1001.7 to customer 1001:
    a different record, silently.
    """

    def __init__(self, minimum: int = 1, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.Range(min=minimum))
        super().__init__(strict=False, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Text(fields.String):
    """Free text a vendor stores (a name, a VAT note, a post code): a number a template
    gives (``{{ amount / 100 }}``, ``zip: 12345``) is written as text; a boolean is not."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)
