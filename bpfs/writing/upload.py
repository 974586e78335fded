"""Streaming one sequentially written file to S3 with bounded memory.

Bytes collect in a buffer; every full part goes to a small shared pool of uploader threads
as an UploadPart of a multipart upload that is started with the first full part. A file
smaller than one part (an empty one too) becomes one PutObject at the end, as `aws s3 cp`
does below its multipart threshold. Memory is bounded across the mount, however many files are
written at once: at most `max_parts` parts in flight (a writer that would exceed it, or its own
`per_file`, waits until S3 has taken a part), and at most `filling_bytes` of parts being filled;
beyond that a file fills its part in a temporary file (as s3fs-fuse and rclone's cache do for every
write), which is sent from there, so sixty files written at once cost disk, not 500 MB of memory.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO

from bpfs.errors import BpfsError, RemoteError, kept
from bpfs.memory import Budget, BufferPool
from bpfs.remote.s3 import ObjectClient
from bpfs.stats import Stats

log = logging.getLogger("bpfs.upload")

MIN_PART = 5 << 20  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's limit
GROW_EVERY = 1000  # the part size grows by one base part every 1000 parts (files above 8 GiB)
GROW_STEP = 1 << 20  # a first part takes the filling budget in steps of this (a FUSE write's size)


@dataclass(frozen=True)
class UploadConfig:
    part_size: int = 8 << 20  # mountpoint-s3's and the CRT's write part size: the smallest that fills a link
    # parts of one file in flight: on a link that caps each connection, one cp needs as many connections as
    # boto3's upload_file uses (10 threads)
    per_file: int = 10
    max_parts: int = 10  # parts in flight across the mount: at most 10 x 8 MiB
    # parts being filled, in memory, across the mount: eight files at full speed (a `parallel -j 8 cp`); more
    # files written at once fill theirs in temporary files
    filling_bytes: int = 64 << 20
    spill_dir: str | None = None  # where those go: None is $TMPDIR or /tmp


class UploadPool:
    """The uploader threads shared by every file being written, and the mount-wide cap on parts in flight."""

    def __init__(self, objects: ObjectClient, stats: Stats, config: UploadConfig | None = None) -> None:
        self.objects, self.stats = objects, stats
        self.config = config or UploadConfig()
        self.part_size = max(MIN_PART, self.config.part_size)
        self.slots = threading.BoundedSemaphore(self.config.max_parts)
        self.executor = ThreadPoolExecutor(self.config.max_parts, thread_name_prefix="bpfs-upload")
        # parts after a file's first are filled in buffers that sent parts give back: a fresh 8 MiB part is
        # faulted in a page at a time (a tenth of the daemon's CPU in a cp). It holds at most what was in
        # flight, so it adds nothing to the peak, and lets it go once nobody took a part for a few seconds:
        # the next file of a `cp *.fastq.gz` reuses it. bytearrays, which botocore sends in one piece.
        self.buffers = BufferPool(capacity=self.config.max_parts * self.part_size, smallest=MIN_PART,
                                  make=bytearray, sweep=True)
        self.filling = Budget(self.config.filling_bytes)  # memory held by parts being filled
        stats.section("upload_pool", lambda: {"bytes": self.buffers.bytes, "filling": self.filling.used})

    def spill(self) -> BinaryIO:
        """A part's temporary file: unlinked at once, so nothing is left behind whatever happens."""
        self.stats.add("upload_parts_spilled")
        try:
            return tempfile.TemporaryFile(dir=self.config.spill_dir)  # noqa: SIM115 - closed once sent
        except OSError as exc:
            where = self.config.spill_dir or tempfile.gettempdir()
            raise RemoteError(f"a part past the mount's memory budget cannot be filled in a temporary file in "
                              f"{where}: {exc.strerror or exc}") from None

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=False)
        self.buffers.clear()


