"""Reading S3 objects through open file handles.

`ReaderFactory.open()` hands each open file a `Reader`; the FUSE layer only calls
`read(offset, size)` and `close()`. This plain reader makes one range GET per read; the
prefetching reader slots in behind the same two methods.
"""

from __future__ import annotations

from typing import Protocol

from bpfs.s3 import ObjectClient


class Reader(Protocol):
    def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class RangeReader:
    """One range GET per read: what a random reader needs, and never the whole object."""

    def __init__(self, objects: ObjectClient, bucket: str | None, key: str, size: int) -> None:
        self.objects, self.bucket, self.key, self.size = objects, bucket, key, size

    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        return self.objects.get_range(self.bucket, self.key, offset, end)

    def close(self) -> None:
        pass


class ReaderFactory:
    def __init__(self, objects: ObjectClient) -> None:
        self.objects = objects

    def open(self, bucket: str | None, key: str, size: int) -> Reader:
        return RangeReader(self.objects, bucket, key, size)

    def close(self) -> None:
        pass
