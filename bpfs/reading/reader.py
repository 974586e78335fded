"""The interfaces between open files and whatever fetches their bytes.

The tree asks a `ReaderFactory` for a `Reader` per open S3 object and only ever calls
`read(offset, size)` and `close()`; `bpfs.prefetch.Prefetcher` is the implementation.
"""

from __future__ import annotations

from typing import Protocol


class Reader(Protocol):
    def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class ReaderFactory(Protocol):
    def open(self, bucket: str | None, key: str, size: int) -> Reader: ...

    def close(self) -> None: ...
