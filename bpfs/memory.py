"""The daemon's memory: glibc malloc tuned for a cache of byte ranges, and an opt-in allocation report.

`tune_malloc()` runs once when a mount starts, before any thread exists. Before it a mount under a
mixed load grew for as long as it ran (scripts/soak.py: 56 → 332 MB in 12 minutes with cache_mb=128,
+6 MB/min at the end) while Python itself held 100-160 MB: glibc kept 50-120 MB of freed memory
(mallinfo2 `fordblks`) in 16 arenas.

* Extents of the shared cache are freed in LRU order by whichever thread evicts them, long after they
  were allocated, so the holes they leave are scattered. glibc gives each thread its own arena (up to
  8 per CPU) and returns freed memory inside an arena to the OS only from its top: every arena keeps
  its own holes, and their sum grows. Nearly every allocation here is Python's, made under the GIL,
  so extra arenas buy no concurrency; two keep the holes where later allocations fill them.
* A buffer of 1 MiB or more (a part, a 1 MiB read) is mmapped on its own and goes back to the OS
  when freed. glibc raises that threshold (up to 32 MiB) after the first big buffer is freed, and
  from then on 8 MiB parts land in the arenas too (a 300 MB cp into samples/new/ peaked at 165 MB
  instead of 105 MB; streaming 1 GiB, 180-214 MB instead of 135-140 MB); setting it keeps it fixed.
  Fresh pages cost CPU: streaming takes 3.1-3.7 s of CPU per GiB with 1 MiB, 2.0-3.0 s untuned, and
  4.3-6.1 s with 128 KiB, which would keep the soak only 20 MB lower.

`BPFS_TRACEMALLOC=SECONDS` (a diagnostic, off by default: tracing costs CPU and memory) logs every
SECONDS the Python allocation sites holding the most memory, those grown most since the mount, and
glibc's own count of memory in use and kept free (scripts/soak.py --tracemalloc sets it). It is a
thread, not a signal handler: the main thread sits in libfuse's loop and never runs Python handlers.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable

log = logging.getLogger("bpfs.memory")

M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20  # parts and 1 MiB reads are mmapped, smaller buffers reuse arena memory (see above)
# glibc's default is 8 arenas per CPU, about one per thread of a mount; with 2 the soak ended 76 MB lower
ARENA_MAX = 2
TOP = 15  # allocation sites per report: enough to see a leak, few enough to read in the log


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to tune
        return None


def tune_malloc() -> None:
    """Return freed buffers to the OS instead of keeping them per thread (glibc only; a no-op elsewhere).
    Call it before the mount starts threads: glibc fixes its arena limit once threads have made arenas."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return
    libc.mallopt(M_ARENA_MAX, ARENA_MAX)
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


BIG_BUFFER = 256 << 10  # from this size a buffer lives in its own mapping and may be reused (see BufferPool)
# Private, not Python's default MAP_SHARED (an anonymous shared mapping is shmem: slower faults), and filled
# at once (MAP_POPULATE: one call instead of a page fault per 4 KiB as the socket writes into it)
_PRIVATE_FILLED = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
POOL_BYTES = 32 << 20  # four 8 MiB parts: what a stream frees while its next GETs start
POOL_IDLE = 5.0  # seconds a pooled buffer waits for reuse before it goes back to the system


