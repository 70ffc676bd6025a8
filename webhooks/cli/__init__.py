"""The ``switchboard`` command (click): run the parts, check config, dry-run rules, ops.

Exit codes: 0 success, 1 a failure the command reports (config errors, not found),
2 usage errors (click's own). One module per group of commands; :mod:`.base` holds what
they share.
"""

from __future__ import annotations

from webhooks.cli import checking, dead_letters, events, running  # noqa: F401 (commands)
from webhooks.cli.base import main

__all__ = ["main"]
