"""Two ways to run one behaviour suite, as rclone's vfstest does: `InProcess` calls the FUSE-free core
(`Filesystem`) directly, with no kernel, daemon or socket; `Mounted` goes through a real mount with
plain `os` calls. Both speak the same small os-like language, on paths relative to the mount root,
and both raise `OSError` with the errno a program would see.
"""

from __future__ import annotations

import os
import stat as stat_module
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfs.errors import BpfsError


@dataclass(frozen=True)
class Stat:
    st_mode: int
    st_size: int
    st_mtime: float
    st_uid: int
    st_gid: int

    @property
    def is_dir(self) -> bool:
        return stat_module.S_ISDIR(self.st_mode)


class Runner:
    name = ""
    emulator: Any

    # -- the os-like language ------------------------------------------------------------------------
    def stat(self, path: str) -> Stat: ...
    def listdir(self, path: str) -> list[str]: ...
    def open(self, path: str, flags: int, mode: int = 0o644) -> int: ...
    def read_fd(self, fd: int, size: int, offset: int) -> bytes: ...
    def write_fd(self, fd: int, data: bytes) -> int: ...
    def pwrite(self, fd: int, data: bytes, offset: int) -> int: ...
    def fsync(self, fd: int) -> None: ...
    def close(self, fd: int) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def unlink(self, path: str) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def getxattr(self, path: str, name: str) -> bytes: ...
    def listxattr(self, path: str) -> list[str]: ...
    def setxattr(self, path: str, name: str, value: bytes) -> None: ...

    # -- built on it ---------------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        fd = self.open(path, os.O_RDONLY)
        try:
            chunks, offset = [], 0
            while chunk := self.read_fd(fd, 1 << 20, offset):
                chunks.append(chunk)
                offset += len(chunk)
            return b"".join(chunks)
        finally:
            self.close(fd)

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def write_bytes(self, path: str, data: bytes, piece: int = 1 << 20) -> None:
        """Like `cp`: create, write in pieces, close (the close reports the outcome)."""
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            for start in range(0, len(data), piece):
                self.write_fd(fd, data[start:start + piece])
        except BaseException:
            try:
                self.close(fd)
            except OSError:
                pass
            raise
        self.close(fd)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except FileNotFoundError:
            return False