class Budget:
    """A count of bytes held against a limit, shared by threads: what read-ahead has in flight, what
    uploads hold in parts being filled. Taking never waits; the caller decides what to do instead."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.used -= size


def mapped(size: int) -> mmap.mmap:
    """Room for bytes about to be overwritten, in its own mapping: bytearray(n) zeroes its memory first
    (a profile of a stream put a quarter of the daemon's time there); a mapping gets its pages from the
    kernel in one call, and goes back to the system whole when dropped."""
    return mmap.mmap(-1, size, flags=_PRIVATE_FILLED)


def _refcount(free: list, i: int) -> int:
    """References to the i-th pooled buffer, seen the way take() sees them. CPython's count includes those
    of the caller's frame, and which of them it counts changes between versions (3.14 borrows some)."""
    buffer = free[i][1]
    return sys.getrefcount(buffer)


_UNSHARED = _refcount([(0.0, bytearray(1))], 0)  # the count of a buffer only the pool's list refers to


class BufferPool:
    """Room for fetched or written bytes, reused. A fresh 8 MiB buffer costs 2.8 ms of kernel time (2048
    pages zeroed and mapped) and freeing it interrupts the other CPU (a TLB shootdown): about a sixth of
    the daemon's CPU while streaming. Buffers their holder no longer needs are given back, and the next
    request of the same size takes one again.

    A buffer is handed out again only when nothing else refers to it: a reader that still holds the
    extent, a memoryview being copied into a FUSE reply or written to the disk cache, a request still
    sending it all hold a reference, so its bytes never change under them (CPython's reference count
    says so exactly)."""

    def __init__(self, capacity: int = POOL_BYTES, idle: float = POOL_IDLE, smallest: int = BIG_BUFFER,
                 make: Callable[[int], bytearray | mmap.mmap] = mapped, sweep: bool = False) -> None:
        self.capacity, self.idle, self.smallest, self.make = capacity, idle, smallest, make
        self._free: list[tuple[float, bytearray | mmap.mmap]] = []  # (when given back, buffer), oldest first
        self._bytes = 0
        self._lock = threading.Lock()
        self.reused = 0  # buffers handed out again (tests and stats)
        self.sweep = sweep
        self._used = 0.0  # when a buffer was last taken or given back
        self._sweeper: threading.Thread | None = None  # running while the pool holds buffers (sweep=True)
        self._wake = threading.Condition(self._lock)

    def take(self, size: int) -> bytearray | mmap.mmap:
        """Room for `size` bytes about to be overwritten (its contents are undefined)."""
        if size < self.smallest or size <= 0:
            return bytearray(size)
        with self._lock:
            self._used = time.monotonic()
            free = self._free
            for i in range(len(free)):
                # no local name for the buffer before the count: it would be one more reference
                if len(free[i][1]) == size and _refcount(free, i) == _UNSHARED:  # anything more is a user
                    buffer = free.pop(i)[1]
                    self._bytes -= size
                    self.reused += 1
                    return buffer
        return self.make(size)

    def give(self, buffer: object) -> None:
        """A buffer its holder no longer needs (others may still read it: see the class)."""
        if not isinstance(buffer, mmap.mmap | bytearray) or not self.smallest <= len(buffer) <= self.capacity:
            return  # bytes are not writable; small ones are cheap
        now = time.monotonic()
        with self._lock:
            self._used = now
            self._free.append((now, buffer))
            self._bytes += len(buffer)
            free = self._free
            while free and (self._bytes > self.capacity or now - free[0][0] > self.idle):
                self._bytes -= len(free.pop(0)[1])
            if self.sweep and free and self._sweeper is None:
                self._sweeper = threading.Thread(target=self._sweep, name="bpfs-pool-sweep", daemon=True)
                self._sweeper.start()

    def _sweep(self) -> None:
        """Let every buffer go once nobody took or gave one for `idle` seconds (sweep=True): a writer that
        stopped, or a file held open and idle, keeps nothing. Ends when the pool is empty."""
        with self._lock:
            while self._free:
                left = self._used + self.idle - time.monotonic()
                if left <= 0:
                    self._free.clear()
                    self._bytes = 0
                    break
                self._wake.wait(left)
            self._sweeper = None

    def clear(self) -> None:
        """Let every pooled buffer go now: the read path's last stream ended, or shutdown. (A pool with
        `sweep` lets them go itself once unused.)"""
        with self._lock:
            self._free.clear()
            self._bytes = 0
            self._wake.notify_all()

    @property
    def bytes(self) -> int:
        return self._bytes


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_line() -> str:
    """glibc's view of the heap (mallinfo2, glibc >= 2.33): memory freed by Python but kept by malloc is `free`."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return "malloc: no mallinfo2 (not glibc >= 2.33)"
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    return (f"malloc: {m.arena / 1e6:.1f} MB in arenas ({m.uordblks / 1e6:.1f} MB in use, {m.fordblks / 1e6:.1f} MB "
            f"free), {m.hblkhd / 1e6:.1f} MB in {m.hblks} mmapped blocks")


def trace_from_env() -> None:
    """Start the allocation reports when BPFS_TRACEMALLOC is set (to their interval in seconds)."""
    value = os.environ.get("BPFS_TRACEMALLOC", "")
    if not value:
        return
    try:
        every = float(value)
    except ValueError:
        every = 0.0
    every = every if every >= 10 else 60.0  # "1" or "yes": once a minute (a report takes seconds under load)
    tracemalloc.start(8)  # frames per allocation: the caller of a botocore/urllib3 allocation shows too
    first = tracemalloc.take_snapshot()
    ignore = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>"),
              tracemalloc.Filter(False, "*/linecache.py"))  # the reports' own

    def report() -> None:
        while True:
            threading.Event().wait(every)
            snapshot = tracemalloc.take_snapshot().filter_traces(ignore)
            current, peak = tracemalloc.get_traced_memory()
            lines = [malloc_line(),
                     f"tracemalloc: {current / 1e6:.1f} MB traced (peak {peak / 1e6:.1f} MB); top sites:"]
            lines += [f"  {stat}" for stat in snapshot.statistics("lineno")[:TOP]]
            lines.append("tracemalloc: grown most since the mount (innermost frames last):")
            for stat in snapshot.compare_to(first, "traceback")[:TOP]:
                lines.append(f"  {stat.size_diff / 1e6:+.2f} MB, {stat.count_diff:+d} blocks, "
                             f"now {stat.size / 1e6:.2f} MB")
                lines += [f"      {line}" for line in stat.traceback.format()[-6:]]
            log.info("\n".join(lines))

    threading.Thread(target=report, name="bpfs-memtrace", daemon=True).start()
    log.info("tracemalloc on: a report every %.0f s", every)
