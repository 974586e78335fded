"""The small interface between the router (`bpfs.filesystem`) and the subtrees it routes to.

A *subtree* owns every path below one prefix: the read-only tree of the account, each drop box
(`samples/new/`, `analyses/new/`) and the `.bpfs/` control files. It answers with `Entry`s for
metadata and a `Handle` for each open file; every handle follows the same protocol, so the router
and the FUSE adapter never ask what kind of file they hold.
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass

from bpfs.errors import AccessDenied, BpfsError, NotFound, ReadOnly

DIR_MODE = stat.S_IFDIR | 0o555
FILE_MODE = stat.S_IFREG | 0o444


@dataclass(frozen=True)
class Entry:
    """What getattr, readdir and open need to know about one path."""

    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    data: bytes | None = None  # generated content (index.tsv, .json)
    bucket: str | None = None  # an S3 object: read by range
    key: str | None = None
    immutable: bool = False  # content never changes: the kernel may keep its page cache
    dynamic: bool = False  # content made at open time (stats): size is not known in advance
    writable: bool = False  # a drop box, or a file being written
    error: str | None = None  # listed but unreadable (its size is unknown, S3 lacks it): getattr/open fail EIO
    xattrs: tuple[tuple[str, str], ...] = ()  # extended attributes (user.basepair.*), read-only

    @property
    def mode(self) -> int:
        if self.is_dir:
            return DIR_MODE | (0o200 if self.writable else 0)
        return FILE_MODE | (0o200 if self.writable else 0)


def directory(mtime: float, writable: bool = False, xattrs: tuple[tuple[str, str], ...] = ()) -> Entry:
    return Entry(True, mtime=mtime, writable=writable, xattrs=xattrs)


def generated(data: bytes, mtime: float) -> Entry:
    return Entry(False, size=len(data), mtime=mtime, data=data)


class Handle:
    """One open file. The defaults refuse what the file was not opened for."""

    keep_cache = False  # the kernel may keep the file's pages across opens (immutable content)
    direct_io = False  # bypass the page cache (content whose size is not known in advance, uploads)

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self, size: int, offset: int) -> bytes:
        raise BpfsError(f"{self.path}: not open for reading", errno.EBADF)

    def write(self, data: bytes, offset: int, caller: int | None = None) -> int:
        """`caller` is the thread that writes (a writer that then dies fails an upload)."""
        raise BpfsError(f"{self.path}: not open for writing", errno.EBADF)

    def flush(self, caller: int | None) -> None:
        """A close(); `caller` is the thread that closes."""

    def fsync(self) -> None:
        pass

    def release(self) -> None:
        """The last reference is gone."""


class BytesHandle(Handle):
    """Content fixed at open (index.tsv, a record's JSON, stats)."""

    direct_io = True  # after a refresh the content may be longer than the size the kernel still caches

    def __init__(self, path: str, data: bytes) -> None:
        super().__init__(path)
        self.data = data

    def read(self, size: int, offset: int) -> bytes:
        return self.data[offset:offset + size]


class Subtree:
    """Everything below one path. The defaults answer as a read-only directory tree would."""

    writable_hint = "only samples/new/ and analyses/new/ are writable"

    def __init__(self, ro: bool = False) -> None:
        self.ro = ro

    def refuse(self, path: str, what: str) -> BpfsError:
        """The contract's errno for a write where none is allowed: EROFS under -o ro, else EACCES."""
        if self.ro:
            return ReadOnly(f"{path}: {what} refused: mounted read-only")
        return AccessDenied(f"{path}: {what} refused: {self.writable_hint}")

    # -- reading -------------------------------------------------------------------------------------
    def getattr(self, path: str) -> Entry:
        raise NotFound(f"{path}: no such file or directory")

    def readdir(self, path: str) -> dict[str, Entry]:
        raise NotFound(f"{path}: no such directory")

    def open(self, path: str, flags: int, caller: int | None) -> Handle:
        raise NotFound(f"{path}: no such file")

    def getxattr(self, path: str, name: str) -> str:
        for key, value in self.getattr(path).xattrs:
            if key == name:
                return value
        raise BpfsError(f"{path}: no attribute {name}", errno.ENODATA)

    def listxattr(self, path: str) -> list[str]:
        return [key for key, _ in self.getattr(path).xattrs]

    def setxattr(self, path: str, name: str) -> None:
        """Setting or removing an attribute: EOPNOTSUPP, what a filesystem without them answers, which
        cp -p, cp -a and mv (their ACLs and attributes) skip; EACCES would make them fail the copy."""
        self.getattr(path)
        if self.ro:
            raise self.refuse(path, f"setting {name}")
        raise BpfsError(f"{path}: {name} not set: bpfs keeps no attributes of its own", errno.EOPNOTSUPP)

    # -- writing: refused unless a subtree says otherwise ----------------------------------------------
    def create(self, path: str, mode: int, caller: int | None) -> Handle:
        raise self.refuse(path, "create")

    def mkdir(self, path: str) -> None:
        raise self.refuse(path, "mkdir")

    def rmdir(self, path: str) -> None:
        raise self.refuse(path, "rmdir")

    def unlink(self, path: str) -> None:
        raise self.refuse(path, "unlink")

    def rename(self, old: str, new: str) -> None:
        raise self.refuse(old, "rename")

    def truncate(self, path: str, length: int) -> None:
        raise self.refuse(path, "truncate")

    def utimens(self, path: str, mtime: float | None) -> None:
        raise self.refuse(path, "utimens")

    def chmod(self, path: str) -> None:
        raise self.refuse(path, "chmod")

    def chown(self, path: str, uid: int, gid: int) -> None:
        raise self.refuse(path, "chown")


def parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]