class InProcess(Runner):
    name = "in_process"

    def __init__(self, fs: Any, emulator: Any, api: Any, objects: Any) -> None:
        self.fs, self.emulator, self.api, self.objects = fs, emulator, api, objects
        self.s3 = objects.fake
        self._fds: dict[int, int] = {}

    @staticmethod
    def _path(path: str) -> str:
        return "/" + path.strip("/")

    @staticmethod
    def _call(function, *args):  # noqa: ANN001, ANN205
        try:
            return function(*args)
        except BpfsError as exc:
            raise OSError(exc.errno, os.strerror(exc.errno), str(exc)) from None

    def stat(self, path: str) -> Stat:
        a = self._call(self.fs.getattr, self._path(path))
        return Stat(a["st_mode"], a["st_size"], a["st_mtime"] / 1e9, a["st_uid"], a["st_gid"])

    def listdir(self, path: str) -> list[str]:
        return [name for name, _ in self._call(self.fs.readdir, self._path(path))]

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        caller = threading.get_native_id()
        p = self._path(path)
        if flags & os.O_CREAT:
            try:
                self.stat(path)
                exists = True
            except FileNotFoundError:
                exists = False
            if not exists:
                fh, _ = self._call(self.fs.create, p, mode, flags, caller)
                return fh
            if flags & os.O_EXCL:
                raise FileExistsError(17, "File exists", path)
        fh, _ = self._call(self.fs.open, p, flags, caller)
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            self._call(self.fs.truncate, p, 0)
        return fh

    def read_fd(self, fd: int, size: int, offset: int) -> bytes:
        return bytes(self._call(self.fs.read, fd, size, offset))

    def write_fd(self, fd: int, data: bytes) -> int:
        offset = self._fds.get(fd, 0)
        written = self._call(self.fs.write, fd, data, offset)
        self._fds[fd] = offset + written
        return written

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return self._call(self.fs.write, fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._call(self.fs.fsync, fd)

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        try:
            self._call(self.fs.flush, fd, threading.get_native_id())
        finally:
            self.fs.release(fd)

    def mkdir(self, path: str) -> None:
        self._call(self.fs.mkdir, self._path(path), 0o755)

    def rmdir(self, path: str) -> None:
        self._call(self.fs.rmdir, self._path(path))

    def unlink(self, path: str) -> None:
        self._call(self.fs.unlink, self._path(path))

    def rename(self, old: str, new: str) -> None:
        self._call(self.fs.rename, self._path(old), self._path(new))

    def getxattr(self, path: str, name: str) -> bytes:
        return self._call(self.fs.getxattr, self._path(path), name)

    def listxattr(self, path: str) -> list[str]:
        return self._call(self.fs.listxattr, self._path(path))

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        self._call(self.fs.setxattr, self._path(path), name)

    def stats(self) -> dict:
        return self.fs.stats.snapshot()

    def fail_s3(self, operation: str, key_pattern: str, times: int | None = 1, status: int = 500) -> None:
        self.s3.fail(operation, key_pattern, times, status)

    def clear_faults(self) -> None:
        self.s3.failures.clear()
        self.api.failures.clear()
        self.emulator.faults_api.clear()

    def open_multipart_uploads(self) -> list:
        return list(self.s3.multipart)


class Mounted(Runner):
    name = "fuse"

    def __init__(self, mount: Any) -> None:
        self.mount, self.emulator = mount, mount.emulator
        self.root: Path = mount.path

    def _p(self, path: str) -> str:
        return str(self.root / path.strip("/")) if path.strip("/") else str(self.root)

    def stat(self, path: str) -> Stat:
        s = os.stat(self._p(path))
        return Stat(s.st_mode, s.st_size, s.st_mtime, s.st_uid, s.st_gid)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._p(path))

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(self._p(path), flags, mode)

    def read_fd(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def write_fd(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def mkdir(self, path: str) -> None:
        os.mkdir(self._p(path))

    def rmdir(self, path: str) -> None:
        os.rmdir(self._p(path))

    def unlink(self, path: str) -> None:
        os.unlink(self._p(path))

    def rename(self, old: str, new: str) -> None:
        os.rename(self._p(old), self._p(new))

    def getxattr(self, path: str, name: str) -> bytes:
        return os.getxattr(self._p(path), name)

    def listxattr(self, path: str) -> list[str]:
        return os.listxattr(self._p(path))

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        os.setxattr(self._p(path), name, value)

    def stats(self) -> dict:
        return self.mount.stats()

    # an S3 operation as the emulator's S3 server sees it: (method, query)
    _S3_REQUESTS = {
        "get_object": ("GET", None), "head_object": ("HEAD", None),
        "put_object": ("PUT", r"^(?!.*partNumber)"), "upload_part": ("PUT", "partNumber="),
        "create_multipart_upload": ("POST", r"(^|&)uploads(=|&|$)"),
        "complete_multipart_upload": ("POST", "uploadId="), "abort_multipart_upload": ("DELETE", "uploadId="),
    }

    def fail_s3(self, operation: str, key_pattern: str, times: int | None = 1, status: int = 500) -> None:
        method, query = self._S3_REQUESTS[operation]
        self.emulator.faults_s3.add(method=method, path=key_pattern, query=query, status=status, times=times)

    def clear_faults(self) -> None:
        self.emulator.faults_s3.clear()
        self.emulator.faults_api.clear()

    def open_multipart_uploads(self) -> list:
        return list(self.emulator.s3.multipart_uploads)
