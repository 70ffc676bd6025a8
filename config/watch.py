"""The config file as a running process watches it: the web (webhooks.reload) and each
worker (worker.runtime) ask :meth:`ConfigFile.changed` now and then, and get a new config
only when the file changed, was not changing while read, and loads.

A config that does not load is refused with one ERROR line naming each problem, once per
change of the file; the process keeps the config it has. The first look compares the
contents with the running config (a change between start-up and that look is not missed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from config.errors import ConfigError
from config.loader import load_config
from config.logs import event as log_event
from config.model import Config


def stamp_of(path: str) -> tuple[int, ...] | None:
    """(inode, modification and change times in ns, size) of the config file at ``path``
    (a symlink followed, as Kubernetes swaps them), or None when it cannot be read: what the
    web and the workers compare to see it changed. Replace the file whole (write a new one,
    rename it over) rather than edit it in place: a half-written file may still load."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size


class ConfigFile:
    """``path`` as last seen; ``refuse`` may name a reason to refuse a config that loads
    (the web's: public demo secrets). ``secrets``: every secret any config this process
    used had (log redaction keeps them: a task begun under an older one may log one)."""

    def __init__(
        self,
        path: str,
        log: logging.Logger,
        refuse: Callable[[Config], str | None] | None = None,
    ):
        self.path = path
        self.log = log
        self.refuse = refuse
        self.stamp: tuple[int, ...] | None = None  # None: not compared yet
        self.refused: list[str] = []  # the problems of the last config refused, if any
        self.secrets: set[str] = set()

    def changed(self, running: Config) -> Config | None:
        """The file's config if it differs from ``running`` and may be used, else None."""
        self.secrets.update(running.secrets)
        stamp = stamp_of(self.path)
        if stamp is None or stamp == self.stamp:  # unchanged, or mid-replace: next time
            return None
        config, problems = self._load()
        if stamp_of(self.path) != stamp:  # saved in place while read: looked at again
            return None
        was_refused, self.stamp, self.refused = bool(self.refused), stamp, problems
        if problems:
            log_event(
                self.log, "config not reloaded: the running one stays", at=logging.ERROR,
                file=self.path, problems=problems,
            )  # fmt: skip
            return None
        if config is None or config == running:
            if was_refused:  # the ERROR above is no longer the last word on the file
                log_event(
                    self.log, "config file loads again: it is the running one", file=self.path
                )
            return None
        self.secrets.update(config.secrets)
        return config

    def _load(self) -> tuple[Config | None, list[str]]:
        """(the config, []) or (None or a loaded one refused, its problems)."""
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            return None, str(exc).splitlines()
        except Exception as exc:  # a loader bug: refused once per change, not every look
            self.log.exception("config not reloaded: loading it failed unexpectedly")
            # its message stays in the log: /readyz shows this line, and an unexpected
            # error's text may quote a value of the file (a secret of a config not loaded)
            return None, [f"{self.path}: could not be loaded ({type(exc).__name__}; see the log)"]
        why = self.refuse(config) if self.refuse else None
        return config, [why] if why else []
