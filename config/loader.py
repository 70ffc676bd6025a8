"""Load ``switchboard.yaml``: interpolate ``${VAR}``, validate, return a frozen :class:`Config`.

Every problem is collected (not just the first) and named by file, YAML path and cause:
unknown source in a rule, unknown vendor, unknown op, unknown or invalid field for that
op, template syntax error, missing environment variable, bad rate-limit string, ...
Values under a source's ``secret`` or a vendor's ``auth`` are remembered as secrets so
logs and dead letters can redact them.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError, nodes
from marshmallow import Schema, ValidationError
from marshmallow import fields as mfields

from config.errors import ConfigError, ConfigProblem
from config.model import ActionConfig, Config, RuleConfig, SourceConfig
from config.schemas import RuleSchema, SourceFrame, TopSchema, VendorSchema
from config.strict_yaml import expansion_problem, load_yaml
from webhooks.sources import SOURCE_KINDS
from webhooks.templating import ENV, is_template, template_problems
from worker.vendors import CONNECTORS
from worker.vendors.base import CircuitPolicy, RetryPolicy, VendorInstance

#: fields whose value is a list or mapping (it may hold templates); any other field
#: given a list or mapping is a config error, not a dead letter per event
CONTAINER_FIELDS = (mfields.List, mfields.Tuple, mfields.Dict, mfields.Nested, mfields.Raw)

# ${NAME} or ${NAME:-default} (the default is used when NAME is unset or empty)
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def url_credentials(url: str) -> list[str]:
    """The password in ``https://user:password@host`` (as written and decoded): a
    ``base_url`` may carry basic auth for a proxy in front of a vendor (httpx sends it)."""
    password = urllib.parse.urlsplit(url).password
    return [password, urllib.parse.unquote(password)] if password else []


#: what a rule's templates and ``if:`` see (webhooks.rules: the event's payload and facts)
RULE_NAMES = frozenset({"payload", "event"})


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = key if key else "''"  # an empty key named, not left out of the path
    return f"{path}.{key}" if path else str(key)


def flatten(messages: Any, path: str) -> list[tuple[str, str]]:
    """marshmallow's nested error dict -> (yaml path, message) pairs."""
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            if not isinstance(key, str) and isinstance(value, dict) and "key" in value:
                # a mapping's key that is no name (123:, ~:): marshmallow's {123: {"key": ..}}
                out.append((path, f"{key!r} is not a name: write names as text"))
                continue
            key = key if isinstance(key, int) else str(key)
            out += flatten(value, path if key == "_schema" else join(path, key))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [(path, "; ".join(messages))]
    if isinstance(messages, list):
        return [pair for m in messages for pair in flatten(m, path)]
    return [(path, str(messages))]


