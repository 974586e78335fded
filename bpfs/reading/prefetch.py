"""Read-ahead for S3 objects: small for random readers, wide and parallel for streams.

Each open file gets a `PrefetchReader`. The bytes a read asks for that nobody holds yet are
fetched inline, exactly as asked (a random 4 KiB read costs 4 KiB; the kernel's own
readahead already rounds sequential reads up). Once reads follow each other (from the start
of the file, or for 4 MiB after a jump), the reader keeps a window ahead of it, small enough
that all it fetched stays within four times what it read (see DENSITY), and the whole window
(80 MiB, no more than its share of the cache when several streams run) once it has read
1.25 MiB from offset 0, or 4 MiB after a jump. The window is filled by range GETs of whole
parts on a bounded thread pool: a region query reads what it asks for, a `cp` soon keeps ten
8 MiB GETs in flight (two of 24 MiB where S3 answers within 5 ms: the CPU is the limit
there). A forward jump inside the window and a small step back or forward (the kernel
reorders readahead requests) keep the stream; any other jump resets it. A closed file gives
up what it read ahead and nobody read. Everything lands in the shared `ExtentCache`, so
readers of one object share requests and bytes.
"""

from __future__ import annotations

import logging
import mmap
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from cachetools import LRUCache

from bpfs.errors import BpfsError, RemoteError, kept
from bpfs.memory import Budget
from bpfs.reading.disk_cache import DiskCache
from bpfs.reading.extents import Extent, ExtentCache, ObjectId
from bpfs.remote.s3 import GetCancelled, ObjectChanged, ObjectClient, Version
from bpfs.stats import Stats

log = logging.getLogger("bpfs.prefetch")

MiB = 1 << 20
# A link whose GETs answer sooner than this is near (loopback, a local S3): its streams read ahead in fewer,
# larger parts (see PrefetchReader._part). S3 answers a GET in 10-50 ms; the emulator on loopback in 1.5-8 ms
# while a stream runs, 2-3 ms typically (the median the link is judged by: see ObjectClient.latency).
NEAR_LINK = 0.005  # seconds
SLOW_FAILURE = 1.0  # seconds: a fetch that failed after this long is remembered (see failure_memory)
# A run is a stream only while it has read at least 1/DENSITY of the bytes it passed over. Holes a reader
# never fills are the norm for a sequential reader too: pages the kernel already holds (another reader of
# the file, an earlier read) are never asked for. A sparse reader (a pread every 600 KiB, strided chunks)
# reads far less than it passes over and stays a random reader; a reader that reads ahead costs itself
# at most DENSITY times what it reads, until it stops.
DENSITY = 4


