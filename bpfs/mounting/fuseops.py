"""The FUSE adapter: mfusepy callbacks → `Filesystem`, exceptions → errno. Nothing else.

This is the only module that imports mfusepy, so everything else imports without libfuse.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from collections.abc import Callable

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # mfusepy would take libfuse 2 when both are installed
import mfusepy as fuse  # noqa: E402

from bpfs.errors import BpfsError  # noqa: E402
from bpfs.filesystem import Filesystem  # noqa: E402

log = logging.getLogger("bpfs.fuse")
FUSE_MAJOR = fuse.fuse_version_major
# libfuse 3.12+ caps its workers (max_threads) and, with max_idle_threads as high, never retires one, so
# each worker may keep its Python thread state (see _FUSE._wrapper); earlier versions start and retire
# workers freely, and every retired worker would take a kept state with it
CAPPED_WORKERS = (fuse.fuse_version_major, fuse.fuse_version_minor) >= (3, 12)
# answers that are routine, not failures: a name that does not exist, an attribute a file lacks (ls and
# cp ask every file for security.* and system.posix_acl_* attributes), attributes not kept (cp -a and mv
# set them on every file, and go on)
QUIET_ERRNOS = frozenset({errno.ENOENT, errno.ENODATA, errno.EOPNOTSUPP})


def _errno(fs: Filesystem, op: str, path: str, exc: Exception) -> fuse.FuseOSError:
    if isinstance(exc, BpfsError):
        code = exc.errno
        if code not in QUIET_ERRNOS:
            fs.stats.add("fuse_errors")
            fs.stats.error(path, str(exc), code)
            log.error("%s %s failed: %s (errno %s)", op, path, exc, errno.errorcode.get(code, code))
        return fuse.FuseOSError(code)
    if isinstance(exc, OSError) and exc.errno:
        return fuse.FuseOSError(exc.errno)
    fs.stats.add("fuse_errors")
    fs.stats.error(path, f"internal error: {exc!r}", errno.EIO)
    log.exception("%s %s failed with an internal error", op, path)
    return fuse.FuseOSError(errno.EIO)


def _mapped(method: Callable) -> Callable:
    def call(self: Operations, path: str, *args):
        try:
            return method(self, path, *args)
        except fuse.FuseOSError:
            raise
        except Exception as exc:  # every failure becomes an errno, never EINVAL by accident
            raise _errno(self.fs, method.__name__, path or "", exc) from None

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class Operations(fuse.Operations):
    use_ns = True

    def __init__(self, fs: Filesystem, on_ready: Callable[[], None] | None = None) -> None:
        self.fs = fs
        self.on_ready = on_ready

    def init(self, path: str) -> None:
        if self.on_ready is not None:
            self.on_ready()

    @_mapped
    def getattr(self, path: str, fh: int | None = None) -> dict:
        return self.fs.getattr(path)

    @_mapped
    def readdir(self, path: str, fh: int) -> list:
        # a list, not a generator: errors must surface inside this call to be mapped to an errno
        return [".", "..", *((name, attrs, 0) for name, attrs in self.fs.readdir(path))]

    @_mapped
    def open(self, path: str, fi) -> int:
        fh, handle = self.fs.open(path, fi.flags, fuse.fuse_get_context()[2])
        fi.fh, fi.keep_cache, fi.direct_io = fh, int(handle.keep_cache), int(handle.direct_io)
        return 0

    @_mapped
    def create(self, path: str, mode: int, fi) -> int:
        fh, handle = self.fs.create(path, mode, fi.flags, fuse.fuse_get_context()[2])
        fi.fh, fi.keep_cache, fi.direct_io = fh, int(handle.keep_cache), int(handle.direct_io)
        return 0

    @_mapped
    def read(self, path: str, size: int, offset: int, fi) -> bytes | ctypes.Array:
        data = self.fs.read(fi.fh, size, offset)
        if not isinstance(data, bytes | memoryview):  # a bytearray or a mapping
            data = memoryview(data)
        if isinstance(data, memoryview):
            # mfusepy copies the reply into libfuse's buffer (memmove); a ctypes view of the cached bytes
            # lets that be the only copy bpfs makes
            return data.tobytes() if data.readonly else (ctypes.c_char * len(data)).from_buffer(data)
        return data

    @_mapped
    def write(self, path: str, data: bytes, offset: int, fi) -> int:
        return self.fs.write(fi.fh, data, offset, fuse.fuse_get_context()[2])

    @_mapped
    def flush(self, path: str, fi) -> int:
        self.fs.flush(fi.fh, caller=fuse.fuse_get_context()[2])
        return 0

    @_mapped
    def release(self, path: str, fi) -> int:
        self.fs.release(fi.fh)
        return 0

    @_mapped
    def fsync(self, path: str, datasync: int, fi) -> int:
        self.fs.fsync(fi.fh)
        return 0

    @_mapped
    def mkdir(self, path: str, mode: int) -> int:
        self.fs.mkdir(path, mode)
        return 0

    @_mapped
    def rmdir(self, path: str) -> int:
        self.fs.rmdir(path)
        return 0

    @_mapped
    def unlink(self, path: str) -> int:
        self.fs.unlink(path)
        return 0

    @_mapped
    def truncate(self, path: str, length: int, fh=None) -> int:
        self.fs.truncate(path, length)
        return 0

    @_mapped
    def rename(self, path: str, new: str) -> int:
        self.fs.rename(path, new)
        return 0

    @_mapped
    def symlink(self, path: str, target: str) -> int:
        self.fs.refuse(path, "symlink")

    @_mapped
    def link(self, path: str, target: str) -> int:
        self.fs.refuse(path, "link")

    @_mapped
    def mknod(self, path: str, mode: int, dev: int) -> int:
        self.fs.refuse(path, "mknod")

    @_mapped
    def chmod(self, path: str, mode: int) -> int:
        self.fs.chmod(path)
        return 0

    @_mapped
    def chown(self, path: str, uid: int, gid: int) -> int:
        self.fs.chown(path, uid, gid)
        return 0

    @_mapped
    def utimens(self, path: str, times=None) -> int:
        # use_ns: (atime, mtime) in ns. UTIME_NOW / UTIME_OMIT arrive as tv_sec 0 (mfusepy does not decode them)
        self.fs.utimens(path, times[1] / 1e9 if times and times[1] >= 2 * 10**9 else None)
        return 0

    @_mapped
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.fs.getxattr(path, name)

    @_mapped
    def listxattr(self, path: str) -> list[str]:
        return self.fs.listxattr(path)

    @_mapped
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        self.fs.setxattr(path, name)

    @_mapped
    def removexattr(self, path: str, name: str) -> int:
        self.fs.setxattr(path, name)

    @_mapped
    def statfs(self, path: str) -> dict:
        return self.fs.statfs()


_thread = threading.local()


class _FUSE(fuse.FUSE):
    def _wrapper(self, func, *args, **kwargs):
        """Every callback. libfuse's workers are not Python threads: ctypes gives each callback a fresh
        Python thread state and frees it on return, and in 3.11 each one maps and unmaps its own frame
        stack. That cost a mmap, a munmap (a TLB shootdown on the other CPU) and a futex round per request:
        a sixth of the daemon's CPU while streaming. One extra PyGILState_Ensure, never released, keeps
        the worker's state for its lifetime; libfuse 3.12+ never lets a worker go (see CAPPED_WORKERS)."""
        if CAPPED_WORKERS and not getattr(_thread, "kept", False):
            ctypes.pythonapi.PyGILState_Ensure()
            _thread.kept = True
        return super()._wrapper(func, *args, **kwargs)

    def write(self, path: bytes | None, buf, size: int, offset: int, fip) -> int:
        """mfusepy's write copies libfuse's buffer into a new `bytes` first (a profile of `cp` into
        samples/new/ put 39 % of the time holding the GIL there); a view of it instead. The view is valid
        during this call only: every handle's write copies what it keeps (Filesystem.write says so)."""
        address = ctypes.cast(buf, ctypes.c_void_p).value
        data = memoryview((ctypes.c_char * size).from_address(address)).cast("B") if size else b""
        ops = self.operations
        return ops.write(None if path is None else path.decode(self.encoding, self.errors), data, offset, fip.contents)


