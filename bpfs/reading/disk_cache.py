"""A persistent block cache on disk: re-reading a BAM after a remount (IGV restarting, a pipeline's next
step, a notebook restarted) costs no S3 bytes.

Like mountpoint-s3's local cache: the object is cut into fixed blocks, each block one file named by
a hash of (bucket, key, the object's ETag, block index), so a changed object can never serve old
bytes. Each file carries a header with a CRC32 of its data, checked on every read: a torn, truncated
or corrupt block is deleted and fetched again, never served. Files are written to a temporary name
and renamed (atomic), so two mounts sharing one directory, or an unmount mid-write, leave nothing a
reader would misread. Writes happen on a background thread and are dropped rather than waited for.
The total stays within the limit plus a block or two: the writer evicts the least recently used
blocks before it writes. A full disk turns writing off for a while, with one log line; reads go on.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from bpfs.stats import Stats

log = logging.getLogger("bpfs.disk_cache")

MAGIC = b"BPFSBLK1"
HEADER = struct.Struct("<8sQII16s")  # magic, block index, data length, crc32 of data, identity digest
TEMP_SUFFIX = ".tmp"
TOUCH_EVERY = 60.0  # seconds: a block read again after this long is marked used (its mtime orders eviction)


@dataclass(frozen=True)
class DiskCacheConfig:
    directory: Path
    limit: int  # bytes on disk
    # 256 KiB: a random read (a BAM index lookup) costs at most one block from S3 on a miss, and a 20 GB
    # BAM is 80,000 files; mountpoint-s3 uses 1 MiB, which made a first region query cost 4x more here
    block_size: int = 256 << 10
    pending_writes: int = 256  # blocks queued for the writer (64 MiB); more are dropped, never waited for
    full_pause: float = 300.0  # after ENOSPC, seconds without writing (then it tries again)
    rescan_every: float = 60.0  # seconds between recounts of the directory (other mounts write there too)


class DiskCache:
    def __init__(self, config: DiskCacheConfig, stats: Stats) -> None:
        self.config, self.stats = config, stats
        self.root = config.directory
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        self._bytes = 0
        self._lock = threading.Lock()
        self._evicting = threading.Lock()
        self._paused_until = 0.0
        self._last_scan = 0.0
        self._queue: queue.Queue = queue.Queue(config.pending_writes)
        self._closed = False
        self._rescan(remove_temporaries=True)
        self._writer = threading.Thread(target=self._write_loop, name="bpfs-disk-cache", daemon=True)
        self._writer.start()

    def close(self) -> None:
        self._closed = True
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._writer.join(timeout=5)

    # -- naming ------------------------------------------------------------------------------------
    @staticmethod
    def identity(bucket: str | None, key: str, etag: str) -> bytes:
        return hashlib.blake2b(f"{bucket}\0{key}\0{etag}".encode(), digest_size=16).digest()

    def _path(self, identity: bytes, index: int) -> Path:
        name = identity.hex()
        return self.root / name[:2] / f"{name}.{index}"

    # -- reading -----------------------------------------------------------------------------------
    def get(self, identity: bytes, index: int) -> bytes | None:
        """The block, checked; None when absent, or damaged (which is then deleted)."""
        buffer = bytearray(self.config.block_size)
        got = self.get_into(identity, index, memoryview(buffer))
        return None if got is None else bytes(buffer[:got])

    def get_into(self, identity: bytes, index: int, view: memoryview) -> int | None:
        """Read the block straight into `view` (one copy: disk to the caller's buffer); its length, or None
        when absent or damaged (a damaged block is deleted, and its bytes in `view` mean nothing)."""
        path = self._path(identity, index)
        try:
            with open(path, "rb", buffering=0) as f:
                header = f.read(HEADER.size)
                got = f.readinto(view) if len(header) == HEADER.size else 0
                extra = f.read(1)
                st = os.fstat(f.fileno())
        except OSError:
            self.stats.add("disk_misses")
            return None
        if not self._intact(header, view[:got], identity, index) or extra:
            self.stats.add("disk_corrupt")
            log.warning("dropped a damaged cache block %s; it will be fetched again", path.name)
            self._remove(path)
            self.stats.add("disk_misses")
            return None
        self.stats.add("disk_hits")
        if time.time() - st.st_mtime > TOUCH_EVERY:  # least recently used goes first; a touch a minute is enough
            try:
                os.utime(path)
            except OSError:
                pass
        return got

    @staticmethod
    def _intact(header: bytes, data: memoryview, identity: bytes, index: int) -> bool:
        if len(header) < HEADER.size:
            return False
        magic, stored_index, length, crc, stored_identity = HEADER.unpack(header)
        return magic == MAGIC and stored_index == index and stored_identity == identity and \
            len(data) == length and zlib.crc32(data) == crc

    # -- writing -----------------------------------------------------------------------------------
    def put(self, identity: bytes, index: int, data: bytes | memoryview, now: bool = False) -> None:
        """Keep a block. `now`: write it in the calling thread (a read-ahead worker: nobody waits on it, and
        a stream's blocks must not be dropped); else queue it for the writer, dropped when the queue is full."""
        if self._closed or time.monotonic() < self._paused_until:
            return
        if now:
            try:
                self._write(identity, index, data)
            except OSError as exc:
                log.warning("could not write a cache block: %s", exc.strerror or exc)
            return
        try:
            self._queue.put_nowait((identity, index, bytes(data)))
        except queue.Full:
            self.stats.add("disk_dropped")

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(*item)
            except Exception:  # noqa: BLE001 - the cache must never take reads down with it
                log.exception("writing a cache block")

    def _write(self, identity: bytes, index: int, data: bytes | memoryview) -> None:
        path = self._path(identity, index)
        if path.exists():
            return
        size = HEADER.size + len(data)
        self._make_room(size)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_native_id()}{TEMP_SUFFIX}")
        try:
            path.parent.mkdir(exist_ok=True, mode=0o700)
            with open(temporary, "wb") as f:
                f.write(HEADER.pack(MAGIC, index, len(data), zlib.crc32(data), identity))
                f.write(data)
            os.rename(temporary, path)  # atomic: a reader sees the whole block or none
        except OSError as exc:
            self._remove(temporary)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._paused_until = time.monotonic() + self.config.full_pause
                log.warning("the disk cache at %s is full (%s): not writing to it for %.0f s; reads go on from S3",
                            self.root, exc.strerror, self.config.full_pause)
                self.stats.add("disk_full")
                return
            raise
        with self._lock:
            self._bytes += size
        self.stats.add("disk_writes")

    def _make_room(self, size: int) -> None:
        if time.monotonic() - self._last_scan > self.config.rescan_every:
            self._rescan()
        with self._lock:
            over = self._bytes + size - self.config.limit
        if over <= 0:
            return
        with self._evicting:  # one thread evicts; the others find the room it made
            with self._lock:
                over = self._bytes + size - self.config.limit
            if over <= 0:
                return
            over += self.config.limit // 10  # room for a while: a directory scan per block would be slow
            for path, _mtime, length in sorted(self._blocks(), key=lambda item: item[1]):  # oldest first
                if over <= 0:
                    break
                if self._remove(path):
                    over -= length
                    with self._lock:
                        self._bytes -= length
                    self.stats.add("disk_evictions")

    # -- the directory -----------------------------------------------------------------------------
    def _blocks(self) -> list[tuple[Path, float, int]]:
        out = []
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            try:
                entries = list(os.scandir(sub))
            except OSError:
                continue
            for entry in entries:
                if entry.name.endswith(TEMP_SUFFIX):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                out.append((Path(entry.path), st.st_mtime, st.st_size))
        return out

    def _rescan(self, remove_temporaries: bool = False) -> None:
        """Recount what is on disk (other mounts share the directory); drop temporaries a crash left."""
        if remove_temporaries:
            for temporary in self.root.glob(f"*/*{TEMP_SUFFIX}"):
                try:
                    if time.time() - temporary.stat().st_mtime > 60:  # not one another mount is writing now
                        temporary.unlink()
                except OSError:
                    pass
        total = sum(length for _, _, length in self._blocks())
        with self._lock:
            self._bytes = total
        self._last_scan = time.monotonic()

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    @staticmethod
    def _remove(path: Path) -> bool:
        try:
            path.unlink()
            return True
        except OSError:
            return False
