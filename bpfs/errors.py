"""Errors that carry the errno a FUSE callback returns, plus a message for the log.

Every layer below the FUSE adapter raises these; the adapter only maps `.errno`.
"""

from __future__ import annotations

import errno as _errno


class BpfsError(Exception):
    """Base class: a user-facing one-line message and the errno to hand to the kernel."""

    errno: int = _errno.EIO

    def __init__(self, message: str, errno: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno
        self.status = status  # the HTTP status behind it, when there was one


def kept(error: BpfsError) -> BpfsError:
    """An expected failure that will be kept (in a future, an upload's state) and told without its stack
    (see fuseops._errno): its traceback, and that of the error it was raised from (`raise ... from None`
    hides that one but keeps it as __context__), would hold the raising frames and their buffers: a part
    of 8 MiB per failed GET or upload part, for as long as the error is kept."""
    error.with_traceback(None)
    error.__context__ = error.__cause__ = None
    return error


class NotFound(BpfsError):
    errno = _errno.ENOENT


class AccessDenied(BpfsError):
    """Credentials refused (HTTP 401/403) or a write outside the drop box."""

    errno = _errno.EACCES


class ReadOnly(BpfsError):
    errno = _errno.EROFS


class RemoteError(BpfsError):
    """The API or S3 failed after retries (or answered something unusable)."""

    errno = _errno.EIO


class ConfigError(BpfsError):
    """A missing or invalid config file: reported to the user before anything is mounted."""

    errno = _errno.EINVAL