def mount(fs: Filesystem, mountpoint: str, on_ready: Callable[[], None] | None = None, debug: bool = False) -> None:
    """Serve until unmounted (or SIGINT/SIGTERM, which libfuse turns into an unmount)."""
    options = fs.options
    kwargs: dict = {
        "foreground": True,
        "nothreads": False,
        "fsname": options.fsname,
        "subtype": "bpfs",
        "attr_timeout": 1.0,
        "entry_timeout": 1.0,
        "negative_timeout": 1.0,
        "default_permissions": True,
        # rm of an open file is an unlink, not libfuse's rename to .fuse_hiddenNNN: in samples/new/ that
        # rename would copy the uploaded object to a hidden key, and a file being written would be refused
        # as a rename; the drop box decides (an upload in progress is refused, an uploaded file deleted)
        "hard_remove": True,
        # libfuse 3.14 passes its "unset" idle-thread count (UINT_MAX) to its own setter, which then prints
        # "Ignoring invalid max threads value 4294967295" on every mount; an explicit value avoids that.
        # 10 is libfuse's own default for max_threads: idle threads above it are let go.
        "max_idle_threads": 10,
    }
    if CAPPED_WORKERS:
        # ... and no more workers than that (libfuse 3.14's own cap; later versions take the option): none
        # is ever let go, so the Python thread state each one keeps (see _FUSE._wrapper) is never lost
        kwargs["max_threads"] = 10
    if options.ro:
        kwargs["ro"] = True
    if options.allow_other:
        kwargs["allow_other"] = True
    if debug:
        kwargs["debug"] = True
    served = []

    def ready() -> None:
        served.append(True)
        if on_ready is not None:
            on_ready()

    try:
        _FUSE(Operations(fs, ready), mountpoint, raw_fi=True, **kwargs)
    except RuntimeError as exc:
        # libfuse 3 ends its loop with 8 when SIGINT/SIGTERM unmounted it: a clean stop once it had served
        if not (served and exc.args and exc.args[0] == 8):
            raise
