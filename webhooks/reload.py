"""The web picks up its config file's changes by itself: rules and sources are swapped in
whole, and a config that does not load is refused with one error line naming its problems
(file, path, field) while the web goes on serving the one it has.

Each gunicorn worker runs a :class:`ConfigWatcher` (started in :mod:`webhooks.wsgi`) that
looks at the file's modification time and size every :data:`CHECK_EVERY` seconds. Before,
a changed rule needed ``kill -HUP``, and a broken config then stopped every worker.
Celery workers, which read only the vendors, look too (:func:`worker.runtime.get_runtime`);
a task for a vendor a worker does not know yet is retried meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from config.errors import ConfigError
from config.loader import Config, demo_secrets, load_config, stamp_of
from config.logs import event as log_event

log = logging.getLogger("switchboard.web")

CHECK_EVERY = 2.0  # seconds between looks at the config file


class ConfigWatcher(threading.Thread):
    """Reloads ``app``'s config when its file changes; ``on_secrets`` is called with the
    new config's secrets (so log lines redact them) after each reload."""

    def __init__(
        self,
        app: Flask,
        on_secrets: Callable[[Iterable[str]], Any] | None = None,
        every: float = CHECK_EVERY,
    ):
        super().__init__(name="config-watcher", daemon=True)
        self.state = app.extensions["switchboard"]
        self.on_secrets = on_secrets
        self.every = every
        self.seen: tuple[int, ...] | None = None  # the first look compares the contents
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.check()
            except Exception:  # never let the thread die: it is how rules get reloaded
                log.exception("config watcher: unexpected error; going on")

    def check(self) -> bool:
        """Reload if the file changed since last seen; True if a new config is in use."""
        path = self.state.config.file
        stamp = stamp_of(path)
        if stamp == self.seen or stamp is None:  # unchanged, or mid-replace: next time
            return False
        config = self._load(path, stamp)
        if config is None or config == self.state.config:
            return False
        self.state.use_config(config)
        if self.on_secrets is not None:
            self.on_secrets(config.secrets)
        log_event(
            log, "config reloaded", file=path, sources=len(config.sources),
            vendors=len(config.vendors), rules=len(config.rules),
        )  # fmt: skip
        return True

    def _load(self, path: str, stamp: tuple[int, ...]) -> Config | None:
        """The changed config, or None when it cannot be used (logged once) or the file
        changed while it was read (an editor saving in place: looked at again next time)."""
        try:
            config = load_config(path)
        except ConfigError as exc:
            problems = str(exc).splitlines()
        else:
            why = None if self.state.settings.demo else demo_secrets(config)
            problems = [why] if why else []
        if stamp_of(path) != stamp:
            return None
        self.seen = stamp
        if problems:
            self.state.refused = problems
            log_event(
                log, "config not reloaded: the running one stays", at=logging.ERROR,
                file=path, problems=problems,
            )  # fmt: skip
            return None
        self.state.refused = []
        return config
