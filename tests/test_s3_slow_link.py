"""A slow link that keeps sending is never cut: each read of a body asks for what arrives well within the
stall bound (the watchdog counts progress only when a read returns)."""

from __future__ import annotations

import gc
import random
import weakref

from bpfs.errors import AccessDenied
from bpfs.memory import BufferPool
from bpfs.reading.prefetch import PrefetchConfig, Prefetcher
from bpfs.remote import s3 as s3_module
from bpfs.remote.config import parse_config
from bpfs.remote.s3 import ObjectClient
from bpfs.stats import Stats
from bpfs.writing.upload import MIN_PART, ObjectStream, UploadConfig, UploadPool


def test_a_slow_steady_body_is_read_without_a_cut(emulator, monkeypatch):
    stats = Stats()
    client = ObjectClient(parse_config(emulator.config_v1(), environ={}), stats, read_timeout=1.0)
    data = random.Random(5).randbytes(1024 * 1024)
    client.put_object(None, "slow/steady.bin", data)
    monkeypatch.setattr(s3_module, "CONNECT_TIMEOUT", 0)  # the stall bound is read_timeout alone: 1 s
    # 2 s for the body, in 256 KiB bursts every 0.5 s: one read of all of it would outlast the 1 s bound
    emulator.s3.bandwidth = 512 * 1024
    try:
        got = client.get_range(None, "slow/steady.bin", 0, len(data))
    finally:
        emulator.s3.bandwidth = None
    assert bytes(got) == data
    assert stats.get("s3_errors") == 0, "the watchdog cut a body that kept arriving"
    assert stats.get("s3_requests") == 2  # the PUT and one GET: nothing resumed


def test_the_latency_of_a_link_is_learned_from_its_gets(emulator):
    """The read-ahead sizes its parts by how far S3 is (PrefetchReader._part): the median answer of the last
    GETs, so that a few quick answers do not make a remote link near."""
    client = ObjectClient(parse_config(emulator.config_v1(), environ={}), Stats())
    data = random.Random(6).randbytes(64 * 1024)
    client.put_object(None, "slow/latency.bin", data)
    assert client.latency == 0.0  # nothing learned yet
    emulator.s3.latency = 0.03
    try:
        for _ in range(2):
            assert bytes(client.get_range(None, "slow/latency.bin", 0, len(data))) == data
    finally:
        emulator.s3.latency = 0.0
    assert 0.03 <= client.latency < 1.0
    assert bytes(client.get_range(None, "slow/latency.bin", 0, len(data))) == data
    assert client.latency >= 0.03  # one quick answer in three: still remote
    for _ in range(2):
        assert bytes(client.get_range(None, "slow/latency.bin", 0, len(data))) == data
    assert client.latency < 0.03  # most answers are quick now


class _Part(bytearray):
    """A part buffer that can be watched (a weak reference tells whether anything still holds it)."""


def test_a_part_whose_get_was_refused_lets_its_buffer_go(emulator):
    """A 403 on a part: its error stays in the extent's future (and the failure memory) for a while, but the
    part's buffer must not. It was kept through the error's hidden context (the botocore error it was raised
    from, whose traceback holds get_range's frame and its buffer): 80 MiB per refused window, for as long as
    the file stayed open."""
    client = ObjectClient(parse_config(emulator.config_v1(), environ={}), Stats())
    made: list[weakref.ref] = []

    def make(size: int) -> _Part:
        part = _Part(size)
        made.append(weakref.ref(part))
        return part

    client.buffers = BufferPool(make=make)
    client.put_object(None, "refused/part.bin", random.Random(7).randbytes(1024 * 1024))
    prefetcher = Prefetcher(client, Stats(), PrefetchConfig())
    extent = prefetcher.cache.claim((None, "refused/part.bin"), 0, 1024 * 1024, prefetched=True)[1][0]
    emulator.faults_s3.add(method="GET", path="refused/part.bin", status=403, code="AccessDenied", times=1)
    gc.disable()  # the garbage collector would free a cycle; the buffer must go without it
    try:
        prefetcher.fill(extent)
        assert isinstance(extent.future.exception(), AccessDenied)
        assert made and all(ref() is None for ref in made), "a refused GET's buffer is still held"
    finally:
        gc.enable()
        emulator.faults_s3.clear()
        prefetcher.close()


def test_a_refused_upload_part_lets_its_buffer_go(emulator):
    """The same for a write: the upload keeps its error until the file is closed (every later write and the
    close report it), but not the refused part's buffer through the error's stack."""
    client = ObjectClient(parse_config(emulator.config_v1(), environ={}), Stats())
    pool = UploadPool(client, Stats(), UploadConfig(part_size=MIN_PART, per_file=2, max_parts=2))
    made: list[weakref.ref] = []

    def make(size: int) -> _Part:
        part = _Part(size)
        made.append(weakref.ref(part))
        return part

    pool.buffers = BufferPool(capacity=2 * MIN_PART, smallest=MIN_PART, make=make)
    emulator.faults_s3.add(method="PUT", path="refused/upload.bin", query="partNumber=2", status=403,
                           code="AccessDenied", times=None)
    stream = ObjectStream(pool, None, "refused/upload.bin")
    gc.disable()
    try:
        stream.append(random.Random(8).randbytes(2 * MIN_PART + 1))  # part 1 sent, part 2 filled in a pooled buffer
        stream.append(b"x")
        stream._drain()
        try:
            stream.check()
            raise AssertionError("the refused part did not fail the upload")
        except AccessDenied:
            pass
        pool.buffers.clear()
        assert len(made) == 2 and made[0]() is None, "the refused part's buffer is still held"  # part 2
        assert made[1]() is not None  # part 3, being filled: the stream's until it is aborted
    finally:
        gc.enable()
        emulator.faults_s3.clear()
        stream.abort()
        pool.shutdown()
