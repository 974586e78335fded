"""A create whose answer was lost: the server may have made the record all the same.

A POST that got no answer (the connection dropped, the reply timed out, a body cut short) or a 5xx (a
proxy's, in front of a server that went on) may have created the record. Telling the user "failed" then
leaves an orphan: an empty sample, or worse an analysis computing while the user starts it again. So
such a failure is followed by one fresh listing, and when the newest record of the account is the one
this request would have made, created since the request was sent, and not already another request's
answer, it is taken as this request's. Nothing is read on the happy path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from bpfs.errors import BpfsError, RemoteError

log = logging.getLogger("bpfs.writer")

R = TypeVar("R")


def unanswered(exc: BaseException) -> bool:
    """A failure after which the server may still have acted: no reply, a cut-off one, or a 5xx."""
    return isinstance(exc, RemoteError) and (exc.status is None or exc.status >= 500)


# how far the server's clock may be behind ours: a record created before the request by more than this
# is an older one (a machine without NTP drifts seconds a day; a larger skew only loses the adoption)
CLOCK_SKEW = 120.0


class Adopter:
    """Finds the record a lost create made; remembers what it handed out, so that it is handed out once."""

    def __init__(self) -> None:
        self._taken: set[int] = set()
        self._lock = threading.Lock()

    def answered(self, record_id: int) -> None:
        """A create that got its answer: its record is that request's, never a later one's."""
        with self._lock:
            self._taken.add(record_id)

    def made_anyway(self, listing: Callable[[], list[R]], ours: Callable[[R], bool], sent: float | None,
                    what: str) -> R | None:
        """The newest record of `listing()` when it is the one a request sent at `sent` (time.time(); None
        when the records carry no creation time) would have made, else None."""
        try:
            records = listing()
        except BpfsError as exc:
            log.warning("could not check whether the server created %s anyway: %s", what, exc)
            return None
        newest = max(records, key=lambda r: r.id, default=None)
        if newest is None or not ours(newest) or (sent is not None and newest.created < sent - CLOCK_SKEW):
            return None
        with self._lock:
            if newest.id in self._taken:
                return None
            self._taken.add(newest.id)
        return newest


def maybe_made(exc: BpfsError, what: str, where: str) -> RemoteError:
    """The error to tell when no record was found: the server may yet make it (a late answer)."""
    return RemoteError(f"{exc}; the server may still create {what}: look in {where} before trying again",
                       status=getattr(exc, "status", None))
