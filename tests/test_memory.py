"""What a long-lived mount keeps: bounded caches, nothing for an idle open file, malloc tuned."""

from __future__ import annotations

import os
import random

from bpfs import memory
from bpfs.stats import Stats
from bpfs.tree.catalog import ListingCache
from tests.test_prefetch import make


def test_the_listing_cache_keeps_a_bounded_number_of_keys():
    cache = ListingCache(Stats(), max_keys=100)
    for i in range(5000):  # ids a script polls for, one after another
        assert cache.get(("analysis", i), lambda i=i: i, 60) == i
    assert len(cache._slots) <= 100


def test_a_paused_open_file_keeps_no_prefetched_extent():
    data = random.Random(5).randbytes(4 << 20)
    _, p = make({"k": data})
    try:
        r = p.open("b", "k", len(data))
        for offset in range(0, 1 << 20, 32 << 10):  # a stream: read-ahead runs
            assert r.read(offset, 32 << 10) == data[offset:offset + (32 << 10)]
        p.pool.shutdown(wait=True)  # every prefetch has run; the file stays open
        assert r.queued == []  # nothing to cancel, and no extent (with its bytes) kept alive past the cache
    finally:
        p.close()


def test_tune_malloc_runs_anywhere():
    memory.tune_malloc()  # glibc: two arenas and a fixed mmap threshold; elsewhere nothing
    assert "malloc" in memory.malloc_line()


def test_idle_drafts_beyond_the_bound_are_forgotten(emulator, tmp_path, monkeypatch):
    """A mount taking uploads for weeks keeps a bounded registry of drafts; busy ones always stay."""
    from bpfs.writing import sample_dropbox
    from tests.behaviour.conftest import in_process

    monkeypatch.setattr(sample_dropbox, "KEEP_DRAFTS", 3)
    monkeypatch.setattr(sample_dropbox, "DRAFT_IDLE_SECONDS", 0.0)
    with in_process(emulator, tmp_path) as fs:
        fd = fs.open("samples/new/busy_R1.fastq", os.O_WRONLY | os.O_CREAT)  # in flight: never forgotten
        fs.write_fd(fd, b"@r\nACGT\n+\nIIII\n")
        for i in range(6):
            fs.mkdir(f"samples/new/idle{i}")
        listed = set(fs.listdir("samples/new"))
        assert "busy_R1.fastq" in listed
        assert listed - {"busy_R1.fastq"} == {"idle4", "idle5"}  # the newest, up to the bound
        fs.close(fd)
        assert "busy_R1.fastq" in fs.listdir("samples/new")
