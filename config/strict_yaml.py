"""YAML as the config is read: safe types only, and a key given twice in one mapping is
an error (plain YAML keeps the last, so a second ``stripe:`` block silently replaced the
first). Keys merged in with ``<<:`` may be overridden, as YAML means them to be."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys."""


def _mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping says so itself
            break
        if first is not None:
            raise ConstructorError(
                None,
                None,
                f"key {key!r} is given twice in one mapping (first on line {first + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> Any:
    """The document in ``text``; ``yaml.YAMLError`` (with a mark) if it is not valid."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


#: most values a config may hold once YAML aliases are expanded (a real one holds hundreds)
MAX_VALUES = 100_000


def expansion_problem(raw: Any) -> str | None:
    """Why ``raw`` (as YAML built it: an alias is the anchored object itself, shared) cannot
    be walked, or None: an alias inside its own anchor (a cycle), or aliases of aliases
    that expand past :data:`MAX_VALUES` (366 bytes of "billion laughs" made a copy that
    never ended and hung every process that reloaded it)."""
    seen = 0
    stack: list[tuple[Any, tuple[int, ...]]] = [(raw, ())]
    while stack:
        value, above = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            return f"holds more than {MAX_VALUES:,} values once its YAML aliases are expanded"
        if isinstance(value, dict | list):
            if id(value) in above:
                return "a YAML alias refers to the anchor it is inside"
            inner = (*above, id(value))
            stack.extend((v, inner) for v in (value.values() if isinstance(value, dict) else value))
    return None
