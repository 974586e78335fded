"""Running counters behind `.bpfs/stats`: what a user reads when a mount feels slow."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable

from bpfs.redact import redact

COUNTERS = (
    "api_requests",
    "api_errors",
    "s3_requests",
    "s3_errors",
    "s3_bytes_fetched",
    "bytes_served",
    "cache_hits",
    "cache_misses",
    "uploads_in_flight",
    "uploads_completed",
    "uploads_failed",
    "bytes_uploaded",
    "upload_parts_spilled",  # parts filled in a temporary file: the mount's memory budget for them was spent
    "fuse_errors",
    "analyses_started",  # through analyses/new/
    "analyses_refused",
    "bad_records",  # records (or their files/uploads) skipped as malformed, each with a log line
    "bad_files",  # files listed but unreadable: their size could not be learned, or S3 lacks them
    "disk_hits",  # the disk cache (-o disk_cache=): blocks read from disk
    "disk_misses",
    "disk_writes",
    "disk_evictions",
    "disk_corrupt",  # blocks whose checksum failed: deleted and fetched again
    "disk_dropped",  # blocks not written because the writer was behind
    "disk_full",
)


class Stats:
    """Thread-safe counters plus the last few errors (path, what failed, errno)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._errors: deque[dict] = deque(maxlen=20)
        self._sections: dict[str, Callable[[], object]] = {}
        self.started = time.time()

    def section(self, name: str, provider: Callable[[], object]) -> None:
        """A part of the snapshot another component keeps (the uploads in flight, with their progress)."""
        with self._lock:
            self._sections[name] = provider

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def get(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    def error(self, path: str, what: str, errno: int) -> None:
        with self._lock:
            self._errors.append({"time": round(time.time(), 3), "path": redact(path), "error": redact(what),
                                 "errno": errno})

    def snapshot(self) -> dict:
        with self._lock:
            out: dict = dict(self._counters)
            out["uptime_seconds"] = round(time.time() - self.started, 3)
            out["last_errors"] = list(self._errors)
            sections = dict(self._sections)
        for name, provider in sections.items():
            out[name] = provider()
        return out

    def render(self) -> bytes:
        return (json.dumps(self.snapshot(), indent=2, sort_keys=True) + "\n").encode()
