"""The persistent disk cache (-o disk_cache=): a re-read after a remount costs no S3 bytes; damaged blocks are
never served; the size stays bounded; mounts share a directory safely; a full disk only slows things down."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers import s3_bytes

BIGWIG = "analyses/10000/bigwig/liver_rep1.bigwig"
BIGWIG_KEY = "analyses/7/10000/star/liver_rep1.bigwig"
BAM = "analyses/10000/bam/liver_rep1.bam"


def fetched(fs) -> int:
    return fs.stats()["s3_bytes_fetched"]


def blocks(directory: Path) -> list[Path]:
    return [p for p in directory.glob("*/*") if not p.name.endswith(".tmp")]


def settle(fs) -> None:
    """Let the background writer put what was read on disk."""
    import time

    deadline = time.monotonic() + 20
    last = -1
    while time.monotonic() < deadline:
        now = fs.stats().get("disk_writes", 0)
        if now == last:
            return
        last = now
        time.sleep(0.5)


def test_a_reread_after_a_remount_costs_no_s3_bytes(make_fs, tmp_path):
    cache = tmp_path / "blocks"
    first = make_fs("disk_cache=1G", f"cache_dir={cache}")
    expected = s3_bytes(first.emulator, BIGWIG_KEY)
    assert first.read_bytes(BIGWIG) == expected
    bam = first.read_bytes(BAM)
    settle(first)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    again = make_fs("disk_cache=1G", f"cache_dir={cache}")  # a new mount: its memory is empty
    before = fetched(again)
    assert again.read_bytes(BIGWIG) == expected and again.read_bytes(BAM) == bam
    assert fetched(again) == before  # every byte came from disk
    assert again.stats()["disk_hits"] > 0


def test_a_damaged_block_is_dropped_and_fetched_again(make_fs, tmp_path):
    cache = tmp_path / "blocks"
    first = make_fs("disk_cache=1G", f"cache_dir={cache}")
    expected = s3_bytes(first.emulator, BIGWIG_KEY)
    first.read_bytes(BIGWIG)
    settle(first)
    on_disk = sorted(blocks(cache))
    assert len(on_disk) >= 4
    with open(on_disk[0], "r+b") as f:  # flip a byte of data
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open(on_disk[1], "r+b") as f:  # a torn write
        f.truncate(1000)
    on_disk[2].write_bytes(b"")  # an empty file
    again = make_fs("disk_cache=1G", f"cache_dir={cache}")
    assert hashlib.md5(again.read_bytes(BIGWIG)).hexdigest() == hashlib.md5(expected).hexdigest()
    assert again.stats()["disk_corrupt"] >= 3


def test_the_size_stays_bounded(make_fs, tmp_path):
    cache = tmp_path / "blocks"
    limit = 2 << 20
    fs = make_fs(f"disk_cache={limit}", f"cache_dir={cache}")
    assert fs.read_bytes(BIGWIG) == s3_bytes(fs.emulator, BIGWIG_KEY)  # 24 MiB through a 2 MiB cache
    settle(fs)
    on_disk = sum(p.stat().st_size for p in blocks(cache))
    assert 0 < on_disk <= limit + 2 * (256 << 10) + 4096
    assert fs.stats()["disk_evictions"] > 0


def test_two_mounts_share_one_directory(make_fs, tmp_path):
    cache = tmp_path / "blocks"
    a = make_fs("disk_cache=1G", f"cache_dir={cache}")
    b = make_fs("disk_cache=1G", f"cache_dir={cache}")
    expected = {BIGWIG: s3_bytes(a.emulator, BIGWIG_KEY)}
    results, errors = {}, []

    def read(fs, name):
        try:
            for _ in range(2):
                results[name] = fs.read_bytes(BIGWIG)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(fs, name)) for fs, name in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    assert not errors and results["a"] == results["b"] == expected[BIGWIG]


def test_a_replaced_object_is_read_anew_after_a_remount(make_fs, tmp_path):
    cache = tmp_path / "blocks"
    first = make_fs("disk_cache=1G", f"cache_dir={cache}")
    emu = first.emulator
    key = "analyses/7/10000/metrics/rnaseq_metrics.json"
    path = "analyses/10000/json/rnaseq_metrics.json"
    old = s3_bytes(emu, key)
    assert first.read_bytes(path) == old
    settle(first)
    new = bytes(reversed(old))  # same size, same API record: only the ETag tells
    emu.store.put(emu.bucket, key, new)
    try:
        again = make_fs("disk_cache=1G", f"cache_dir={cache}")
        assert again.read_bytes(path) == new
    finally:
        emu.store.put(emu.bucket, key, old)


@pytest.mark.skipif(os.getuid() != 0, reason="a tiny tmpfs needs root")
def test_a_full_disk_turns_writing_off_and_reads_go_on(make_fs, tmp_path):
    cache = tmp_path / "tiny"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cache)], check=True)
    try:
        fs = make_fs("disk_cache=1G", f"cache_dir={cache}")  # the limit is larger than the disk
        assert fs.read_bytes(BIGWIG) == s3_bytes(fs.emulator, BIGWIG_KEY)
        settle(fs)
        assert fs.stats()["disk_full"] >= 1
        assert fs.read_bytes(BIGWIG) == s3_bytes(fs.emulator, BIGWIG_KEY)
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)