class ObjectStream:
    """One S3 object written front to back. Not thread-safe: the caller holds the file's lock."""

    def __init__(self, pool: UploadPool, bucket: str | None, key: str,
                 on_multipart: Callable[[str], None] | None = None) -> None:
        self.pool, self.bucket, self.key = pool, bucket, key
        self.objects = pool.objects
        self.on_multipart = on_multipart  # told the multipart upload's id (the journal keeps it)
        self.size = 0  # bytes accepted so far
        self.uploaded = 0  # bytes S3 has acknowledged (parts done): the progress `bpfs status` shows
        self.upload_id: str | None = None
        # the part being filled: the first grows as written (a small file costs only its size), each later
        # one is whole from the start (see UploadPool.buffers); or, past the mount's budget, a temporary file
        self._part: bytearray | BinaryIO | None = None
        self._spilled = False
        self._filled = 0  # bytes written into it
        self._held = 0  # bytes of the pool's filling budget it holds
        self._parts: dict[int, str] = {}  # part number -> ETag
        self._futures: list[Future] = []
        self._slots = threading.BoundedSemaphore(pool.config.per_file)
        self._error: BpfsError | None = None
        self._error_lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------------
    def part_size(self, number: int) -> int:
        """Base-size parts up to part 1000, then one base size more every 1000 parts: with 8 MiB parts
        the 10,000 parts S3 allows cover about 430 GiB, and small files keep small parts."""
        return self.pool.part_size * (1 + (number - 1) // GROW_EVERY)

    def append(self, data: bytes | memoryview) -> None:
        """Take the next bytes (copied: `data` may be borrowed); blocks while too many parts are in flight.
        Raises once anything has failed, and from then on the stream can only fail: no later step may
        complete an object that lacks a part."""
        self.check()
        try:
            self.size += len(data)
            view = memoryview(data).cast("B")
            while len(view):
                if self._part is None:
                    self._start_part()
                n = min(self.part_size(self._next_number()) - self._filled, len(view))
                self._put(view[:n])
                view = view[n:]
                if self._filled == self.part_size(self._next_number()):
                    self._ship(self._take_part())
                    self._start_part()  # taken now, while the writer waits anyway (a pool buffer, or a file)
        except BaseException as exc:
            self._fail(exc if isinstance(exc, BpfsError) else RemoteError(f"s3://{self.bucket}/{self.key}: {exc!r}"))
            raise

    def finish(self) -> int:
        """Upload what is left and make the object; returns its size. Raises on any failure, then and later."""
        self.check()
        try:
            if self.upload_id is None:
                body = self._take_part() if self._part is not None else bytearray()
                try:
                    self.objects.put_object(self.bucket, self.key, _rewound(body))
                finally:
                    _close(body)
                self.uploaded += self.size
                self.pool.stats.add("bytes_uploaded", self.size)
                return self.size
            if self._part is not None and self._filled:
                self._ship(self._take_part())  # the last part: only what was written
            elif self._part is not None:
                self._drop_part()
            self._drain()
            self.check()
            if sorted(self._parts) != list(range(1, len(self._futures) + 1)):  # S3 would accept a gap
                raise RemoteError(f"s3://{self.bucket}/{self.key}: parts {sorted(self._parts)} of "
                                  f"{len(self._futures)} were sent; not completed")
            self.objects.complete_multipart_upload(self.bucket, self.key, self.upload_id,
                                                   list(self._parts.items()))
            self.upload_id = None
            return self.size
        except BaseException as exc:
            self._fail(exc if isinstance(exc, BpfsError) else RemoteError(f"s3://{self.bucket}/{self.key}: {exc!r}"))
            raise

    def sync(self) -> None:
        """fsync(): wait until every full part is in S3 and report a failure, without finishing the object
        (S3 has no partial object to make durable; the object exists only once the file is closed)."""
        self._drain()
        self.check()

    def abort(self) -> None:
        """Give up: wait for the parts in flight, then abort the multipart upload (best effort)."""
        self._drop_part()
        self._drain()
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        try:
            self.objects.abort_multipart_upload(self.bucket, self.key, upload_id)
        except BpfsError as exc:
            log.error("could not abort the multipart upload of s3://%s/%s: %s", self.bucket, self.key, exc)

    def check(self) -> None:
        with self._error_lock:
            error = self._error
        if error is not None:
            raise error

    # -- internals ---------------------------------------------------------------------------------
    def _next_number(self) -> int:
        return len(self._futures) + 1

    def _start_part(self) -> None:
        number = self._next_number()
        self._filled, self._spilled = 0, False
        if number == 1:
            self._part = bytearray()  # grows as written, holding the budget as it grows (_put)
        elif self.pool.filling.take(size := self.part_size(number)):
            self._part, self._held = self.pool.buffers.take(size), size
        else:
            self._part, self._spilled = self.pool.spill(), True

    def _put(self, chunk: memoryview) -> None:
        try:
            self._put_into(chunk)
        except OSError as exc:  # a temporary file's disk is full, read-only, failing
            raise self._disk_error(exc) from None

    def _put_into(self, chunk: memoryview) -> None:
        part = self._part
        if self._spilled:
            part.write(chunk)
        elif self._next_number() > 1:
            # through a view of the part: `bytearray[a:b] = memoryview` copies the right side into a
            # temporary bytearray first (CPython), a fresh 1 MiB mapping per FUSE write
            with memoryview(part) as target:
                target[self._filled:self._filled + len(chunk)] = chunk
        else:
            need = self._filled + len(chunk)
            if need > self._held:
                more = min(self.part_size(1), -(-need // GROW_STEP) * GROW_STEP) - self._held
                if self.pool.filling.take(more):
                    self._held += more
                else:  # the mount's budget is spent: on to disk with what this part holds so far
                    spill = self.pool.spill()
                    spill.write(part)
                    self._part, self._spilled = spill, True
                    self._let_go()
                    spill.write(chunk)
                    self._filled += len(chunk)
                    return
            part += chunk
        self._filled += len(chunk)

    def _take_part(self) -> bytearray | BinaryIO:
        """The part being filled, cut to what was written, out of the filling budget (it is sent next). A
        temporary file is flushed here, so a full disk fails the writer's call, not a part in flight."""
        part, self._part = self._part, None
        self._let_go()
        if self._spilled:
            try:
                part.flush()
            except OSError as exc:
                _close(part)
                raise self._disk_error(exc) from None
        elif len(part) > self._filled:
            del part[self._filled:]
        return part

    def _disk_error(self, exc: OSError) -> RemoteError:
        where = self.pool.config.spill_dir or tempfile.gettempdir()
        return RemoteError(f"s3://{self.bucket}/{self.key}: a part past the mount's memory budget could not be "
                           f"filled in a temporary file in {where}: {exc.strerror or exc}", errno.EIO)

    def _drop_part(self) -> None:
        part, self._part = self._part, None
        if part is not None and not self._spilled and self._next_number() > 1:
            self.pool.buffers.give(part)
        _close(part)
        self._let_go()

    def _let_go(self) -> None:
        held, self._held = self._held, 0
        if held:
            self.pool.filling.give(held)

    def _ship(self, part: bytearray | BinaryIO) -> None:
        number = self._next_number()
        if number > MAX_PARTS:
            _close(part)
            raise BpfsError(f"s3://{self.bucket}/{self.key}: more than {MAX_PARTS} parts (file too large)", errno.EFBIG)
        if self.upload_id is None:
            self.upload_id = self.objects.create_multipart_upload(self.bucket, self.key)
            if self.on_multipart is not None:
                self.on_multipart(self.upload_id)
        self._slots.acquire()  # backpressure: this file's parts in flight
        self.pool.slots.acquire()  # and the mount's
        try:
            future = self.pool.executor.submit(self._send, number, [part])  # a box: see _send
        except BaseException:
            self.pool.slots.release()
            self._slots.release()
            _close(part)
            raise
        self._futures.append(future)
        future.add_done_callback(self._release)

    def _release(self, _future: Future) -> None:
        self.pool.slots.release()
        self._slots.release()

    def _send(self, number: int, box: list[bytearray]) -> None:
        """Upload one part. It comes in a box that is emptied here: the executor holds its arguments until
        after the writer has been woken (the future's callbacks run first), and a part it still held
        could not be handed out again for the writer's next part."""
        part = box.pop()
        try:
            with self._error_lock:
                if self._error is not None:
                    return  # the upload is lost anyway: don't spend bandwidth on it
            size = _length(part)
            etag = self.objects.upload_part(self.bucket, self.key, self.upload_id, number, _rewound(part))
            self._parts[number] = etag
            self.uploaded += size
            self.pool.stats.add("bytes_uploaded", size)
            if isinstance(part, bytearray) and size == self.part_size(number):  # a cut last part fits no other
                self.pool.buffers.give(part)
        except BpfsError as exc:
            self._fail(kept(exc))  # kept with its stack, the failed part's buffer would stay with the upload
        except Exception as exc:  # noqa: BLE001 - anything (a bug, a disk error) must fail the file, not skip a part
            log.exception("part %d of s3://%s/%s", number, self.bucket, self.key)
            self._fail(RemoteError(f"part {number} of s3://{self.bucket}/{self.key}: {exc!r}"))
        finally:
            _close(part)

    def _fail(self, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc

    def _drain(self) -> None:
        if self._futures:
            wait(self._futures)


def _length(part: bytearray | BinaryIO) -> int:
    return len(part) if isinstance(part, bytearray) else part.seek(0, 2)


def _rewound(part: bytearray | BinaryIO) -> bytearray | BinaryIO:
    """A body to send: a temporary file is read from its start (botocore rewinds it again on a retry)."""
    if not isinstance(part, bytearray):
        part.seek(0)
    return part


def _close(part: bytearray | BinaryIO | None) -> None:
    if part is not None and not isinstance(part, bytearray):
        with contextlib.suppress(OSError):  # what it held was sent, or the upload failed already
            part.close()
