"""Byte ranges of S3 objects held in memory, shared by every open file.

Not a fixed block grid: a random 4 KiB read (a BAM index lookup) caches 4 KiB, a streaming
part caches 8 MiB. An extent is inserted *before* its bytes arrive (holding a Future), so
two readers that want the same bytes make one request. Completed extents are evicted LRU
once the byte budget is exceeded; extents still in flight are never evicted. Each extent is of one
version of its object (see bpfs.remote.s3.Version): a reader never takes bytes of another version.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

ObjectId = tuple[str | None, str]  # (bucket, key)


class Extent:
    __slots__ = ("obj", "start", "end", "future", "prefetched", "abandoned", "pooled", "arriving", "arrived",
                 "_arrival", "version")

    def __init__(self, obj: ObjectId, start: int, end: int, prefetched: bool, version: object = None) -> None:
        self.obj, self.start, self.end, self.prefetched = obj, start, end, prefetched
        self.version = version  # the object's size and ETag its bytes must be of (None: any)
        self.future: Future[bytes] = Future()
        # read ahead for a file that was closed before it got here: its GET stops, its bytes are not kept
        # (a claim by any reader takes it back)
        self.abandoned = False
        self.pooled = True  # its buffer goes back to the pool when it is dropped (see ExtentCache.recycle)
        # Served while it arrives: the buffer its GET fills from the start, in order, and how many bytes of it
        # are there. A reader needs nothing more of a part than the bytes it reads.
        self.arriving: object | None = None
        self.arrived = 0
        self._arrival = threading.Condition(threading.Lock())

    @property
    def size(self) -> int:
        return self.end - self.start

    def progress(self, buffer: object, arrived: int) -> None:
        """Its GET has put its first `arrived` bytes in `buffer` for good (a resumed body continues after them):
        readers of those take them now."""
        with self._arrival:
            self.arriving, self.arrived = buffer, arrived
            self._arrival.notify_all()

    def settled(self) -> None:
        """Its future has its outcome: nobody waits for bytes to arrive any more. (The buffer is let go here:
        a reference kept would stop the pool from ever handing it out again.)"""
        with self._arrival:
            self.arriving = None
            self._arrival.notify_all()

    def bytes_until(self, end: int, timeout: float) -> object:
        """Something holding this extent's bytes from its start up to `end`: its result, or the buffer still
        being filled once they are in it. Raises what its fetch raised, or FutureTimeout."""
        deadline = time.monotonic() + timeout
        with self._arrival:
            while not self.future.done() and self.start + self.arrived < end:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FutureTimeout
                self._arrival.wait(left)
            arriving = self.arriving
        if self.future.done() or arriving is None:
            return self.future.result(timeout=max(0.0, deadline - time.monotonic()))
        return arriving


def _stale(extent: Extent, version: object) -> bool:
    return version is not None and extent.version is not None and extent.version is not version


class ExtentCache:
    def __init__(self, capacity: int, recycle: Callable[[object], None] | None = None) -> None:
        """`recycle` is given the bytes of every completed extent the cache drops (a BufferPool's give)."""
        self.capacity = capacity
        self.recycle = recycle
        self._starts: dict[ObjectId, list[int]] = {}  # sorted extent starts per object
        self._extents: dict[ObjectId, dict[int, Extent]] = {}
        self._lru: OrderedDict[tuple[ObjectId, int], Extent] = OrderedDict()  # completed extents only
        self._bytes = 0  # completed + in flight
        self.lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return self._bytes

    def claim(self, obj: ObjectId, start: int, end: int, prefetched: bool,
              version: object = None) -> tuple[list[Extent], list[Extent]]:
        """Extents covering [start, end): (all of them in order, the new ones the caller must fill). Extents of
        another `version` of the object are stale: dropped, and fetched again for this one."""
        with self.lock:
            starts = self._starts.setdefault(obj, [])
            extents = self._extents.setdefault(obj, {})
            covering: list[Extent] = []
            new: list[Extent] = []
            i = bisect.bisect_right(starts, start) - 1
            if i < 0:
                i = 0
            position = start
            while position < end:
                current = extents[starts[i]] if i < len(starts) else None
                if current is not None and current.end <= position:
                    i += 1
                    continue
                if current is not None and current.start < end and _stale(current, version):
                    self._remove(current)  # its waiters, if any, still get its bytes from its future
                    starts = self._starts.setdefault(obj, [])  # (its last extent gone, the object's lists went)
                    extents = self._extents.setdefault(obj, {})
                    i = max(0, bisect.bisect_right(starts, position) - 1)
                    continue
                if current is not None and current.start <= position:
                    current.abandoned = False  # somebody wants it after all
                    covering.append(current)
                    self._touch(current)
                    position = current.end
                    i += 1
                    continue
                gap_end = min(end, current.start) if current is not None else end
                extent = Extent(obj, position, gap_end, prefetched, version)
                bisect.insort(starts, position)
                extents[position] = extent
                self._bytes += extent.size
                covering.append(extent)
                new.append(extent)
                position = gap_end
                i = bisect.bisect_right(starts, position) - 1
            return covering, new

    def filled(self, extent: Extent, data: bytes | None, error: BaseException | None = None) -> None:
        """Publish a fetch's outcome; a failed extent leaves the cache so the next read retries."""
        if error is not None:
            self.remove(extent)
            extent.future.set_exception(error)
            extent.settled()
            return
        extent.future.set_result(data or b"")
        extent.settled()
        with self.lock:
            if self._extents.get(extent.obj, {}).get(extent.start) is extent:
                self._lru[(extent.obj, extent.start)] = extent
            self._evict()

    def remove(self, extent: Extent, recycle: bool = True) -> None:
        """`recycle=False`: its buffer is not given back for reuse but freed (nobody streams to reuse it)."""
        with self.lock:
            self._remove(extent, recycle)

    def drop_consumed(self, obj: ObjectId, before: int, after: int = 0) -> None:
        """Forget the extents a stream has read past, [after, before), prefetched or fetched on demand when
        the prefetch fell behind: streaming 1 GiB must not fill the cache (the kernel keeps what it may
        re-read). Only its own run: other readers of the object further back still need theirs."""
        with self.lock:
            for start in list(self._starts.get(obj, ())):
                if start >= before:
                    break
                extent = self._extents[obj][start]
                if start >= after and extent.end <= before and extent.future.done():
                    self._remove(extent)

    def forget(self, obj: ObjectId) -> None:
        """Drop every extent of an object that changed (those still in flight are dropped when they land)."""
        with self.lock:
            for extent in list(self._extents.get(obj, {}).values()):
                self._remove(extent)

    def _touch(self, extent: Extent) -> None:
        key = (extent.obj, extent.start)
        if key in self._lru:
            self._lru.move_to_end(key)

    def _remove(self, extent: Extent, recycle: bool = True) -> None:
        extents = self._extents.get(extent.obj)
        if not extents or extents.get(extent.start) is not extent:
            return
        del extents[extent.start]
        starts = self._starts[extent.obj]
        del starts[bisect.bisect_left(starts, extent.start)]
        if not starts:
            del self._starts[extent.obj], self._extents[extent.obj]
        self._lru.pop((extent.obj, extent.start), None)
        self._bytes -= extent.size
        future = extent.future
        if recycle and extent.pooled and self.recycle is not None and future.done() and not future.cancelled() \
                and future.exception() is None:
            self.recycle(future.result())

    def _evict(self) -> None:
        while self._bytes > self.capacity and self._lru:
            _, extent = self._lru.popitem(last=False)
            self._lru[(extent.obj, extent.start)] = extent  # _remove pops it again
            self._remove(extent)
