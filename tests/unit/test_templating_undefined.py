import pytest

from webhooks.templating import TemplateError, compile_value, render_value


def test_a_lone_missing_key_fails_at_render_not_later():
    compiled = compile_value("{{ payload.address.postal_code }}")
    with pytest.raises(TemplateError):
        render_value(compiled, {"payload": {"address": {}}})


def test_a_default_fills_a_lone_missing_key():
    compiled = compile_value("{{ payload.address.zip | default('none') }}")
    assert render_value(compiled, {"payload": {"address": {}}}) == "none"
