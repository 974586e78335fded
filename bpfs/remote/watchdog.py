"""Cutting a connection that takes too long: one thread runs a callback when a deadline passes.

Socket timeouts fire only when nothing arrives; a server that trickles a byte at a time never trips
them. The watchdog bounds such waits: at the deadline it shuts the socket down under the response,
and the blocked read returns at once. Bodies are watched by their readers (api.py, s3.py); a reply's
status line and headers, read inside urllib3 before any caller sees a response, by `bounded_replies`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("bpfs.watchdog")
COMPACT_AT = 4096  # timers held before disarmed ones are dropped early: a few hundred KiB at most


class Timer:
    """One armed deadline. `extend` only moves a number (no lock, no wakeup): a stream of 1 GB/s extends
    its deadline a thousand times a second, and the watchdog looks at it only when the old one is due."""

    __slots__ = ("deadline", "callback", "armed")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline, self.callback, self.armed = deadline, callback, True

    def extend(self, deadline: float) -> None:
        self.deadline = max(self.deadline, deadline)


class Watchdog:
    """One thread that runs a callback when its deadline passes, unless disarmed first: it cuts a
    response body that trickles bytes too slowly for any socket timeout to fire. The thread wakes only
    when the earliest deadline is due or moves earlier, never for each arm or extension."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        with self._cond:
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline, next(self._ids), timer))
            if len(self._heap) > COMPACT_AT:
                self._compact()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bpfs-watchdog", daemon=True)
                self._thread.start()
            if earliest is None or deadline < earliest:
                self._cond.notify()
        return timer

    def disarm(self, timer: Timer) -> None:
        timer.armed = False  # dropped from the heap when it comes due (or sooner, see _run)

    def pending(self) -> int:
        """Timers still held (armed, or disarmed and not yet dropped): bounded by what is in flight."""
        with self._cond:
            return len(self._heap)

    def _compact(self) -> None:
        """Drop disarmed timers before they come due (finished requests, thousands a minute on a busy mount)."""
        self._heap = [entry for entry in self._heap if entry[2].armed]
        heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                while self._heap:
                    due, _, timer = self._heap[0]
                    if not timer.armed:
                        heapq.heappop(self._heap)
                    elif timer.deadline > due:  # extended meanwhile: requeue at its current deadline
                        heapq.heapreplace(self._heap, (timer.deadline, next(self._ids), timer))
                    else:
                        break
                wait = self._heap[0][0] - now if self._heap else None
                if wait is None or wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, timer = heapq.heappop(self._heap)
                timer.armed = False
            try:
                timer.callback()
            except Exception:  # noqa: BLE001 - a watchdog must outlive what it watches
                log.debug("watchdog callback failed", exc_info=True)


def cut(response: object) -> None:
    """Shut down the socket under a urllib3 response (the path botocore's own set_socket_timeout takes)."""
    try:
        sock = response._fp.fp.raw._sock  # type: ignore[attr-defined]
        sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass


class _BoundedReply:
    """A urllib3 connection whose reply's status line and headers must arrive within `reply_bound`
    seconds of the request: a server that sends them a byte a second held a read for 7 minutes."""

    reply_bound = 30.0
    watchdog: Watchdog

    def getresponse(self, *args, **kwargs):  # noqa: ANN202 - urllib3's signature
        sock = getattr(self, "sock", None)
        timer = self.watchdog.arm(time.monotonic() + self.reply_bound, lambda: _shut(sock))
        try:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]
        finally:
            self.watchdog.disarm(timer)


def bounded_replies(pools: Mapping[str, type], bound: float) -> dict[str, type]:
    """Subclasses of urllib3 connection pool classes (by scheme, as a PoolManager's
    `pool_classes_by_scheme`) whose connections cut a reply whose headers take more than `bound` s."""
    watchdog = Watchdog()
    out = {}
    for scheme, pool in pools.items():
        connection = type(f"Bounded{pool.ConnectionCls.__name__}", (_BoundedReply, pool.ConnectionCls),
                          {"reply_bound": bound, "watchdog": watchdog})
        out[scheme] = type(f"Bounded{pool.__name__}", (pool,), {"ConnectionCls": connection})
    return out


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
