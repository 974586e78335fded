"""The drop box `analyses/new/`: starting analyses by writing a request file.

`cat > analyses/new/liver-star.json` with `{"workflow": 7, "samples": [10001]}` is one request. Its
last close sends it (`bpfs.writing.analyses`) and returns only once the server has answered: on success
the file then reads as the new analysis's record (with its `id`); on a refusal close() fails with
EINVAL (EACCES for refused credentials, EIO when the server or network failed) and the file reads as
`{"error": "<the reason>"}`, so the reason is never lost behind an errno. Writing into the file again
is a new request; `rm` forgets it. The files live in memory: they are answers, not data.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time

from bpfs.errors import BpfsError, NotFound
from bpfs.nodes import Entry, Handle, Subtree, directory, parts
from bpfs.processes import Processes
from bpfs.stats import Stats
from bpfs.writing.analyses import REQUEST_LIMIT, AnalysisRequests, parse_request

log = logging.getLogger("bpfs.analyses")

PREFIX = ("analyses", "new")


class RequestFile:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.content = b""  # the request as written, then the answer
        self.pending = False  # written since the last answer: the last close sends it
        self.opener: int | None = None
        self.writers = 0  # open writable handles: only the last of them sends; a reader's close never does
        self.removed = False  # rm took it back: what is still written into it goes nowhere, as on a disk
        self.mtime = time.time()

    @property
    def path(self) -> str:
        return "/".join((*PREFIX, self.name))

    def entry(self) -> Entry:
        return Entry(False, size=len(self.content), mtime=self.mtime, writable=True)


class RequestHandle(Handle):
    direct_io = True  # the content changes at close (request -> answer): never from a stale page cache

    def __init__(self, box: AnalysisDropBox, file: RequestFile, writable: bool) -> None:
        super().__init__(file.path)
        self.box, self.file, self.writable = box, file, writable

    def read(self, size: int, offset: int) -> bytes:
        return self.file.content[offset:offset + size]

    def write(self, data: bytes, offset: int, caller: int | None = None) -> int:
        if not self.writable:
            return super().write(data, offset, caller)
        return self.box.write(self.file, data, offset)

    def flush(self, caller: int | None) -> None:
        if self.writable:
            self.box.close(self.file, caller)

    def release(self) -> None:
        if self.writable:
            self.box.release(self.file)


class AnalysisDropBox(Subtree):
    """Every path below `analyses/new/`; `rmdir analyses/<id>` comes here too (`delete`)."""

    writable_hint = "analyses/new/ takes <name>.json request files"

    def __init__(self, requests: AnalysisRequests, stats: Stats, processes: Processes, ro: bool = False) -> None:
        super().__init__(ro)
        self.requests, self.stats, self.processes = requests, stats, processes
        self._files: dict[str, RequestFile] = {}
        self._lock = threading.Lock()
        self.started = time.time()

    # -- paths -------------------------------------------------------------------------------------
    @staticmethod
    def _name(path: str) -> str | None:
        """The request file's name ("" for analyses/new itself); None below it."""
        rest = parts(path)[2:]
        return "" if not rest else rest[0] if len(rest) == 1 else None

    def _file(self, path: str) -> RequestFile:
        with self._lock:
            found = self._files.get(self._name(path) or "")
        if found is None:
            raise NotFound(f"{path}: no such request")
        return found

    def getattr(self, path: str) -> Entry:
        if self._name(path) == "":
            return directory(self.started, writable=True)
        return self._file(path).entry()

    def readdir(self, path: str) -> dict[str, Entry]:
        if self._name(path) != "":
            raise NotFound(f"{path}: no such directory")
        with self._lock:
            return {name: f.entry() for name, f in self._files.items()}

    def _writing(self, path: str, what: str) -> None:
        if self.ro:
            raise self.refuse(path, what)

    # -- request files -----------------------------------------------------------------------------
    def create(self, path: str, mode: int, caller: int | None) -> Handle:
        self._writing(path, "create")
        name = self._name(path)
        if not name or not name.endswith(".json") or name.startswith("."):
            raise BpfsError(f"{path}: analyses/new/ takes <name>.json request files only", errno.EINVAL)
        with self._lock:
            f = self._files.get(name)
            if f is None:
                f = self._files[name] = RequestFile(name)
        with f.lock:
            f.content, f.pending, f.opener, f.mtime = b"", False, caller, time.time()
            f.writers += 1
        return RequestHandle(self, f, writable=True)

    def open(self, path: str, flags: int, caller: int | None) -> Handle:
        if self._name(path) == "":
            raise BpfsError(f"{path}: is a directory", errno.EISDIR)
        f = self._file(path)
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing:
            self._writing(path, "open for writing")
            with f.lock:
                if flags & os.O_APPEND and not flags & os.O_TRUNC and not f.pending and f.content:
                    raise BpfsError(f"{path}: holds the answer to its request; appending to it (>>) is no "
                                    "request: write a new one with > (or into a new file)", errno.EINVAL)
                if flags & os.O_TRUNC or not f.pending:  # writing into an answer is a new request
                    f.content, f.pending = b"", False
                f.opener = caller
                f.writers += 1
        return RequestHandle(self, f, writable=writing)

    def write(self, f: RequestFile, data: bytes, offset: int) -> int:
        with f.lock:
            if offset + len(data) > REQUEST_LIMIT:
                raise BpfsError(f"{f.path}: a request is limited to {REQUEST_LIMIT} bytes", errno.EFBIG)
            content = bytearray(f.content)
            if offset > len(content):
                content.extend(b"\0" * (offset - len(content)))
            content[offset:offset + len(data)] = data
            f.content, f.pending, f.mtime = bytes(content), not f.removed, time.time()
        return len(data)

    def close(self, f: RequestFile, caller: int | None) -> None:
        """The last close sends a written request and waits for the answer; an earlier close (the shell's
        `>` closes a duplicate first) sends nothing."""
        with f.lock:
            if not f.pending or not self._last_close(f, caller):
                return
            self._send(f)

    def release(self, f: RequestFile) -> None:
        """A writable handle's release; the last one sends what no close sent."""
        with f.lock:
            f.writers -= 1
            if f.pending and f.writers == 0:  # no close was seen as the last
                try:
                    self._send(f)
                except BpfsError as exc:
                    log.error("%s", exc)

    def _last_close(self, f: RequestFile, caller: int | None) -> bool:
        still_open = self.processes.still_open(f.path, for_writing=True)  # a reader's hold sends nothing
        if still_open is not None:
            return not still_open
        return self.processes.same_process(caller, f.opener)

    def _send(self, f: RequestFile) -> None:
        """Holds f.lock. The answer replaces the request; a failure is raised after it is written."""
        f.pending = False
        where = f.path
        try:
            request = parse_request(f.content, where)
            if request is None:
                return  # an empty file sends nothing
            record = self.requests.start(request, where)
        except BpfsError as exc:
            self.stats.add("analyses_refused")
            log.error("%s", exc)
            f.content = _pretty({"error": str(exc).removeprefix(f"{where}: ")})
            f.mtime = time.time()
            raise
        self.stats.add("analyses_started")
        f.content, f.mtime = _pretty(record), time.time()

    def unlink(self, path: str) -> None:
        """rm forgets the file; a request still being written when it is removed is never sent."""
        self._writing(path, "unlink")
        f = self._file(path)
        with self._lock:
            if self._files.get(f.name) is f:
                del self._files[f.name]
        with f.lock:
            f.pending, f.removed = False, True

    def truncate(self, path: str, length: int) -> None:
        self._writing(path, "truncate")
        f = self._file(path)
        with f.lock:
            f.content = f.content[:length] + b"\0" * max(0, length - len(f.content))
            f.pending = bool(f.content)

    def utimens(self, path: str, mtime: float | None) -> None:
        self._writing(path, "utimens")
        self.getattr(path)  # accepted (cp -p): the file keeps the time of its answer

    def chmod(self, path: str) -> None:
        self._writing(path, "chmod")
        self.getattr(path)

    def delete(self, analysis_id: int) -> None:
        """rmdir analyses/<id> under -o allow_delete."""
        self.requests.delete(analysis_id)


def _pretty(record: dict) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode()
