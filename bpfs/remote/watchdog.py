"""Cutting a connection that takes too long: one thread runs a callback when a deadline passes.

Socket timeouts fire only when nothing arrives; a server that trickles a byte at a time never trips
them. The watchdog bounds such waits: at the deadline it shuts the socket down under the response,
and the blocked read returns at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("bpfs.watchdog")


class Watchdog:
    """One thread that runs a callback when its deadline passes, unless disarmed first: it cuts a
    response body that trickles bytes too slowly for any socket timeout to fire."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._armed: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, callback: Callable[[], None]) -> int:
        token = next(self._ids)
        with self._cond:
            heapq.heappush(self._heap, (deadline, token, callback))
            self._armed.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bpfs-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.discard(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed ones
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait is None or wait > 0:
                    self._cond.wait(wait)
                    continue
                _, token, callback = heapq.heappop(self._heap)
                self._armed.discard(token)
            try:
                callback()
            except Exception:  # noqa: BLE001 - a watchdog must outlive what it watches
                log.debug("watchdog callback failed", exc_info=True)


def cut(response: object) -> None:
    """Shut down the socket under a urllib3 response (the path botocore's own set_socket_timeout takes)."""
    try:
        sock = response._fp.fp.raw._sock  # type: ignore[attr-defined]
        sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass
