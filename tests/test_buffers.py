"""Fetch buffers are reused, and never while anything still reads them (no FUSE, no network)."""

from __future__ import annotations

import errno
import io
import random
import threading
import time
import tracemalloc
from concurrent.futures import Future

import pytest

from bpfs.errors import BpfsError
from bpfs.memory import BufferPool
from bpfs.stats import Stats
from bpfs.writing.upload import MIN_PART, ObjectStream, UploadConfig, UploadPool
from tests.test_prefetch import DATA, KiB, make

MiB = 1 << 20


class PartStore:
    """Just enough of the ObjectClient for uploads: keeps each part as the bytes it was sent."""

    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}  # of the last key that sent parts (the tests read one file's)
        self.by_key: dict[tuple[str, int], bytes] = {}
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def create_multipart_upload(self, bucket, key):
        return "u1"

    def upload_part(self, bucket, key, upload_id, number, body):
        # what botocore sends in one piece, or a part filled on disk, from its start
        assert isinstance(body, bytes | bytearray) or body.tell() == 0
        with self.lock:
            part = bytes(body) if isinstance(body, bytes | bytearray) else body.read()
            self.parts[number] = self.by_key[key, number] = part
            self.sent_from_disk = getattr(self, "sent_from_disk", 0) + (not isinstance(body, bytes | bytearray))
        return f"e{number}"

    def complete_multipart_upload(self, bucket, key, upload_id, parts):
        self.objects[key] = b"".join(self.by_key[key, n] for n, _ in sorted(parts))

    def put_object(self, bucket, key, body):
        self.objects[key] = bytes(body) if isinstance(body, bytes | bytearray) else body.read()

    def abort_multipart_upload(self, bucket, key, upload_id):
        pass


def test_a_buffer_still_viewed_is_not_handed_out_again():
    pool = BufferPool(smallest=1)
    buffer = pool.take(64 * KiB)
    first = id(buffer)
    view = memoryview(buffer)[100:200]  # a FUSE reply being copied out of it
    pool.give(buffer)
    del buffer
    other = pool.take(64 * KiB)
    assert id(other) != first and pool.reused == 0
    view.release()
    del view
    pool.give(other)
    del other
    again = pool.take(64 * KiB)
    assert pool.reused == 1 and id(again) == first  # the one no longer viewed, oldest first


def test_a_buffer_an_extent_still_holds_is_not_handed_out_again():
    """A reader that claimed an extent reads its result later: the bytes must still be the extent's."""
    pool = BufferPool(smallest=1)
    buffer = pool.take(8 * KiB)
    buffer[:4] = b"keep"
    held: Future = Future()
    held.set_result(buffer)
    pool.give(buffer)
    del buffer
    fresh = pool.take(8 * KiB)
    fresh[:4] = b"next"
    assert bytes(held.result()[:4]) == b"keep" and pool.reused == 0
    del held
    assert pool.take(8 * KiB) is not fresh and pool.reused == 1


def test_only_the_same_size_is_reused_and_the_pool_is_bounded():
    pool = BufferPool(capacity=3 * 8 * KiB, smallest=1)
    buffers = [pool.take(8 * KiB) for _ in range(5)]
    for buffer in buffers:
        pool.give(buffer)
    del buffer, buffers
    assert pool.bytes == 3 * 8 * KiB  # the oldest went back to the system
    assert pool.take(16 * KiB) is not None and pool.reused == 0
    pool.take(8 * KiB)
    assert pool.reused == 1 and pool.bytes == 2 * 8 * KiB
    pool.clear()
    assert pool.bytes == 0


def test_an_idle_buffer_goes_back_to_the_system():
    pool = BufferPool(idle=0.0, smallest=1)
    pool.give(pool.take(8 * KiB))
    pool.give(pool.take(16 * KiB))  # the 8 KiB one waited longer than `idle`
    assert pool.bytes == 16 * KiB


def test_small_buffers_are_not_pooled():
    pool = BufferPool()
    small = pool.take(4 * KiB)
    assert isinstance(small, bytearray)
    pool.give(small)
    assert pool.bytes == 0


def test_readers_racing_evictions_always_get_the_objects_bytes():
    """Four readers, sequential and random, over a cache far smaller than the object: extents are dropped
    and their buffers handed out again all the time, while other readers still hold views of them."""
    client, p = make({"k": DATA}, cache_bytes=192 * KiB, max_window=128 * KiB)
    errors: list[str] = []

    def sequential(seed: int) -> None:
        reader = p.open(None, "k", len(DATA))
        offset, rng = 0, random.Random(seed)
        while offset < len(DATA):
            size = rng.choice([4 * KiB, 32 * KiB, 128 * KiB])
            got = bytes(reader.read(offset, size))
            if got != DATA[offset:offset + size]:
                errors.append(f"sequential {seed} at {offset}")
                return
            offset += size
        reader.close()

    def scattered(seed: int) -> None:
        reader = p.open(None, "k", len(DATA))
        rng = random.Random(seed)
        for _ in range(300):
            offset, size = rng.randrange(len(DATA)), rng.randrange(1, 96 * KiB)
            if bytes(reader.read(offset, size)) != DATA[offset:offset + size]:
                errors.append(f"scattered {seed} at {offset}")
                return
        reader.close()

    threads = [threading.Thread(target=f, args=(seed,)) for seed, f in
               enumerate([sequential, sequential, scattered, scattered])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p.close()
    assert not errors
    assert client.buffers.reused > 0  # the race was really run


def test_the_prefetcher_gives_dropped_buffers_back():
    client, p = make({"k": DATA})
    reader = p.open(None, "k", len(DATA))
    for offset in range(0, len(DATA), 32 * KiB):
        assert bytes(reader.read(offset, 32 * KiB)) == DATA[offset:offset + 32 * KiB]
    assert client.buffers.reused > 0
    reader.close()
    assert client.buffers.bytes == 0  # the last stream ended: nothing kept


def test_an_upload_reuses_its_part_buffers_and_sends_every_byte_once():
    """Odd write sizes across part boundaries, each write's buffer overwritten right after (FUSE lends
    its own): the object is exactly what was written, and later parts are filled in reused buffers."""
    store = PartStore()
    pool = UploadPool(store, Stats(), UploadConfig(part_size=MIN_PART, per_file=2, max_parts=2))
    rng = random.Random(7)
    data = rng.randbytes(6 * MIN_PART + 12345)
    stream = ObjectStream(pool, "b", "k")
    lent = bytearray(3 * MiB)
    offset = 0
    while offset < len(data):
        n = min(rng.choice([1, 4095, 128 * KiB, MiB, 3 * MiB]), len(data) - offset)
        lent[:n] = data[offset:offset + n]
        stream.append(memoryview(lent)[:n])
        lent[:n] = b"\0" * n  # the lender reuses its buffer at once
        offset += n
    assert stream.finish() == len(data)
    pool.shutdown()
    assert store.objects["k"] == data
    assert len(store.parts) == 7 and all(len(store.parts[n]) == MIN_PART for n in range(1, 7))
    assert pool.buffers.reused > 0
    assert pool.buffers.bytes == 0  # the pool was shut down: it let its buffers go


def _wait_empty(pool: BufferPool, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while pool.bytes and time.monotonic() < deadline:
        time.sleep(0.05)


def test_the_next_file_fills_the_parts_of_the_last_and_an_idle_pool_lets_them_go():
    store = PartStore()
    pool = UploadPool(store, Stats(), UploadConfig(part_size=MIN_PART, per_file=2, max_parts=2))
    pool.buffers.idle = 0.5
    data = random.Random(8).randbytes(4 * MIN_PART)
    for key in ("a", "b"):
        reused = pool.buffers.reused
        stream = ObjectStream(pool, "b", key)
        for offset in range(0, len(data), MiB):
            stream.append(data[offset:offset + MiB])
        assert stream.finish() == len(data) and store.objects[key] == data
        kept = pool.buffers.bytes
        assert kept >= MIN_PART  # kept for a file that may come next
    assert pool.buffers.reused - reused >= 2  # "b" filled its parts in buffers "a" gave back
    held = ObjectStream(pool, "b", "held")  # a file held open, idle: it pins nothing
    held.append(b"@r1\n")
    time.sleep(0.2)
    assert pool.buffers.bytes == kept  # not yet
    _wait_empty(pool.buffers)
    assert pool.buffers.bytes == 0  # nobody took or gave a part for `idle` seconds: back to the system
    assert held.finish() == 4
    pool.shutdown()


def test_a_pool_in_use_keeps_its_buffers_and_lets_them_go_when_idle():
    pool = BufferPool(capacity=64 * MiB, idle=0.4, smallest=MIN_PART, make=bytearray, sweep=True)
    pool.give(bytearray(MIN_PART))
    pool.give(bytearray(MIN_PART))
    for _ in range(4):  # in use for twice `idle`
        time.sleep(0.2)
        pool.give(pool.take(MIN_PART))
    assert pool.bytes == 2 * MIN_PART
    _wait_empty(pool)
    assert pool.bytes == 0
    pool.give(bytearray(MIN_PART))  # and the next use starts over
    assert pool.bytes == MIN_PART
    _wait_empty(pool)
    assert pool.bytes == 0


def test_a_buffer_still_referenced_is_not_handed_out():
    pool = BufferPool(capacity=64 * MiB, smallest=MIN_PART, make=bytearray)
    lent = bytearray(MIN_PART)
    pool.give(lent)
    assert pool.take(MIN_PART) is not lent  # somebody still holds it
    del lent
    pool.take(MIN_PART)
    assert pool.reused == 1  # nobody does now


def test_a_borrowed_write_is_copied_once_into_the_part():
    """`bytearray[a:b] = memoryview` makes a temporary copy of the view first: a 1 MiB allocation per
    FUSE write (a fresh mapping: 256 page faults). The part is filled through a view of it instead."""
    store = PartStore()
    pool = UploadPool(store, Stats(), UploadConfig(part_size=MIN_PART, per_file=2, max_parts=2))
    stream = ObjectStream(pool, "b", "k")
    lent = bytearray(random.Random(9).randbytes(MiB))
    for _ in range(MIN_PART // MiB):  # the first part, grown as written, then shipped
        stream.append(memoryview(lent))
    assert stream._part is not None  # the second part: a whole buffer, being filled
    tracemalloc.start()
    try:
        for _ in range(2):
            stream.append(memoryview(lent))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * KiB
    written = MIN_PART + 2 * MiB
    assert stream.finish() == written and store.objects["k"] == bytes(lent) * (written // MiB)
    pool.shutdown()


def test_a_small_file_costs_only_its_size():
    store = PartStore()
    pool = UploadPool(store, Stats())
    stream = ObjectStream(pool, "b", "small")
    stream.append(b"@r1\nACGT\n+\nIIII\n")
    assert len(stream._part) == 16
    assert stream.finish() == 16 and store.objects["small"] == b"@r1\nACGT\n+\nIIII\n"
    pool.shutdown()


def test_files_written_at_once_past_the_filling_budget_fill_their_parts_on_disk():
    """However many files are written at once, the parts being filled in memory stay within the mount's
    budget: the rest fill temporary files, sent from there. Every object is exact, written round-robin
    (a demultiplexer's outputs), and the budget is all given back."""
    store = PartStore()
    stats = Stats()
    pool = UploadPool(store, stats, UploadConfig(part_size=MIN_PART, per_file=2, max_parts=2,
                                                 filling_bytes=MIN_PART + MiB))
    rng = random.Random(4)
    sizes = [2 * MIN_PART + 12345, MIN_PART // 2, MIN_PART + 7, 3 * MiB]
    data = [rng.randbytes(n) for n in sizes]
    streams = [ObjectStream(pool, "b", f"k{i}") for i in range(len(sizes))]
    peak = 0
    for offset in range(0, max(sizes), 256 * KiB):
        for stream, body in zip(streams, data, strict=True):
            if offset < len(body):
                stream.append(memoryview(body)[offset:offset + 256 * KiB])
                peak = max(peak, pool.filling.used)
    assert peak <= MIN_PART + MiB
    for i, stream in enumerate(streams):
        assert stream.finish() == sizes[i] and store.objects[f"k{i}"] == data[i]
    assert pool.filling.used == 0 and stats.snapshot()["upload_parts_spilled"] > 0 and store.sent_from_disk > 0
    spilled = ObjectStream(pool, "b", "gone")  # a file that fails: its temporary file goes with it
    for _ in range(3):
        spilled.append(b"x" * MiB)
    spilled.abort()
    assert pool.filling.used == 0
    pool.shutdown()


class _Disk(io.BytesIO):
    """A temporary file whose disk fails at `fail` ("flush": the writer's last bytes do not fit; "seek":
    sending the part cannot read it back)."""

    def __init__(self, fail: str) -> None:
        super().__init__()
        self.fail = fail

    def flush(self) -> None:
        if self.fail == "flush":
            raise OSError(errno.ENOSPC, "No space left on device")

    def seek(self, *args) -> int:
        if self.fail == "seek" and args[1:] == (2,):
            raise OSError(errno.EIO, "Input/output error")
        return super().seek(*args)


@pytest.mark.parametrize("fail", ["flush", "seek"])
def test_a_disk_failing_under_a_spilled_part_fails_the_file_never_a_gap(fail):
    """A spilled part that cannot be flushed or read back fails its file: the multipart upload is never
    completed without it (S3 accepts parts 2 and 3 without part 1: a short file recorded as complete)."""
    store = PartStore()
    pool = UploadPool(store, Stats(), UploadConfig(part_size=MIN_PART, per_file=2, max_parts=2, filling_bytes=MiB))
    pool.spill = lambda: _Disk(fail)
    stream = ObjectStream(pool, "b", "victim")
    with pytest.raises(BpfsError) as raised:
        for _ in range(3 * MIN_PART // (64 * KiB)):
            stream.append(b"x" * (64 * KiB))
        stream.finish()
    assert raised.value.errno == errno.EIO and "victim" not in store.objects
    assert fail != "flush" or "temporary file" in str(raised.value)
    pool.shutdown()
