"""Fault injection shared by the emulator's REST and S3 servers.

Tests arm a rule ("the next 2 GETs of keys matching /big/ answer 503 SlowDown"),
the server asks `take()` at the start of each request and acts on what it gets.
Rules are consumed in the order they were added; `times=None` means forever.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Fault:
    """What one matching request suffers. Several effects combine: delay first, then the rest."""

    method: str | None = None  # None matches every method
    path: str | None = None  # regex searched in the request path (without the query string)
    query: str | None = None  # regex searched in the raw query string
    status: int | None = None  # answer with this HTTP status instead of serving
    code: str | None = None  # S3 error code (SlowDown, InvalidObjectState, AccessDenied ...) or API message
    delay: float = 0.0  # sleep this long before answering (a stalled server)
    drop_after: int | None = None  # send headers and this many body bytes, then close the connection
    trickle: float | None = None  # send the body one byte every this many seconds (a server that crawls)
    trickle_headers: float | None = None  # the status line and headers too (no socket timeout ever fires)
    # extra response headers with `status` (a redirect's Location); on S3 without `status`, headers that replace
    # a GET's or HEAD's own (None drops one): a HEAD without a Content-Length, or with one that is not a number
    headers: dict[str, str | None] | None = None
    ignore_range: bool = False  # S3: answer a range GET 200 with the whole object (a proxy that drops Range)
    times: int | None = 1  # how many requests it applies to; None = until cleared
    hits: int = field(default=0, init=False)

    def matches(self, method: str, path: str, query: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        if self.query is not None and not re.search(self.query, query):
            return False
        return True


class Faults:
    """A thread-safe list of armed faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(self, **kwargs) -> Fault:
        rule = Fault(**kwargs)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str, query: str = "") -> Fault | None:
        """The first armed rule that matches this request, consumed once; None when the request is healthy."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, query):
                    rule.hits += 1
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule
        return None


class SlowHeaders:
    """A request handler mixin: with `slow_headers` set (from a fault's `trickle_headers`), the status line
    and headers go out one byte every that many seconds."""

    slow_headers: float | None = None

    def flush_headers(self) -> None:
        buffered = getattr(self, "_headers_buffer", None)
        if not self.slow_headers or not buffered:
            super().flush_headers()  # type: ignore[misc]
            return
        data, self._headers_buffer = b"".join(buffered), []
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])  # type: ignore[attr-defined]
            self.wfile.flush()  # type: ignore[attr-defined]
            time.sleep(self.slow_headers)
