"""The ops service's failures (what the API, the page and the CLI turn into answers)::

OpsError
├── NotFoundError       no such dead letter / event / job
└── ConflictError       cannot replay (event expired, rule gone, replay in progress)
"""

from __future__ import annotations


class OpsError(Exception):
    pass


class NotFoundError(OpsError):
    pass


class ConflictError(OpsError):
    pass