@dataclass(frozen=True)
class PrefetchConfig:
    part_size: int = 8 * MiB  # one range GET while streaming: the size that saturates S3 (mountpoint, CRT)
    min_window: int = 256 * 1024  # the smallest read-ahead window of a stream
    # A reader that read this much from offset 0 in sequence is a cp, a cat, a checksum: it gets its whole
    # window at once, as boto3's download_file starts all its GETs at once (growing 4x per read, a stream
    # on a 20 ms link took ~5 round trips to reach its window). It must stay above one buffer: Python's
    # open().read(100) reads 1 MiB (st_blksize), which the kernel's 128 KiB readahead turns into 1.125 MiB
    # in sequence; at 512 KiB such a reader set off the whole window (a 24 MiB file read in full). So one
    # buffer, the kernel's readahead and 128 KiB to spare (the mount derives it from read_ahead_kb).
    # Measured A/B on the S3-like link (8 alternated rounds of a cold 256 MiB read): 1.06x faster than at
    # 2 MiB, the window opening one round trip sooner. BAM/CRAM headers (samtools: 64 KiB through the
    # kernel) stay far under it. What it costs: a reader that stops after 1.1-2 MiB (`head -c 1200K`; the
    # kernel reads ahead of it) now sets off a window, which its close() stops: a helper's trial fetched
    # 11-28 MiB on loopback instead of 2-6, and 3-11 MiB on the S3-like link instead of 1.9. dxfuse waits
    # for 1 MiB.
    ramp_run: int = MiB + 256 * 1024
    # After a jump, read-ahead starts only once this much was read in sequence: a region query reads a few
    # BGZF blocks and the kernel's own readahead already covers short runs.
    stream_threshold: int = 4 * MiB
    # Read-ahead for a short run (two reads in sequence after a jump, below stream_threshold): the most it
    # keeps ahead, four times the run at first. 0 where the kernel's page cache reads ahead of short runs
    # itself; under -o direct_io it does not, and a samtools region query made a GET per 32 KiB htslib read:
    # 1.7 s on the S3-like link (0.34 s through the page cache). The mount sets the kernel's own 128 KiB:
    # 0.64 s and 4.7-4.9% of the BAM (page cache: 5.04%); 256 KiB 0.42 s and 4.7-5.0%, 512 KiB 0.29 s and
    # 4.9-5.5% (bytes past the region's end that loopback fetches in full before the file is closed).
    short_window: int = 0
    # how far ahead a single stream may run: ten 8 MiB parts in flight, as download_file keeps. Measured on
    # the S3-like link (20 ms, 100 MB/s per connection): 64 MiB (eight) reached 0.76x download_file, 80 MiB
    # 0.87x; the daemon's peak RSS streaming 1 GiB went from 154 to 162 MB.
    max_window: int = 80 * MiB
    # On a near link the CPU is the limit, and each GET costs the daemon about 3 ms of it (botocore, urllib3,
    # the body loop): 128 GETs per GiB in 8 MiB parts. Two 24 MiB parts in flight, one arriving while the
    # other is read: measured A/B on loopback (8 alternated rounds of a cold 1 GiB read), 1.16-1.20x faster,
    # the daemon's CPU per GiB 1.2 -> 0.9 s, and a 1 GiB stream's peak RSS 151 MB instead of 158 (a smaller
    # window). One part ahead was 0.82x (nothing arrives while a part is read); 32 MiB parts gave no more
    # and a 190 MB peak. Not on a remote link: there ten GETs in flight are what fills it.
    near_part_size: int = 24 * MiB
    near_window: int = 48 * MiB
    back_tolerance: int = MiB  # a read this far behind the previous one is still "sequential"
    max_in_flight: int = 128 * MiB  # prefetched bytes in flight across all streams: backpressure
    # completed extents kept for re-reads: a few streams' windows plus many small index lookups, while the
    # daemon stays well under 200 MB streaming a large file
    cache_bytes: int = 128 * MiB
    workers: int = 10  # concurrent prefetch GETs across the mount: a whole window's parts at once
    wait_timeout: float = 85.0  # a read never waits longer than this for bytes in flight (S3's bound + 10 s)
    # A range whose fetch failed slowly (S3 stalled) fails again at once for this long: the kernel retries
    # a failed page read right away, and waiting out the S3 bound a second time would double what `head`
    # waits. A quick failure (403, an archived object) is simply retried.
    failure_memory: float = 5.0
    # seconds an object's ETag is trusted before the disk cache asks S3 again, and the memory cache's bytes of
    # an object no file has open are taken as its current ones (see Prefetcher.open)
    revalidate: float = 60.0


