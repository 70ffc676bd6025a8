"""The pooled httpx client a connector sends through, trimmed for a worker's hot path.

Two things httpx does per request that a connector does not need, and that cost a
worker ~20% of its CPU per task (measured with cProfile, see BENCHMARKS.md):

- **cookies**: the client parses every answer's ``Set-Cookie`` into a jar (through
  urllib's cookie machinery). Connectors authenticate with headers, tokens or a session
  id in the body, never with cookies, and a worker must not carry state from one task's
  answer into another's request, so the jar is switched off.
- **URL joining**: a relative path is parsed, then joined to ``base_url`` and parsed
  again, on every call. :meth:`VendorClient.url` joins each path once and keeps the
  result (a bounded cache: targets repeat, and a miss costs what a call cost before).
"""

from __future__ import annotations

import functools
from typing import Any

import httpx

URL_CACHE_SIZE = 4096


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps nothing: answers' cookies are dropped unread."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        return None


class VendorClient(httpx.Client):
    """``httpx.Client`` without a cookie jar, with absolute URLs cached per path."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = functools.lru_cache(maxsize=URL_CACHE_SIZE)(self._join)

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, value: Any) -> None:
        if value:
            raise ValueError("VendorClient keeps no cookies")

    def _join(self, path: str) -> httpx.URL:
        """``path`` (relative to ``base_url``, or absolute) as a parsed absolute URL."""
        return self._merge_url(path)


_NO_COOKIES = _NoCookies()
