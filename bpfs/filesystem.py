"""The filesystem's operations in plain Python, free of FUSE: a router by subtree.

Each path belongs to one subtree (`bpfs.nodes.Subtree`): the read-only tree of the account, a drop box
(`samples/new/`, `analyses/new/`) or the `.bpfs/` control files. The router finds it, asks it, and
presents what it answers (modes, owner, umask); it keeps the table of open files, each a `Handle`
with one protocol. It decides nothing else. The FUSE adapter (`bpfs.mounting.fuseops`) and the
in-process runner of the tests call the same methods.
"""

from __future__ import annotations

import errno
import itertools
import threading
from collections.abc import Callable

from bpfs.errors import BpfsError, RemoteError
from bpfs.nodes import Entry, Handle, Subtree, parts
from bpfs.options import MountOptions
from bpfs.stats import Stats

BLOCK_SIZE = 1 << 20  # st_blksize: tells cp and friends to read in 1 MiB requests
# statfs: S3 has no capacity. Report 1 PiB, all free, so that tools which check free space before
# writing (rsync --preallocate, installers, some pipelines) proceed; `df` shows a large nonzero size.
STATFS_BLOCKS = (1 << 50) // BLOCK_SIZE
STATFS_FILES = 1 << 32


class Filesystem:
    """`tree` answers every path no other subtree claims; `mounts` maps a path to the subtree below it.
    A mount whose name starts with "." is not listed in its parent (it resolves all the same)."""

    def __init__(self, tree: Subtree, mounts: dict[str, Subtree], stats: Stats, options: MountOptions,
                 on_close: Callable[[], None] | None = None) -> None:
        self.tree, self.stats, self.options = tree, stats, options
        self.mounts = {"/" + "/".join(parts(prefix)): subtree for prefix, subtree in mounts.items()}
        self._on_close = on_close
        self._handles: dict[int, Handle] = {}
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def close(self) -> None:
        """At unmount: every subtree's shutdown (uploads still open are aborted)."""
        if self._on_close is not None:
            self._on_close()

    def route(self, path: str) -> Subtree:
        normal = "/" + "/".join(parts(path))
        best, subtree = "", self.tree
        for prefix, candidate in self.mounts.items():
            if (normal == prefix or normal.startswith(prefix + "/")) and len(prefix) > len(best):
                best, subtree = prefix, candidate
        return subtree

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

    def entry(self, path: str) -> Entry:
        entry = self.route(path).getattr(path)
        if entry.error:
            raise RemoteError(f"{path}: {entry.error}")
        return entry

    def getattr(self, path: str) -> dict:
        return self.attributes(self.entry(path))

    def readdir(self, path: str) -> list[tuple[str, dict]]:
        entries = dict(self.route(path).readdir(path))
        here = parts(path)
        for prefix, subtree in self.mounts.items():
            mount = parts(prefix)
            if mount[:-1] == here and not mount[-1].startswith("."):
                entries[mount[-1]] = subtree.getattr(prefix)
        return [(name, self.attributes(entry)) for name, entry in entries.items()]

    def getxattr(self, path: str, name: str) -> bytes:
        return self.route(path).getxattr(path, name).encode()

    def listxattr(self, path: str) -> list[str]:
        return self.route(path).listxattr(path)

    def setxattr(self, path: str, name: str) -> None:
        self.route(path).setxattr(path, name)

    # -- open files --------------------------------------------------------------------------------
    def open(self, path: str, flags: int, caller: int | None = None) -> tuple[int, Handle]:
        handle = self.route(path).open(path, flags, caller)
        return self._register(handle), handle

    def create(self, path: str, mode: int, flags: int, caller: int | None = None) -> tuple[int, Handle]:
        handle = self.route(path).create(path, mode, caller)
        return self._register(handle), handle

    def read(self, fh: int, size: int, offset: int) -> bytes:
        chunk = self.handle(fh).read(size, offset)
        self.stats.add("bytes_served", len(chunk))
        return chunk

    def write(self, fh: int, data: bytes | memoryview, offset: int, caller: int | None = None) -> int:
        """`data` may be a view of libfuse's buffer, valid during this call only: a handle copies what it keeps."""
        return self.handle(fh).write(data, offset, caller)

    def flush(self, fh: int, caller: int | None = None) -> None:
        """A close(); `caller` is the thread closing the file (the last close finishes an upload)."""
        self.handle(fh).flush(caller)

    def fsync(self, fh: int) -> None:
        """Never finishes an upload: waits for its parts in flight and reports a failure."""
        self.handle(fh).fsync()

    def release(self, fh: int) -> None:
        with self._lock:
            handle = self._handles.pop(fh, None)
        if handle is not None:
            handle.release()

    def _register(self, handle: Handle) -> int:
        with self._lock:
            fh = next(self._next)
            self._handles[fh] = handle
        return fh

    def handle(self, fh: int) -> Handle:
        with self._lock:
            handle = self._handles.get(fh)
        if handle is None:
            raise BpfsError(f"bad file handle {fh}", errno.EBADF)
        return handle

    # -- changes -----------------------------------------------------------------------------------
    def refuse(self, path: str, what: str) -> None:
        raise self.route(path).refuse(path, what)

    def mkdir(self, path: str, mode: int) -> None:
        self.route(path).mkdir(path)

    def rmdir(self, path: str) -> None:
        self.route(path).rmdir(path)

    def unlink(self, path: str) -> None:
        self.route(path).unlink(path)

    def rename(self, old: str, new: str) -> None:
        subtree = self.route(old)
        if self.route(new) is not subtree:
            raise subtree.refuse(old, f"rename to {new}")
        subtree.rename(old, new)

    def truncate(self, path: str, length: int) -> None:
        self.route(path).truncate(path, length)

    def utimens(self, path: str, mtime: float | None) -> None:
        self.route(path).utimens(path, mtime)

    def chmod(self, path: str) -> None:
        self.route(path).chmod(path)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self.route(path).chown(path, uid, gid)

    def statfs(self) -> dict:
        return {"f_bsize": BLOCK_SIZE, "f_frsize": BLOCK_SIZE, "f_blocks": STATFS_BLOCKS, "f_bfree": STATFS_BLOCKS,
                "f_bavail": STATFS_BLOCKS, "f_files": STATFS_FILES, "f_ffree": STATFS_FILES, "f_namemax": 255}
