"""The one Jinja2 environment rules and sources render with: sandboxed, native-typed, strict.

Native typing here means a template that is a single expression keeps its value's type
(``{{ amount / 100 }}`` stays a float, ``{{ payload.zip }}`` stays the string "01234").
Unlike Jinja's own NativeEnvironment we never ``literal_eval`` strings, so a zip code or
an id made of digits is not silently turned into an int. Mixed text renders as a string.

A template that is only a dotted name (``{{ payload.data.object.id }}``, the commonest
kind) is looked up directly in the nested dicts (:class:`PathTemplate`, several times
faster than a Jinja render); whenever that lookup would differ from Jinja's (a missing
key, a value that is not a plain dict) the template is rendered by Jinja, so results and
errors are always Jinja's own. A key wins over a dict method of the same name
(``payload.items``), in both.

Whatever a template gives is JSON data (:func:`plain`): a ``map``/``select`` generator
becomes a list, a lone constant keeps its type (``{{ 4900 / 100 }}`` is 49.0), ``None``
in mixed text is nothing (not "None"), and a template that writes nothing leaves its
field out (it is "" on its own: a target, a source's id).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import chain, islice
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

MAX_POWER = 1000  # 2 ** 1000 is plenty for a template; 10 ** 10 ** 9 is a hung thread
MAX_POWER_BITS = 4096  # and a huge base to a small power is as slow
TIME_LIMIT = 1.0  # seconds one webhook's templates may run (they take microseconds)

_deadline = threading.local()  # .at: time.monotonic() past which a render stops


@contextmanager
def time_limit(seconds: float = TIME_LIMIT) -> Iterator[None]:
    """Renders inside share one deadline (a whole request's rules: every event of a
    HubSpot batch); one outside any such block gets its own. Past it, a loop, a call, a
    filter or a test raises SecurityError (a mapping error): nested loops over a
    sender's lists, a macro calling itself twice, or ``select('in', payload.big)`` over
    a big list would otherwise hold a web thread for hours."""
    outer = getattr(_deadline, "at", None)
    if outer is None:
        _deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        if outer is None:
            _deadline.at = None


def _check_time() -> None:
    at = getattr(_deadline, "at", None)
    if at is not None and time.monotonic() > at:
        raise SecurityError(f"the templates ran longer than {TIME_LIMIT:g} s on this webhook")


def _timed(values: Iterable[Any]) -> Iterator[Any]:
    """What every ``{% for %}`` loops over: the same items, the clock looked at as it goes."""
    for n, value in enumerate(values):
        if not n & 63:
            _check_time()
        yield value


def _text(value: Any) -> str:
    """A part of mixed text: ``None`` (a JSON null) is nothing, not the word "None"; data
    only (a generator or a method would be written as its Python repr)."""
    if value is None:
        return ""
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined raises, naming the missing key
    if not isinstance(value, str | int | float | list | tuple | Mapping):
        raise TypeError(f"the template wrote a {type(value).__name__}, not data, into text")
    return str(value)


class _Nothing:
    """What a template that writes nothing gives (``{% if payload.company %}...`` on an
    event without one): its field is left out, not blanked at the vendor."""

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING = _Nothing()


def _concat(values: Iterable[Any]) -> Any:
    head = list(islice(values, 2))
    if not head:
        return NOTHING
    if len(head) == 1:
        if isinstance(head[0], Undefined):
            str(head[0])  # a lone missing key: StrictUndefined raises here, not later
        return plain(head[0])
    return "".join(_text(v) for v in chain(head, values))


def plain(value: Any) -> Any:
    """``value`` as JSON data, what a vendor can be sent: a filter's generator (``map``,
    ``select``) becomes a list, and anything else that is not data (a dict method reached
    by ``payload.values``, a NaN) is a TypeError, which makes a ``mapping_error``."""
    if isinstance(value, Undefined):
        str(value)  # a missing key inside a list or dict: StrictUndefined raises, naming it
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if value.bit_length() > 64:  # no vendor field is wider; JSON readers lose digits
            raise TypeError("the template gave an integer too large for any vendor field")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"the template gave {value!r}, which is no JSON number")
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [plain(v) for v in value]
    raise TypeError(f"the template gave a {type(value).__name__}, not data (text, number, ...)")


def _no_wide_widths(values: Iterable[Any]) -> None:
    """A width or count a sender may set, passed to string formatting: at most MAX_RANGE."""
    if any(isinstance(v, int) and v > MAX_RANGE for v in values):
        raise SecurityError(f"a width above {MAX_RANGE} is not allowed")


class _NativeCodeGenerator(NativeCodeGenerator):
    def _output_const_repr(self, group: Iterable[Any]) -> str:
        # a template that is one constant ({{ 4900 / 100 }}, {{ none }}) keeps its type, as
        # one that is not constant does; Jinja's own makes it text ("49.0", "None")
        parts = list(group)
        return repr(parts[0]) if len(parts) == 1 else repr("".join(map(_text, parts)))


class _NativeTemplate(Template):
    def render(self, *args: Any, **kwargs: Any) -> Any:
        ctx = self.new_context(dict(*args, **kwargs))
        try:
            with time_limit():
                return self.environment_class.concat(self.root_render_func(ctx))  # type: ignore[attr-defined]
        except Exception:
            return self.environment.handle_exception()


class SandboxedNativeEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _NativeCodeGenerator
    concat = staticmethod(_concat)  # type: ignore[assignment]

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # every loop's items pass the clock (_timed)
            loop.iter = nodes.Filter(loop.iter, "_timed", [], [], None, None, lineno=loop.lineno)
        return tree

    # ``'-' * payload.n`` or ``10 ** payload.n`` with a sender's n would take the web
    # thread's memory or time; ranges are already capped at MAX_RANGE items
    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):  # "%0*d" % (payload.n, 1)
            _no_wide_widths(right if isinstance(right, tuple) else (right,))
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                repeats = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if repeats and len(seq) * times > MAX_RANGE:
                    raise SecurityError(f"a repeat longer than {MAX_RANGE} is not allowed")
        elif operator == "**" and isinstance(right, int | float) and isinstance(left, int | float):
            bits = left.bit_length() if isinstance(left, int) else 64
            if abs(right) > MAX_POWER or bits * abs(right) > MAX_POWER_BITS:
                raise SecurityError("a power that large is not allowed")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # "x".center(payload.n), "{:>{}}".format(x, payload.n): a width a sender sets
        # (the sandbox hands str.format over wrapped: known by its qualified name)
        _check_time()  # a macro, or a recursive loop's loop(...), calling itself
        name = getattr(__obj, "__qualname__", "")
        if isinstance(getattr(__obj, "__self__", None), str) or name.startswith("str."):
            _no_wide_widths((*args, *kwargs.values()))
        return super().call(__context, __obj, *args, **kwargs)

    def call_filter(self, *args: Any, **kwargs: Any) -> Any:
        _check_time()  # map('filter'), once per item
        return super().call_filter(*args, **kwargs)

    def call_test(self, *args: Any, **kwargs: Any) -> Any:
        _check_time()  # select('in', payload.big), once per item
        return super().call_test(*args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``payload.items`` is the payload's ``items`` key when it has one (Stripe's
        subscriptions do), not the dict method of that name; Jinja tries the attribute
        first. Without such a key, methods work as before (``metadata.items()``)."""
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


