"""The one Jinja2 environment rules and sources render with: sandboxed, native-typed, strict.

Native typing here means a template that is a single expression keeps its value's type
(``{{ amount / 100 }}`` stays a float, ``{{ payload.zip }}`` stays the string "01234").
Unlike Jinja's own NativeEnvironment we never ``literal_eval`` strings, so a zip code or
an id made of digits is not silently turned into an int. Mixed text renders as a string.

A template that is only a dotted name (``{{ payload.data.object.id }}``, the commonest
kind) is looked up directly in the nested dicts (:class:`PathTemplate`, several times
faster than a Jinja render); whenever that lookup would differ from Jinja's (a missing
key, a value that is not a plain dict, a key that is also a dict method name) the
template is rendered by Jinja, so results and errors are always Jinja's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import chain, islice
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, Undefined
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _concat(values: Iterable[Any]) -> Any:
    head = list(islice(values, 2))
    if not head:
        return None
    if len(head) == 1:
        if isinstance(head[0], Undefined):
            str(head[0])  # a lone missing key: StrictUndefined raises here, not later
        return head[0]
    return "".join(str(v) for v in chain(head, values))


class _NativeTemplate(Template):
    def render(self, *args: Any, **kwargs: Any) -> Any:
        ctx = self.new_context(dict(*args, **kwargs))
        try:
            return self.environment_class.concat(self.root_render_func(ctx))  # type: ignore[attr-defined]
        except Exception:
            return self.environment.handle_exception()


class SandboxedNativeEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = NativeCodeGenerator
    concat = staticmethod(_concat)  # type: ignore[assignment]


SandboxedNativeEnvironment.template_class = _NativeTemplate  # type: ignore[assignment]
_NativeTemplate.environment_class = SandboxedNativeEnvironment  # type: ignore[attr-defined]

ENV = SandboxedNativeEnvironment(undefined=StrictUndefined, autoescape=False)

__all__ = ["ENV", "TemplateError", "is_template", "compile_value", "render_value"]


_DOTTED = re.compile(r"\{\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\}\}")
_DICT_ATTRIBUTES = frozenset(dir(dict))  # Jinja's ``a.b`` tries getattr(a, "b") first


class PathTemplate:
    """``{{ a.b.c }}`` rendered by dict lookups, falling back to its Jinja template."""

    __slots__ = ("parts", "template")

    def __init__(self, parts: tuple[str, ...], template: Template):
        self.parts = parts
        self.template = template

    def render(self, scope: dict[str, Any]) -> Any:
        value: Any = scope
        for part in self.parts:
            if type(value) is not dict or part in _DICT_ATTRIBUTES or part not in value:
                return self.template.render(scope)
            value = value[part]
        return value


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def compile_value(value: Any) -> Any:
    """Compile every template string inside ``value`` (dicts and lists walked)."""
    if isinstance(value, dict):
        return {k: compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    if is_template(value):
        template = ENV.from_string(value)
        dotted = _DOTTED.fullmatch(value)
        return PathTemplate(tuple(dotted.group(1).split(".")), template) if dotted else template
    return value


def render_value(compiled: Any, scope: dict[str, Any]) -> Any:
    """Render what :func:`compile_value` made; constants come back unchanged."""
    if isinstance(compiled, dict):
        return {k: render_value(v, scope) for k, v in compiled.items()}
    if isinstance(compiled, list):
        return [render_value(v, scope) for v in compiled]
    if isinstance(compiled, Template | PathTemplate):
        return compiled.render(scope)
    return compiled
