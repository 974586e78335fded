"""The filesystem's operations in plain Python, free of FUSE.

The FUSE adapter (`fuseops`) only translates; everything here raises `BpfsError`s that
carry their errno, so the semantics can be tested without a mount.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpfs.errors import AccessDenied, BpfsError, ReadOnly, RemoteError
from bpfs.namespace import Entry, Namespace
from bpfs.options import MountOptions
from bpfs.reader import Reader, ReaderFactory
from bpfs.stats import Stats

if TYPE_CHECKING:
    from bpfs.writer import SampleWriter

log = logging.getLogger("bpfs.fs")

BLOCK_SIZE = 1 << 20  # st_blksize: tells cp and friends to read in 1 MiB requests
CONTROL_LIMIT = 64 << 10  # what one write session of .bpfs/refresh may hold: a few hundred paths
# statfs: S3 has no capacity. Report 1 PiB, all free, so that tools which check free space before
# writing (rsync --preallocate, installers, some pipelines) proceed; `df` shows a large nonzero size.
STATFS_BLOCKS = (1 << 50) // BLOCK_SIZE
STATFS_FILES = 1 << 32

REFRESH = "/.bpfs/refresh"


@dataclass
class ControlWrite:
    """Paths written to .bpfs/refresh, acted on at close."""

    buffer: bytearray


@dataclass
class OpenFile:
    path: str
    entry: Entry
    data: bytes | None = None  # generated content, fixed at open
    reader: Reader | None = None
    keep_cache: bool = False  # the kernel may keep pages across opens (immutable objects)
    direct_io: bool = False  # bypass the page cache (content whose size is unknown in advance)


class Filesystem:
    def __init__(self, namespace: Namespace, readers: ReaderFactory, stats: Stats, options: MountOptions,
                 writer: SampleWriter | None = None) -> None:
        self.namespace, self.readers, self.stats, self.options = namespace, readers, stats, options
        self.writer = writer  # the sample writer (samples/new/), when writes are allowed
        self._handles: dict[int, object] = {}
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    # -- metadata ----------------------------------------------------------------------------------
    def attributes(self, entry: Entry) -> dict:
        mode = entry.mode & ~(self.options.umask & 0o777)
        if self.options.ro:
            mode &= ~0o222
        mtime_ns = int(entry.mtime * 1e9)
        return {
            "st_mode": mode,
            "st_nlink": 2 if entry.is_dir else 1,
            "st_size": 4096 if entry.is_dir else entry.size,
            "st_uid": self.options.uid,
            "st_gid": self.options.gid,
            "st_mtime": mtime_ns,
            "st_ctime": mtime_ns,
            "st_atime": mtime_ns,
            "st_blksize": BLOCK_SIZE,
            "st_blocks": (entry.size + 511) // 512,
        }

    def getattr(self, path: str) -> dict:
        if self.writer is not None:
            draft = self.writer.getattr(path)
            if draft is not None:
                return self.attributes(draft)
        entry = self.namespace.lookup(path)
        if entry.error:
            raise RemoteError(f"{path}: {entry.error}")
        return self.attributes(entry)

    def readdir(self, path: str) -> list[tuple[str, dict]]:
        entries = self.namespace.listdir(path)
        return [(name, self.attributes(entry)) for name, entry in entries.items()]

    # -- reading -----------------------------------------------------------------------------------
    def open(self, path: str, flags: int, caller: int | None = None) -> tuple[int, OpenFile | object]:
        accmode = flags & os.O_ACCMODE
        if self.writer is not None and self.writer.owns(path):
            handle = self.writer.open(path, flags)
            return self._register(handle), handle
        if path == REFRESH and accmode != os.O_RDONLY:
            if self.options.ro:
                self.refuse(path, "write")
            handle = ControlWrite(bytearray())
            return self._register(handle), handle
        if accmode != os.O_RDONLY or flags & (os.O_TRUNC | os.O_CREAT):
            self.refuse(path, "open for writing")
        entry = self.namespace.lookup(path)
        if entry.is_dir:
            raise BpfsError(f"{path}: is a directory", errno.EISDIR)
        if entry.error:
            raise RemoteError(f"{path}: {entry.error}")
        if entry.dynamic:
            if path == REFRESH:  # reading it is the refresh a read-only mount can still do
                self.namespace.refresh("/")
                data = b"dropped all cached listings\n"
            else:
                data = self.stats.render()
            handle = OpenFile(path, entry, data=data, direct_io=True)
        elif entry.data is not None:
            # direct_io: after a refresh the content may be longer than the size the kernel still caches
            handle = OpenFile(path, entry, data=entry.data, direct_io=True)
        else:
            reader = self.readers.open(entry.bucket, entry.key or "", entry.size)
            handle = OpenFile(path, entry, reader=reader, keep_cache=entry.immutable)
        return self._register(handle), handle

    def read(self, fh: int, size: int, offset: int) -> bytes:
        handle = self._handle(fh)
        if isinstance(handle, ControlWrite):
            raise BpfsError(f"{REFRESH}: opened for writing", errno.EBADF)
        if not isinstance(handle, OpenFile):
            return self.writer.read(handle, size, offset)
        if handle.data is not None:
            chunk = handle.data[offset:offset + size]
        else:
            chunk = handle.reader.read(offset, size)
        self.stats.add("bytes_served", len(chunk))
        return chunk

    def release(self, fh: int) -> None:
        with self._lock:
            handle = self._handles.pop(fh, None)
        if isinstance(handle, ControlWrite):
            self._control(handle)
        elif isinstance(handle, OpenFile):
            if handle.reader is not None:
                handle.reader.close()
        elif handle is not None and self.writer is not None:
            self.writer.release(handle)

    def _register(self, handle: object) -> int:
        with self._lock:
            fh = next(self._next)
            self._handles[fh] = handle
        return fh

    def _handle(self, fh: int) -> object:
        with self._lock:
            handle = self._handles.get(fh)
        if handle is None:
            raise BpfsError(f"bad file handle {fh}", errno.EBADF)
        return handle

    # -- writing -----------------------------------------------------------------------------------
    def refuse(self, path: str, what: str) -> None:
        """The contract's errno for a write outside the drop box: EROFS under -o ro, else EACCES."""
        if self.options.ro:
            raise ReadOnly(f"{path}: {what} refused: mounted read-only")
        raise AccessDenied(f"{path}: {what} refused: only samples/new/ is writable")

    def _writer_or_refuse(self, path: str, what: str):
        if self.options.ro or self.writer is None or not self.writer.owns(path):
            self.refuse(path, what)
        return self.writer

    def create(self, path: str, mode: int, flags: int, caller: int | None = None) -> tuple[int, object]:
        handle = self._writer_or_refuse(path, "create").create(path, mode, caller)
        return self._register(handle), handle

    def write(self, fh: int, data: bytes, offset: int) -> int:
        handle = self._handle(fh)
        if isinstance(handle, ControlWrite):
            if len(handle.buffer) + len(data) > CONTROL_LIMIT:
                raise BpfsError(f"{REFRESH}: at most {CONTROL_LIMIT} bytes of paths at once", errno.EFBIG)
            handle.buffer += data
            return len(data)
        if isinstance(handle, OpenFile):
            raise BpfsError(f"{handle.path}: not open for writing", errno.EBADF)
        return self.writer.write(handle, data, offset)

    def flush(self, fh: int, caller: int | None = None) -> None:
        """A close(); `caller` is the thread closing the file (the last close finishes an upload)."""
        handle = self._handle(fh)
        if isinstance(handle, ControlWrite):
            self._control(handle)
        elif not isinstance(handle, OpenFile) and self.writer is not None:
            self.writer.flush(handle, caller)

    def fsync(self, fh: int) -> None:
        """Never finishes an upload: waits for its parts in flight and reports a failure."""
        handle = self._handle(fh)
        if not isinstance(handle, OpenFile | ControlWrite) and self.writer is not None:
            self.writer.fsync(handle)

    def _control(self, handle: ControlWrite) -> None:
        for line in bytes(handle.buffer).decode(errors="replace").splitlines():
            if line.strip():
                self.namespace.refresh(line.strip())
                log.info("refresh: dropped cached listings under %s", line.strip())
        handle.buffer.clear()

    def mkdir(self, path: str, mode: int) -> None:
        self._writer_or_refuse(path, "mkdir").mkdir(path)

    def rmdir(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if self.writer is not None and not self.options.ro:
            if self.writer.owns(path):
                return self.writer.rmdir(path)
            if len(parts) == 2 and parts[0] == "samples" and parts[1].isdigit():
                if not self.options.allow_delete:
                    raise AccessDenied(f"{path}: deleting a sample needs the mount option allow_delete")
                return self.writer.delete_sample(int(parts[1]))
        self.refuse(path, "rmdir")

    def unlink(self, path: str) -> None:
        self._writer_or_refuse(path, "unlink").unlink(path)

    def rename(self, old: str, new: str) -> None:
        if self.options.ro or self.writer is None or not (self.writer.owns(old) and self.writer.owns(new)):
            self.refuse(old, "rename")
        self.writer.rename(old, new)

    def truncate(self, path: str, length: int) -> None:
        if path == REFRESH and not self.options.ro:
            return  # `echo PATH > .bpfs/refresh` truncates first
        self._writer_or_refuse(path, "truncate").truncate(path, length)

    def utimens(self, path: str, mtime: float | None) -> None:
        """Accepted on a file being or just uploaded (cp -p, rsync -a, touch): the time is shown, not sent."""
        self._writer_or_refuse(path, "utimens").utimens(path, mtime)

    def chmod(self, path: str) -> None:
        """Accepted as a no-op in the drop box (rsync -a, mkstemp's fchmod): S3 keeps no modes."""
        self._writer_or_refuse(path, "chmod")

    def chown(self, path: str, uid: int, gid: int) -> None:
        """Accepted in the drop box when it changes nothing (cp -a or rsync -a as root keep the owner they
        see); refused otherwise, since the mount shows one owner for everything."""
        self._writer_or_refuse(path, "chown")
        if uid not in (-1, self.options.uid, 0xFFFFFFFF) or gid not in (-1, self.options.gid, 0xFFFFFFFF):
            raise BpfsError(f"{path}: chown refused: every file of the mount belongs to "
                            f"{self.options.uid}:{self.options.gid}", errno.EPERM)

    def statfs(self) -> dict:
        return {"f_bsize": BLOCK_SIZE, "f_frsize": BLOCK_SIZE, "f_blocks": STATFS_BLOCKS, "f_bfree": STATFS_BLOCKS,
                "f_bavail": STATFS_BLOCKS, "f_files": STATFS_FILES, "f_ffree": STATFS_FILES, "f_namemax": 255}