SandboxedNativeEnvironment.template_class = _NativeTemplate  # type: ignore[assignment]
_NativeTemplate.environment_class = SandboxedNativeEnvironment  # type: ignore[attr-defined]


class MissingKey(StrictUndefined):
    """A key the event lacks: an error wherever its value is used (named: a typo in a rule
    is not sent as ""), but false as a test, as Jinja's own: ``{% if payload.company %}``
    on an event without one writes nothing, and the field is left out."""

    __slots__ = ()

    def __bool__(self) -> bool:  # type: ignore[override]  # StrictUndefined's raises
        return False


ENV = SandboxedNativeEnvironment(undefined=MissingKey, autoescape=False)
ENV.filters["_timed"] = _timed

__all__ = ["ENV", "TemplateError", "is_template", "compile_value", "render_value", "time_limit"]


_DOTTED = re.compile(r"\{\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\}\}")


class PathTemplate:
    """``{{ a.b.c }}`` rendered by dict lookups, falling back to its Jinja template."""

    __slots__ = ("parts", "template")

    def __init__(self, parts: tuple[str, ...], template: Template):
        self.parts = parts
        self.template = template

    def render(self, scope: dict[str, Any]) -> Any:
        value: Any = scope
        for part in self.parts:
            if type(value) is not dict or part not in value:
                return self.template.render(scope)
            value = value[part]
        return plain(value)


#: template tags that load other templates: there are none to load, so they always fail
LOADING_TAGS = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def template_problems(tree: nodes.Template, known: Iterable[str], sees: str) -> list[str]:
    """What would make a template that parses fail on every event (a config error, not a
    dead letter or a 400 per event): tags that load templates, a name outside ``known``
    (``sees`` says which there are), a filter or test Jinja has not (one inside an
    ``{% if %}`` is only looked up when it runs)."""
    problems = []
    if tree.find(LOADING_TAGS) is not None:  # type: ignore[arg-type]
        problems.append("templates cannot extend, include or import other templates")
    if names := unknown_names(tree, known):
        problems.append(f"unknown name {names} ({sees})")
    for what, node, have in (
        ("filter", nodes.Filter, ENV.filters),
        ("test", nodes.Test, ENV.tests),
    ):
        if missing := sorted({n.name for n in tree.find_all(node)} - set(have)):  # type: ignore[attr-defined]
            problems.append(f"no {what} named {', '.join(map(repr, missing))}")
    return problems


def unknown_names(tree: nodes.Template, known: Iterable[str]) -> str | None:
    """The names ``tree`` uses that are neither ``known`` nor a global, quoted and joined
    (``'paylod'``), or None: a typo is a config error, not a failure on every event."""
    unknown = sorted(meta.find_undeclared_variables(tree) - set(known) - set(ENV.globals))
    return ", ".join(repr(n) for n in unknown) or None


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
    """Render what :func:`compile_value` made; constants come back unchanged. A template
    that writes nothing is left out of its dict or list, and is "" on its own."""
    value = render_part(compiled, scope)
    return "" if value is NOTHING else value


def render_part(compiled: Any, scope: dict[str, Any]) -> Any:
    """:func:`render_value` for one member of a dict: :data:`NOTHING` when its template
    wrote nothing (its caller leaves it out)."""
    if isinstance(compiled, dict):
        out = {k: render_part(v, scope) for k, v in compiled.items()}
        return {k: v for k, v in out.items() if v is not NOTHING}
    if isinstance(compiled, list):
        return [v for v in (render_part(c, scope) for c in compiled) if v is not NOTHING]
    if isinstance(compiled, Template | PathTemplate):
        return compiled.render(scope)
    return compiled
