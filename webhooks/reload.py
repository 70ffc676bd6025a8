"""The web picks up its config file's changes by itself: rules and sources are swapped in
whole, and a config that does not load is refused with one error line naming its problems
(file, path, field) while the web goes on serving the one it has.

Each gunicorn worker runs a :class:`ConfigWatcher` (started in :mod:`webhooks.wsgi`) that
looks at the file every :data:`CHECK_EVERY` seconds (:class:`config.watch.ConfigFile`). Before,
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

from config.logs import event as log_event
from config.model import demo_secrets
from config.watch import ConfigFile

log = logging.getLogger("switchboard.web")

CHECK_EVERY = 2.0  # seconds between looks at the config file


class ConfigWatcher(threading.Thread):
    """Reloads ``app``'s config when its file changes; ``on_secrets`` is called with every
    secret any of its configs had (so log lines redact them) after each reload."""

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
        demo = self.state.settings.demo
        self.file = ConfigFile(self.state.config.file, log, refuse=None if demo else demo_secrets)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.check()
            except Exception:  # never let the thread die: it is how rules get reloaded
                log.exception("config watcher: unexpected error; going on")

    def check(self) -> bool:
        """Reload if the file changed since last seen; True if a new config is in use."""
        config = self.file.changed(self.state.config)
        self.state.refused = self.file.refused
        if config is None:
            return False
        self.state.use_config(config)
        if self.on_secrets is not None:
            self.on_secrets(self.file.secrets)
        log_event(
            log, "config reloaded", file=config.file, sources=len(config.sources),
            vendors=len(config.vendors), rules=len(config.rules),
        )  # fmt: skip
        return True