class _Loader:
    def __init__(self, file: str, env: Mapping[str, str]):
        self.file = file
        self.env = env
        self.problems: list[ConfigProblem] = []
        self.secrets: set[str] = set()
        self.defaulted: list[tuple[str, str]] = []
        self.vendor_kinds: dict[str, str] = {}  # vendor name -> a known kind

    def problem(self, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, path, message))

    def load_schema(self, schema: Schema, data: Any, path: str) -> dict | None:
        try:
            return schema.load(data)
        except ValidationError as exc:
            for where, message in flatten(exc.messages, path):
                self.problem(where, message)
            return None

    # -- ${VAR} ------------------------------------------------------------------------
    def interpolate(self, value: Any, path: str, keys: tuple[Any, ...] = ()) -> Any:
        """``value`` with each ``${NAME}`` replaced; ``keys`` is where it sits (the YAML
        keys and indexes, as ``path`` spells them)."""
        if isinstance(value, dict):
            return {
                k: self.interpolate(v, join(path, str(k)), (*keys, k)) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.interpolate(v, join(path, i), (*keys, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        signing_secret = len(keys) >= 3 and keys[0] == "sources" and keys[2] == "secret"

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if default is not None and not self.env.get(name):
                if signing_secret:
                    self.defaulted.append((path, name))
                return default
            if name not in self.env:
                self.problem(path, f"environment variable {name} is not set")
                return match.group(0)  # keep "${NAME}" so no second, misleading error follows
            return self.env[name]

        return VAR.sub(substitute, value)

    def collect_secrets(self, value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                self.collect_secrets(v)
        elif isinstance(value, list):
            for v in value:
                self.collect_secrets(v)
        elif isinstance(value, str) and len(value) >= 4:
            self.secrets.add(value)

    # -- sections ----------------------------------------------------------------------
    def sources(self, raw: Mapping[str, Any]) -> dict[str, SourceConfig]:
        out = {}
        for name, block in raw.items():
            path = join("sources", name)
            frame = self.load_schema(SourceFrame(), block, path)
            if frame is None:
                continue
            kind = frame.pop("kind")
            if kind not in SOURCE_KINDS:
                self.problem(
                    join(path, "kind"),
                    f"unknown source kind {kind!r} (known: {', '.join(sorted(SOURCE_KINDS))})",
                )
                continue
            self.collect_secrets(frame.get("secret"))
            settings = self.load_schema(SOURCE_KINDS[kind].schema(), frame, path)
            if settings is not None:
                out[name] = SourceConfig(name, kind, settings)
        return out

    def vendors(self, raw: Mapping[str, Any]) -> dict[str, VendorInstance]:
        out = {}
        for name, block in raw.items():
            path = join("vendors", name)
            kind = block.get("kind") if isinstance(block, dict) else None
            if isinstance(kind, str) and kind in CONNECTORS:
                # its actions are checked against its connector even if the rest is wrong,
                # so one pass names every problem (not the actions' only once it is fixed)
                self.vendor_kinds[name] = kind
            data = self.load_schema(VendorSchema(), block, path)
            if data is None:
                continue
            connector = CONNECTORS.get(data["kind"])
            if connector is None:
                self.problem(
                    join(path, "kind"),
                    f"unknown vendor kind {data['kind']!r} "
                    f"(known: {', '.join(sorted(CONNECTORS))})",
                )
                continue
            self.collect_secrets(data["auth"])
            self.collect_secrets(url_credentials(data["base_url"]))
            auth = self.load_schema(connector.auth_schema(), data["auth"], join(path, "auth"))
            options = self.load_schema(
                connector.options_schema(), data["options"], join(path, "options")
            )
            if auth is None or options is None:
                continue
            out[name] = VendorInstance(
                name=name,
                kind=data["kind"],
                base_url=data["base_url"],
                auth=auth,
                options=options,
                rate_limit=data["rate_limit"],
                retry=RetryPolicy(**data["retry"]),
                circuit=CircuitPolicy(**data["circuit"]),
                timeout=data["timeout"],
                max_in_flight=data["max_in_flight"],
                # unset: the vendor file's default (PerfexCRM, PortaBilling: 5 in flight);
                # `concurrency: null` lifts it
                concurrency=(
                    data["concurrency"] if "concurrency" in block else connector.concurrency
                ),
            )
        return out

    def rules(
        self,
        raw: list[Any],
        sources: Mapping[str, SourceConfig],
        raw_vendors: Mapping[str, Any],
    ) -> list[RuleConfig]:
        out, names = [], set()
        for index, block in enumerate(raw):
            path = join("rules", index)
            data = self.load_schema(RuleSchema(), block, path)
            if data is None:
                continue
            if data["name"] in names:
                self.problem(join(path, "name"), f"duplicate rule name {data['name']!r}")
            names.add(data["name"])
            if data["source"] not in sources and data["source"] not in self.raw_sources:
                self.problem(join(path, "source"), f"unknown source {data['source']!r}")
            if data["if_"] is not None:
                self.check_expression(data["if_"], join(path, "if"))
            actions = []
            for i, action in enumerate(data["actions"]):
                apath = join(join(path, "actions"), i)
                self.check_action(action, apath, raw_vendors)
                actions.append(
                    ActionConfig(action["vendor"], action["op"], action["target"], action["fields"])
                )
            self.check_overlap(actions, path)
            out.append(
                RuleConfig(
                    data["name"], data["source"], tuple(data["events"]), data["if_"], tuple(actions)
                )
            )
        return out

    def check_overlap(self, actions: list[ActionConfig], path: str) -> None:
        """Two actions of one rule setting a field of the same record run as two tasks of
        one event, equally new: which value the vendor keeps would be chance."""
        seen: dict[tuple[str, str, str, str], int] = {}
        for i, action in enumerate(actions):
            for name in action.fields:
                key = (action.vendor, action.op, repr(action.target), name)
                if key in seen:
                    self.problem(
                        join(join(join(path, "actions"), i), f"fields.{name}"),
                        f"actions[{seen[key]}] sets {name} of the same record too; which "
                        "value stays would be chance: set it in one action",
                    )
                seen.setdefault(key, i)

    def check_action(
        self,
        action: dict,
        path: str,
        raw_vendors: Mapping[str, Any],
    ) -> None:
        kind = self.vendor_kinds.get(action["vendor"])
        if kind is None:
            if action["vendor"] not in raw_vendors:  # else: its own error is reported already
                self.problem(join(path, "vendor"), f"unknown vendor {action['vendor']!r}")
            return
        connector = CONNECTORS[kind]
        schema_cls = connector.ops.get(action["op"])
        if schema_cls is None:
            self.problem(
                join(path, "op"),
                f"{kind} has no op {action['op']!r} (known: {', '.join(sorted(connector.ops))})",
            )
            return
        self.check_template_or_value(action["target"], connector.target_field, join(path, "target"))
        self.check_fields(
            schema_cls(), action["fields"], join(path, "fields"), f"{kind}.{action['op']}"
        )

    def check_fields(self, schema: Schema, values: Mapping[str, Any], path: str, what: str) -> None:
        by_key = {(f.data_key or name): f for name, f in schema.fields.items()}
        for key, value in values.items():
            fpath = join(path, key)
            declared = by_key.get(key)
            if declared is None:
                self.problem(
                    fpath, f"unknown field {key!r} for {what} (known: {', '.join(sorted(by_key))})"
                )
            elif isinstance(declared, mfields.Nested) and isinstance(value, dict):
                nested = declared.schema
                self.check_fields(nested, value, fpath, f"{what}.{key}")
            else:
                self.check_template_or_value(value, declared, fpath)

    def check_template_or_value(self, value: Any, declared: mfields.Field, path: str) -> None:
        if isinstance(value, list) and isinstance(declared, mfields.List):
            for i, item in enumerate(value):  # each constant item checked, as a field is
                self.check_template_or_value(item, declared.inner, join(path, i))
            return
        if isinstance(value, dict | list) and isinstance(declared, CONTAINER_FIELDS):
            self.check_templates_in(value, path)
            return
        if is_template(value):
            self.check_template(value, path)
            return
        try:
            declared.deserialize(value)
        except ValidationError as exc:
            for where, message in flatten(exc.messages, path):
                self.problem(where, f"{message} (got {value!r})")

    def check_templates_in(self, value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self.check_templates_in(v, join(path, str(k)))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.check_templates_in(v, join(path, i))
        elif is_template(value):
            self.check_template(value, path)

    def check_template(self, text: str, path: str) -> None:
        try:
            tree = ENV.parse(text)
            ENV.from_string(tree)  # compiled from the tree: parsed once
        except TemplateSyntaxError as exc:
            self.problem(path, f"template syntax error: {exc.message} (line {exc.lineno})")
            return
        self.check_tree(tree, path)

    def check_expression(self, text: str, path: str) -> None:
        try:
            ENV.compile_expression(text)
        except TemplateSyntaxError as exc:
            self.problem(path, f"expression syntax error: {exc.message}")
            return
        self.check_tree(ENV.parse("{{ " + text + " }}"), path)

    def check_tree(self, tree: nodes.Template, path: str) -> None:
        """A name a rule cannot see (``paylod.amount``) is a typo: as a field it failed on
        every event, and in an ``if:`` it was quietly never true; so were unknown filters."""
        for problem in template_problems(tree, RULE_NAMES, "a rule sees payload and event"):
            self.problem(path, problem)

    # -- whole file --------------------------------------------------------------------
    def load(self, text: str) -> Config:
        try:
            raw = load_yaml(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError([ConfigProblem(self.file, where, f"not valid YAML: {exc}")]) from None
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise ConfigError([ConfigProblem(self.file, "", f"not valid YAML: {exc}")]) from None
        if not isinstance(raw, dict):
            raise ConfigError([ConfigProblem(self.file, "", "the top level must be a mapping")])
        if problem := expansion_problem(raw):
            raise ConfigError([ConfigProblem(self.file, "", problem)])
        raw = self.interpolate(raw, "")
        top = self.load_schema(TopSchema(), raw, "")
        if top is None:
            raise ConfigError(self.problems)
        self.raw_sources = top["sources"]
        sources = self.sources(top["sources"])
        vendors = self.vendors(top["vendors"])
        rules = self.rules(top["rules"], sources, top["vendors"])
        if self.problems:
            raise ConfigError(self.problems)
        return Config(
            self.file,
            sources,
            vendors,
            tuple(rules),
            frozenset(self.secrets),
            tuple(self.defaulted),
        )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config at ``path``; raises :class:`ConfigError`."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})"
        raise ConfigError([ConfigProblem(file, "", problem)]) from None
    try:
        return _Loader(file, os.environ if env is None else env).load(text)
    except RecursionError:  # YAML nested deeper than the parser or the checks can walk
        raise ConfigError([ConfigProblem(file, "", "nested too deeply")]) from None
