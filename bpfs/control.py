"""The `.bpfs/` control files: `stats` (the running counters, as JSON) and `refresh` (drop cached listings).

Reading `refresh` drops every cached listing, which a read-only mount can still do; writing paths
to it (`echo analyses/10000 > .bpfs/refresh`) drops those subtrees when the file is closed.
Neither is listed in `ls`; both resolve.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable

from bpfs.errors import BpfsError, NotFound
from bpfs.nodes import BytesHandle, Entry, Handle, Subtree, directory, parts
from bpfs.stats import Stats

log = logging.getLogger("bpfs.fs")

PREFIX = "/.bpfs"
CONTROL_LIMIT = 64 << 10  # what one write of .bpfs/refresh may hold: a few hundred paths


class RefreshWrite(Handle):
    """Paths written to .bpfs/refresh, acted on at close."""

    direct_io = True

    def __init__(self, path: str, refresh: Callable[[str], None]) -> None:
        super().__init__(path)
        self.buffer = bytearray()
        self.refresh = refresh

    def write(self, data: bytes, offset: int, caller: int | None = None) -> int:
        if len(self.buffer) + len(data) > CONTROL_LIMIT:
            raise BpfsError(f"{self.path}: at most {CONTROL_LIMIT} bytes of paths at once", errno.EFBIG)
        self.buffer += data
        return len(data)

    def flush(self, caller: int | None) -> None:
        for line in bytes(self.buffer).decode(errors="replace").splitlines():
            if line.strip():
                self.refresh(line.strip())
                log.info("refresh: dropped cached listings under %s", line.strip())
        self.buffer.clear()


class ControlFiles(Subtree):
    def __init__(self, stats: Stats, refresh: Callable[[str], None], ro: bool) -> None:
        super().__init__(ro)
        self.stats, self.refresh = stats, refresh
        self.started = time.time()

    def getattr(self, path: str) -> Entry:
        rel = parts(path)[1:]
        if not rel:
            return directory(self.started)
        if len(rel) == 1 and rel[0] in ("stats", "refresh"):
            return Entry(False, mtime=time.time(), dynamic=True, writable=rel[0] == "refresh")
        raise NotFound(f"{path}: no such file")

    def readdir(self, path: str) -> dict[str, Entry]:
        if parts(path)[1:]:
            raise NotFound(f"{path}: no such directory")
        return {name: self.getattr(f"{PREFIX}/{name}") for name in ("stats", "refresh")}

    def open(self, path: str, flags: int, caller: int | None) -> Handle:
        entry = self.getattr(path)
        if entry.is_dir:
            raise BpfsError(f"{path}: is a directory", errno.EISDIR)
        name = parts(path)[-1]
        if flags & os.O_ACCMODE != os.O_RDONLY:
            if name != "refresh":
                raise self.refuse(path, "open for writing")
            if self.ro:
                raise self.refuse(path, "write")
            return RefreshWrite(path, self.refresh)
        if name == "refresh":  # reading it is the refresh a read-only mount can still do
            self.refresh("/")
            return BytesHandle(path, b"dropped all cached listings\n")
        return BytesHandle(path, self.stats.render())

    def truncate(self, path: str, length: int) -> None:
        if parts(path)[-1:] == ["refresh"] and not self.ro:
            return  # `echo PATH > .bpfs/refresh` truncates first
        raise self.refuse(path, "truncate")