class Prefetcher:
    """The ReaderFactory of the fast path: one cache and one thread pool for the whole mount."""

    def __init__(self, objects: ObjectClient, stats: Stats, config: PrefetchConfig | None = None,
                 disk: DiskCache | None = None) -> None:
        self.objects, self.stats = objects, stats
        self.config = config or PrefetchConfig()
        self.disk = disk  # the persistent block cache, when -o disk_cache= turned it on
        # (bucket, key) -> the Version that files opened now share (with its bytes in the cache)
        self._versions: LRUCache = LRUCache(65_536)
        self._versions_lock = threading.Lock()
        self._etags: LRUCache = LRUCache(65_536)  # (bucket, key) -> (Tag, size, when learned by a HEAD)
        self.cache = ExtentCache(self.config.cache_bytes, recycle=objects.buffers.give)
        self.pool = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="bpfs-fetch")
        self.in_flight = Budget(self.config.max_in_flight)  # prefetched bytes not yet arrived
        self._failures: deque[tuple[float, ObjectId, int, int, BaseException]] = deque(maxlen=64)
        self._streams: weakref.WeakSet[PrefetchReader] = weakref.WeakSet()  # readers that read ahead now
        self._streams_lock = threading.Lock()
        objects.on_change.append(self.forget)
        # what the read path holds now: a window that outlives its file, or work stuck in flight, shows here
        stats.section("read_ahead", lambda: {"cache_bytes": self.cache.bytes, "in_flight_bytes": self.in_flight.used,
                                             "buffer_pool_bytes": objects.buffers.bytes,
                                             "streams": len(self._streams)})

    def forget(self, bucket: str, key: str) -> None:
        """bpfs wrote or deleted this object (a sample's file taken back and copied again under its name):
        nothing cached of its old bytes may be served, and files still open on them fail."""
        self.changed((bucket, key), None)

    def changed(self, obj: ObjectId, version: Version | None) -> None:
        """The object is another one now (`version`: the one it was, None: whichever is current)."""
        with self._versions_lock:
            current = self._versions.get(obj)
            if version is None or current is version:
                self._versions.pop(obj, None)
                version = version or current
        if version is not None:
            version.changed = True
        self.cache.forget(obj)
        self._etags.pop(obj, None)

    def open(self, bucket: str | None, key: str, size: int) -> PrefetchReader:
        """A reader of the object's current Version: files open at once share its cached bytes. A new Version
        where the object changed, its listed size did, or no file read it for `revalidate` seconds (an object
        replaced on the server meanwhile is then read whole, not failed on the first GET past the cache)."""
        obj = (bucket, key)
        with self._versions_lock:
            version = self._versions.get(obj)
            if version is None or version.changed or version.size != size or \
                    (not version.open_files and time.monotonic() - version.idle_since > self.config.revalidate):
                version = self._versions[obj] = Version(size)
            version.open_files += 1
        return PrefetchReader(self, obj, version)

    def closed(self, version: Version) -> None:
        with self._versions_lock:
            version.open_files -= 1
            version.idle_since = time.monotonic()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.disk is not None:
            self.disk.close()

    # -- fetching --------------------------------------------------------------------------------
    def fill(self, extent: Extent) -> None:
        """Fetch one extent's bytes (in the calling thread) and publish them."""
        started = time.monotonic()
        try:
            # where S3 is remote, readers take a part's bytes as they arrive (waiting for whole parts cost the
            # S3-like link 5%); on a near link the wakeups that takes cost more CPU than the wait (3-4%)
            data = self.fetch(extent.obj, extent.start, extent.end, prefetch=extent.prefetched,
                              cancelled=lambda: extent.abandoned, arrived=None if self.near() else extent.progress,
                              version=extent.version)
            if len(data) != extent.size:
                raise RemoteError(f"s3://{extent.obj[0]}/{extent.obj[1]}: short read at {extent.start} "
                                  f"({len(data)} of {extent.size} bytes)")
        except BaseException as exc:
            if isinstance(exc, ObjectChanged):
                log.warning("%s", exc)
                self.changed(extent.obj, extent.version)
            if isinstance(exc, BpfsError):
                # kept with its stack, the extent's future would hold the part's buffer, in a cycle only the
                # garbage collector breaks: closed files' cancelled windows kept the daemon at 135 MB, and after a
                # 403 a window's ten part buffers (80 MiB) stayed for good while the file was open
                kept(exc)
            if not isinstance(exc, Cancelled) and time.monotonic() - started > SLOW_FAILURE:
                self._failures.append((time.monotonic(), extent.obj, extent.start, extent.end, exc))
            self.cache.filled(extent, None, exc)
            return
        self.cache.filled(extent, data)
        if extent.abandoned:  # its file was closed while it was on the wire (see PrefetchReader.close)
            self.cache.remove(extent, recycle=False)

    def fetch(self, obj: ObjectId, start: int, end: int, prefetch: bool = False,
              cancelled: Callable[[], bool] | None = None,
              arrived: Callable[[object, int], None] | None = None,
              version: Version | None = None) -> bytearray | mmap.mmap | bytes:
        """Bytes [start, end): from the disk cache where it holds them, else from S3 (in whole blocks when the
        disk cache is on, so that what is fetched once is on disk for the next time). `prefetch`: a read-ahead
        worker asks, and writes what it fetched to disk itself (nobody waits on it). `cancelled`, `arrived`,
        `version`: see ObjectClient.get_range (with the disk cache on, bytes are served once the whole range
        is in)."""
        bucket, key = obj
        identity = self._identity(obj, version) if self.disk is not None else None
        if identity is None:  # no disk cache, or an object whose answers tell no version from another
            return self.objects.get_range(bucket, key, start, end, cancelled=cancelled, arrived=arrived,
                                          version=version)
        block = self.disk.config.block_size
        size = version.size if version is not None and version.size is not None else end
        first, last = start // block, (end - 1) // block
        base = first * block
        buffer = self.objects.buffers.take(min((last + 1) * block, size) - base)
        view = memoryview(buffer)
        missing: list[int] = []
        for index in range(first, last + 1):
            lo = index * block - base
            want = min(block, size - index * block)
            if self.disk.get_into(identity, index, view[lo:lo + want]) != want:
                missing.append(index)
        for run in _runs(missing):
            lo, hi = run[0] * block, min((run[-1] + 1) * block, size)
            data = self.objects.get_range(bucket, key, lo, hi, cancelled=cancelled, version=version)
            if len(data) != hi - lo:  # never blocks of the buffer left as they were (another read's bytes)
                raise RemoteError(f"s3://{bucket}/{key}: short read at {lo} ({len(data)} of {hi - lo} bytes)")
            view[lo - base:lo - base + len(data)] = data
            for index in run:
                piece = view[index * block - base:min((index + 1) * block, size) - base]
                if index * block + len(piece) <= lo + len(data):  # whole blocks only
                    self.disk.put(identity, index, piece, now=prefetch)
        if start == base and end == base + len(buffer):
            return buffer
        return bytes(view[start - base:end - base])

    def _identity(self, obj: ObjectId, version: Version | None = None) -> bytes | None:
        """The disk blocks' key for this object: its ETag (or Last-Modified), learned once per `revalidate`
        seconds (a HEAD), so a replaced object never serves its old bytes; None when S3 sends neither, as
        nothing could tell a replaced object's blocks from its old ones. The HEAD's Tag pins `version` (GETs
        send If-Match with it, so S3's bytes are of the object the blocks on disk are) and its size must be
        the listed one."""
        held = self._etags.get(obj)
        if held is None or time.monotonic() - held[2] > self.config.revalidate:
            size, tag = self.objects.head(obj[0], obj[1])
            held = (tag, size, time.monotonic())
            self._etags[obj] = held
        where = f"s3://{obj[0]}/{obj[1]}"
        tag = held[0]
        if version is not None:
            if version.size is not None and held[1] != version.size:
                raise RemoteError(f"{where}: S3 holds {held[1]} bytes, {version.size} are listed: the object is "
                                  f"{'shorter' if held[1] < version.size else 'longer'} than its listing says; "
                                  "nothing of it is served")
            version.pin(tag, where)
        return DiskCache.identity(obj[0], obj[1], tag.key) if tag.key else None

    def near(self) -> bool:
        """Whether S3 answers quickly (NEAR_LINK). Not known before the first GET: remote until then, since
        a near link's two parts in flight would starve a remote one, while the reverse costs little."""
        return 0 < self.objects.latency < NEAR_LINK

    def recent_failure(self, obj: ObjectId, start: int, end: int) -> BaseException | None:
        """The error of a fetch of these bytes that failed moments ago, if any."""
        now = time.monotonic()
        for when, failed_obj, lo, hi, exc in list(self._failures):
            if failed_obj == obj and lo < end and start < hi and now - when < self.config.failure_memory:
                return exc
        return None

    def window_share(self, reader: PrefetchReader) -> int:
        """How far ahead this stream may read: its share of 5/8 of the cache. Windows that add up to more
        than the cache holds evict parts before they are read, and those are fetched again (four streams of
        64 MiB windows in the 128 MiB cache); the rest holds the parts being read and small extents."""
        with self._streams_lock:
            self._streams.add(reader)
            streams = len(self._streams)
        return max(self.config.min_window, self.config.cache_bytes * 5 // (8 * streams))

    def stream_ended(self, reader: PrefetchReader) -> None:
        with self._streams_lock:
            self._streams.discard(reader)
            if not self._streams:  # nobody streams now: what the pool holds goes back to the system
                self.objects.buffers.clear()

    def submit(self, extent: Extent) -> Future | None:
        def run() -> None:
            try:
                self.fill(extent)
            finally:
                self.in_flight.give(extent.size)

        try:
            return self.pool.submit(run)
        except RuntimeError:  # shutting down
            self.in_flight.give(extent.size)
            self.cache.filled(extent, None, RemoteError("the mount is shutting down"))
            return None


def _runs(indexes: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7, 8] -> [[1, 2, 3], [7, 8]]: consecutive blocks are fetched with one GET."""
    runs: list[list[int]] = []
    for index in indexes:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


Cancelled = GetCancelled  # a prefetch dropped (its file was closed): whoever waits fetches it again


class PrefetchReader:
    def __init__(self, prefetcher: Prefetcher, obj: tuple[str | None, str], version: Version) -> None:
        self.p = prefetcher
        self.obj = obj
        self.version = version
        self.closed = False
        self.size = version.size or 0
        self.next_offset: int | None = None  # where a sequential reader reads next
        self.run = 0  # bytes read in sequence since the last jump: the window grows with it
        self.run_start = 0  # where that run began: a stream drops only what it read itself
        self.jump_end = 0  # where the read that began it ended: a run reads on past it (not the same again)
        self.from_start = False  # the stream began at offset 0 (a cp, a cat): read ahead at once
        self.first_end = 0  # where the first read from offset 0 ended: read-ahead starts past it
        self.ahead = 0  # requested (or held) up to here
        self.wide_parts = 0  # GETs of the whole window so far: its first parts are smaller (see _part)
        self.lock = threading.Lock()
        self.queued: list[tuple[Future, Extent]] = []  # prefetches not finished yet (close() cancels them)
        self.mine: deque[Extent] = deque()  # what this reader read ahead and has not read yet

    def read(self, offset: int, size: int) -> bytes | memoryview:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        with self.lock:
            demand_end = self._advance(offset, end)
        for _attempt in range(3):
            try:
                return self._gather(offset, end, demand_end)
            except Cancelled:
                continue  # another file's prefetch we were waiting for was dropped: fetch it ourselves
        return self._gather(offset, end, demand_end)

    def _gather(self, offset: int, end: int, demand_end: int) -> bytes | memoryview:
        config = self.p.config
        if self.version.changed:
            raise ObjectChanged(f"s3://{self.obj[0]}/{self.obj[1]}: changed on the server while being read; "
                                "open the file again")
        failed = self.p.recent_failure(self.obj, offset, end)
        if failed is not None:
            raise failed
        covering, new = self.p.cache.claim(self.obj, offset, demand_end, prefetched=False, version=self.version)
        hits = len(covering) - len(new)
        if hits:
            self.p.stats.add("cache_hits", hits)
        if new:
            self.p.stats.add("cache_misses", len(new))
        self._prefetch()  # first: the parts ahead are on their way while this read waits for its own bytes
        for extent in new:
            self.p.fill(extent)  # inline: the reader is waiting for exactly these bytes
        chunks = []
        for extent in covering:
            try:
                # the bytes this read needs, once they are in, though the rest of the part is still arriving
                data = extent.bytes_until(min(end, extent.end), config.wait_timeout)
            except FutureTimeout:
                raise RemoteError(f"s3://{self.obj[0]}/{self.obj[1]}: no data after {config.wait_timeout:.0f}s") \
                    from None
            lo, hi = max(offset, extent.start), min(end, extent.end)
            if lo < hi:
                chunks.append(memoryview(data)[lo - extent.start:hi - extent.start])  # a view: no copy
        if (self.from_start or self.run >= config.stream_threshold) and offset > config.back_tolerance:
            self.p.cache.drop_consumed(self.obj, offset - self._back_tolerance(end - offset), after=self.run_start)
        # one extent (nearly always): its view goes to the FUSE reply, which copies it once into the kernel
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _back_tolerance(self, size: int) -> int:
        # the kernel keeps several readahead requests in flight and FUSE threads answer them out of order
        return max(self.p.config.back_tolerance, 8 * size)

    def _advance(self, offset: int, end: int) -> int:
        """Update the stream state for a read of [offset, end); returns how far to fetch inline."""
        previous = self.next_offset
        self.next_offset = max(end, previous or 0)
        if previous is None and offset == 0:
            # a fresh reader at the start (a BAM header, `head`, the start of a `cp`): exactly what the kernel
            # asked. mountpoint-s3 asks 1 MiB + 128 KiB; a 128 KiB first GET and a window right after it cost a
            # samtools region query 256 KiB of header it never read (0.5% of a 49 MB BAM), `head -c 100`
            # 272 KiB; a stream comes back for more at once and gets its window then.
            self.run_start, self.run = 0, end
            self.from_start = True
            self.first_end = end
            self.ahead = end
            self.wide_parts = 0
            return end
        tolerance = self._back_tolerance(end - offset)
        # a step forward of up to the same tolerance past what was asked also keeps the stream: the kernel
        # splits a 1 MiB read into readahead requests that different FUSE threads answer in any order, and a
        # reader from the start has no window yet that would cover one that overtakes the others
        if previous is not None and previous - tolerance <= offset <= max(self.ahead, previous + tolerance):
            self.run += end - offset  # a request that was overtaken counts too: it is part of the run
            self.ahead = max(self.ahead, end)
            return end
        self.run_start, self.run = offset, 0  # a jump: what is asked, no more, until reads follow each other
        self.jump_end = end
        self.from_start = False
        self.p.stream_ended(self)  # not a stream for now: its share goes to the others
        self.next_offset = end
        self.ahead = end
        self.wide_parts = 0
        return end

    def _prefetch(self) -> None:
        config = self.p.config
        with self.lock:
            short = self.run < config.stream_threshold and not self.from_start
            if short and not (config.short_window and self.run and (self.next_offset or 0) > self.jump_end):
                return  # a short run reads ahead only where asked, once it read on past its first read
            if self.from_start and (self.next_offset or 0) <= self.first_end:
                return  # one read from the start: a header, not yet a stream
            if self.run * DENSITY < (self.next_offset or 0) - self.run_start:
                return  # a sparse reader: what it skips, it does not want
            share = config.short_window if short else self.p.window_share(self)  # not a stream yet
            wide = self.run >= (config.ramp_run if self.from_start else config.stream_threshold)
            near = self.p.near()
            # a near link's large parts only while two fit in the stream's share of the cache: four streams
            # (20 MiB each) got odd pieces of them that no pool takes, and four `dd`s ran 14% slower than in
            # 8 MiB parts; parts of half the share were as fast as 8 MiB ones but held 30 MB more
            large = near and share >= 2 * config.near_part_size
            full_part = config.near_part_size if large else config.part_size
            if short:
                window = min(share, 4 * self.run)
            elif wide:
                window = min(config.near_window if large else config.max_window, share)
            else:
                # what keeps everything fetched for this run within DENSITY times what it read: 3x the run
                # for a reader that reads every byte, little for one that skips
                span = (self.next_offset or 0) - self.run_start
                window = min(config.max_window, share, max(config.min_window, DENSITY * self.run - span))
            target = min(self.size, (self.next_offset or 0) + window)
            # top up in whole parts: one GET per kernel read would be latency-bound
            if target - self.ahead < min(self._part(near, full_part), window // 2) and target < self.size:
                return
            start = self.ahead
            pieces = []
            while start < target:
                part = self._part(near, full_part) if wide else config.part_size
                piece = min(part, target - start)
                if piece < part and target < self.size and window >= 2 * full_part:
                    break  # a wide window tops up in whole parts: every GET pays a round trip, however small
                if not self.p.in_flight.take(piece):
                    break  # enough in flight for the whole mount: the next read tries again
                pieces.append((start, start + piece, piece == full_part or not wide))
                start += piece
                self.wide_parts += wide
            self.ahead = start
        for lo, hi, pooled in pieces:
            _, new = self.p.cache.claim(self.obj, lo, hi, prefetched=True, version=self.version)
            for extent in new:
                extent.pooled = pooled
            unclaimed = (hi - lo) - sum(e.size for e in new)
            if unclaimed:  # part of it was already held: give that reservation back
                self.p.in_flight.give(unclaimed)
            with self.lock:
                self.mine.extend(new)
                while self.mine and self.mine[0].end <= (self.next_offset or 0):
                    self.mine.popleft()  # read: nothing of it is left to give up
            for extent in new:
                future = self.p.submit(extent)
                if future is not None:
                    with self.lock:
                        self.queued.append((future, extent))
                    future.add_done_callback(self._forget)

    def _part(self, near: bool, full_part: int) -> int:
        """The next GET of a whole window. On a remote link 2, 2, 4, 4, 6, 6 MiB, then 8 MiB parts (part_size
        / 4 steps). Its parts all start at once, and a reader gets nothing of a part before all of it arrived:
        ten 8 MiB parts arrived together 104 ms after they started on a 20 ms, 100 MB/s link, the reader idle
        till then and the next GETs held back until it had read through them. Growing parts arrive in the
        order they are read, and the later GETs start spread out. Modelled, then measured A/B on that link
        (see README). Their buffers are not pooled: no later part takes their size, and pooled they kept the
        stream's peak RSS 20 MB higher. On a near link equal parts of `full_part` (near_part_size when two of
        them fit in the stream's share of the cache, see PrefetchConfig; part_size when not)."""
        if near:
            return full_part
        part = self.p.config.part_size
        return min(part, max(min(part, MiB), part * (1 + self.wide_parts // 2) // 4))

    def _forget(self, future: Future) -> None:
        """A prefetch that ran has nothing left to cancel. Kept, its extent would keep the bytes alive after the
        cache dropped them, for as long as the file stays open: outside cache_mb, up to a window per file."""
        with self.lock:
            self.queued = [(f, e) for f, e in self.queued if f is not future]

    def close(self) -> None:
        """Give up what this file read ahead and nobody read: a closed file should not keep the link busy nor
        fill the cache (with ten parts in flight, every window's GETs have started: a `head -c 3M` or a
        killed `cat` left a window of bytes coming in and then kept in memory). Prefetches not started are
        dropped, GETs on the wire stop at their next chunk, and what arrived is let go, unless another reader
        claims it in the meantime."""
        with self.lock:
            queued, self.queued = self.queued, []
            mine, self.mine = list(self.mine), deque()
        for extent in mine:
            extent.abandoned = True
        for future, extent in queued:
            if future.cancel():
                self.p.in_flight.give(extent.size)
                self.p.cache.filled(extent, None, Cancelled("prefetch cancelled: the file was closed"))
        for extent in mine:
            if extent.abandoned and extent.future.done():
                self.p.cache.remove(extent)
        if self.from_start or self.run >= self.p.config.stream_threshold:
            # and what a stream read is the kernel's now (its page cache): the parts kept behind the reader
            # for the kernel's re-reads go too (fifty killed streams had left 32 MiB in the cache)
            self.p.cache.drop_consumed(self.obj, self.next_offset or 0, after=self.run_start)
        self.p.stream_ended(self)  # last: with no stream left, the buffers just given back go too
        if not self.closed:
            self.closed = True
            self.p.closed(self.version)
