"""Read-ahead for S3 objects: small for random readers, wide and parallel for streams.

Each open file gets a `PrefetchReader`. The bytes a read asks for that nobody holds yet are
fetched inline, exactly as asked (a random 4 KiB read costs 4 KiB; the kernel's own
readahead already rounds sequential reads up). Once reads follow each other, the reader
keeps a window ahead of the reader, filled by range GETs of up to one part on a bounded
thread pool; the window doubles with every sequential read, as mountpoint-s3 does.
A forward jump inside the window and a small step back (the kernel reorders readahead
requests) keep the stream; any other jump resets it. Everything lands in the shared
`ExtentCache`, so readers of one object share requests and bytes.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from bpfs.blockcache import Extent, ExtentCache
from bpfs.errors import RemoteError
from bpfs.s3 import ObjectClient
from bpfs.stats import Stats

log = logging.getLogger("bpfs.prefetch")

MiB = 1 << 20


@dataclass(frozen=True)
class PrefetchConfig:
    part_size: int = 8 * MiB  # one range GET while streaming: the size that saturates S3 (mountpoint, CRT)
    first_request: int = MiB + 128 * 1024  # a 1 MiB read plus the kernel's 128 KiB readahead, in one GET
    min_window: int = 256 * 1024  # where a stream restarts after a random jump (a region query)
    max_window: int = 64 * MiB  # how far ahead a single stream may run
    back_tolerance: int = MiB  # a read this far behind the previous one is still "sequential"
    max_in_flight: int = 128 * MiB  # prefetched bytes in flight across all streams: backpressure
    cache_bytes: int = 256 * MiB  # completed extents kept for re-reads
    workers: int = 8  # concurrent prefetch GETs across the mount
    wait_timeout: float = 180.0  # a read never waits longer than this for bytes in flight


class Prefetcher:
    """The ReaderFactory of the fast path: one cache and one thread pool for the whole mount."""

    def __init__(self, objects: ObjectClient, stats: Stats, config: PrefetchConfig | None = None) -> None:
        self.objects, self.stats = objects, stats
        self.config = config or PrefetchConfig()
        self.cache = ExtentCache(self.config.cache_bytes)
        self.pool = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="bpfs-fetch")
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()

    def open(self, bucket: str | None, key: str, size: int) -> PrefetchReader:
        return PrefetchReader(self, (bucket, key), size)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- fetching --------------------------------------------------------------------------------
    def fill(self, extent: Extent) -> None:
        """Fetch one extent's bytes (in the calling thread) and publish them."""
        try:
            data = self.objects.get_range(extent.obj[0], extent.obj[1], extent.start, extent.end)
            if len(data) != extent.size:
                raise RemoteError(f"s3://{extent.obj[0]}/{extent.obj[1]}: short read at {extent.start} "
                                  f"({len(data)} of {extent.size} bytes)")
        except BaseException as exc:
            self.cache.filled(extent, None, exc)
            return
        self.cache.filled(extent, data)

    def try_reserve(self, size: int) -> bool:
        with self._in_flight_lock:
            if self._in_flight + size > self.config.max_in_flight:
                return False
            self._in_flight += size
            return True

    def submit(self, extent: Extent) -> None:
        def run() -> None:
            try:
                self.fill(extent)
            finally:
                with self._in_flight_lock:
                    self._in_flight -= extent.size

        try:
            self.pool.submit(run)
        except RuntimeError:  # shutting down
            with self._in_flight_lock:
                self._in_flight -= extent.size
            self.cache.filled(extent, None, RemoteError("the mount is shutting down"))


class PrefetchReader:
    def __init__(self, prefetcher: Prefetcher, obj: tuple[str | None, str], size: int) -> None:
        self.p = prefetcher
        self.obj = obj
        self.size = size
        self.next_offset: int | None = None  # where a sequential reader reads next
        self.window = 0  # bytes to keep requested ahead; 0 = not streaming
        self.ahead = 0  # requested (or held) up to here
        self.lock = threading.Lock()

    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        config = self.p.config
        with self.lock:
            demand_end = self._advance(offset, end)
        covering, new = self.p.cache.claim(self.obj, offset, demand_end, prefetched=False)
        hits = len(covering) - len(new)
        if hits:
            self.p.stats.add("cache_hits", hits)
        if new:
            self.p.stats.add("cache_misses", len(new))
        for extent in new:
            self.p.fill(extent)  # inline: the reader is waiting for exactly these bytes
        self._prefetch()
        chunks = []
        for extent in covering:
            try:
                data = extent.future.result(timeout=config.wait_timeout)
            except FutureTimeout:
                raise RemoteError(f"s3://{self.obj[0]}/{self.obj[1]}: no data after {config.wait_timeout:.0f}s") \
                    from None
            lo, hi = max(offset, extent.start), min(end, extent.end)
            if lo < hi:
                chunks.append(data[lo - extent.start:hi - extent.start])
        if self.window and offset > config.back_tolerance:
            self.p.cache.drop_consumed(self.obj, offset - config.back_tolerance)
        return b"".join(chunks)

    def _advance(self, offset: int, end: int) -> int:
        """Update the stream state for a read of [offset, end); returns how far to fetch inline."""
        config = self.p.config
        previous = self.next_offset
        self.next_offset = end
        if previous is None and offset == 0:
            # a fresh reader at the start: a BAM header, `head`, or the start of a `cp`: one modest GET
            self.window = 0
            first_end = min(self.size, max(end, config.first_request))
            self.ahead = first_end
            return first_end
        if previous is not None and previous - config.back_tolerance <= offset <= max(previous, self.ahead):
            self.window = min(config.max_window, max(config.min_window, self.window * 2))
            self.ahead = max(self.ahead, end)
            return end
        self.window = 0  # a random jump: fetch what is asked, no more
        self.ahead = end
        return end

    def _prefetch(self) -> None:
        config = self.p.config
        with self.lock:
            if not self.window:
                return
            target = min(self.size, (self.next_offset or 0) + self.window)
            start = self.ahead
            pieces = []
            while start < target:
                piece = min(config.part_size, target - start)
                if not self.p.try_reserve(piece):
                    break  # enough in flight for the whole mount: the next read tries again
                pieces.append((start, start + piece))
                start += piece
            self.ahead = start
        for lo, hi in pieces:
            _, new = self.p.cache.claim(self.obj, lo, hi, prefetched=True)
            reserved = hi - lo
            claimed = sum(e.size for e in new)
            if reserved > claimed:  # part of it was already held: give the reservation back
                with self.p._in_flight_lock:
                    self.p._in_flight -= reserved - claimed
            for extent in new:
                self.p.submit(extent)

    def close(self) -> None:
        pass
