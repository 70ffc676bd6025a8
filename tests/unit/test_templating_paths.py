"""The dotted-name fast path renders exactly what Jinja renders, errors included."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from webhooks.templating import PathTemplate, compile_value, render_value

# names that are plain keys, dict method names (Jinja's a.b prefers the attribute) and a
# Jinja global, so every branch of the fast path meets its fallback
NAMES = st.sampled_from(["payload", "data", "id", "items", "keys", "get", "zip", "range"])
LEAVES = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.floats(allow_nan=False))
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.dictionaries(NAMES, inner, max_size=4), st.lists(inner, max_size=2)),
    max_leaves=12,
)


def _outcome(render: Any, scope: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", render(scope)
    except Exception as exc:  # the same exception type and message is what must match
        return "error", (type(exc).__name__, str(exc))


@settings(max_examples=400, deadline=None)
@given(
    scope=st.dictionaries(NAMES, VALUES, max_size=4),
    path=st.lists(NAMES, min_size=1, max_size=4),
)
def test_fast_path_matches_jinja(scope, path):
    compiled = compile_value("{{ " + ".".join(path) + " }}")
    assert isinstance(compiled, PathTemplate)
    assert _outcome(compiled.render, scope) == _outcome(compiled.template.render, scope)


def test_only_a_lone_dotted_name_takes_the_fast_path():
    assert isinstance(compile_value("{{payload.data.id}}"), PathTemplate)
    for source in ("{{ payload.id }}!", "{{ payload['id'] }}", "{{ payload.id | upper }}"):
        assert not isinstance(compile_value(source), PathTemplate)


def test_fast_path_keeps_the_value_type():
    scope = {"payload": {"zip": "01234", "amount": 4900, "tags": ["a"]}}
    assert render_value(compile_value("{{ payload.zip }}"), scope) == "01234"
    assert render_value(compile_value("{{ payload.amount }}"), scope) == 4900
    assert render_value(compile_value("{{ payload.tags }}"), scope) == ["a"]
