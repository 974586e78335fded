"""README promises that are easy to break without noticing: mtimes, the kernel cache for finished files,
read-2 names, index files beside their data, read sizes, SSE only on AWS. Both runners where the promise
is visible through the kernel; in-process where it is about what bpfs asks of S3."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from bpfs.remote.records import parse_time
from tests.helpers import api


def test_mtimes_come_from_the_api(fs):
    detail = api(fs.emulator, "analyses/10000")
    bam = next(f for f in detail["files"] if f["path"].endswith("/liver_rep1.bam"))
    assert fs.stat("analyses/10000/all/star/liver_rep1.bam").st_mtime == pytest.approx(
        parse_time(bam["last_updated"]), abs=1e-3)
    assert fs.stat("analyses/10000").st_mtime == pytest.approx(parse_time(detail["completed_on"]), abs=1e-3)
    sample = api(fs.emulator, "samples")["objects"][0]
    assert fs.stat(f"samples/{sample['id']}").st_mtime == pytest.approx(parse_time(sample["last_updated"]), abs=1e-3)


@pytest.mark.parametrize("name, paired", [("s_R2.fastq.gz", True), ("s_2.fq", True), ("s.R2.fastq", True),
                                          ("s_R2_001.fastq.gz", True), ("s_R1.fastq.gz", False),
                                          ("s_12.fastq", False), ("R2.txt", False)])
def test_read_two_names(fs, name, paired):
    emu = fs.emulator
    draft = f"r2_{uuid.uuid4().hex[:8]}"
    fs.mkdir(f"samples/new/{draft}")
    fs.write_bytes(f"samples/new/{draft}/{name}", b"@r\nACGT\n+\nIIII\n")
    with emu.state.lock:
        (sample,) = [s for s in emu.state.table("samples").values() if s["name"] == draft]
        (upload,) = [u for u in emu.state.table("uploads").values() if u["sample"] == sample["id"]]
    assert upload["is_paired_end"] is paired


def test_keep_cache_for_finished_analyses_only(make_fs):
    fs = make_fs()
    if fs.name != "in_process":
        pytest.skip("the handle's cache flag shows in-process; the page cache itself: test_mount_read")
    finished = fs.fs.open("/analyses/10000/all/star/liver_rep1.bam", 0)[1]
    running = fs.fs.open("/analyses/10002/all/fastqc/liver_rep2_R1_fastqc.zip", 0)[1]
    generated = fs.fs.open("/analyses/10000/analysis.json", 0)[1]
    assert (finished.keep_cache, running.keep_cache) == (True, False)
    assert generated.direct_io and not finished.direct_io


def test_part_mb_sizes_the_range_gets_of_a_stream(make_fs):
    fs = make_fs("part_mb=1", "readers=2")
    if fs.name != "in_process":
        pytest.skip("counts the GETs bpfs makes, in-process")
    size = fs.stat("analyses/10000/bigwig/liver_rep1.bigwig").st_size
    fd = fs.open("analyses/10000/bigwig/liver_rep1.bigwig", 0)
    offset = 0
    while chunk := fs.read_fd(fd, 128 << 10, offset):
        offset += len(chunk)
    fs.close(fd)
    assert offset == size
    gets = [end - start for key, start, end in fs.s3.ranges if key.endswith("liver_rep1.bigwig")]
    assert max(gets) <= 1 << 20 and sum(gets) >= size
    assert len(gets) >= size // (1 << 20)
    tree = fs.fs.tree
    assert tree.readers.config.workers == 2 and tree.readers.config.part_size == 1 << 20


def test_cache_mb_bounds_the_memory_cache(make_fs):
    fs = make_fs("cache_mb=3")
    if fs.name != "in_process":
        pytest.skip("looks at the daemon's cache, in-process")
    assert fs.fs.tree.readers.cache.capacity == 3 << 20


def test_sse_is_asked_of_aws_only(make_fs):
    fs = make_fs()
    if fs.name != "in_process":
        pytest.skip("looks at what bpfs sends S3, in-process")
    fs.write_bytes(f"samples/new/sse_{uuid.uuid4().hex[:8]}.fastq", b"@r\nA\n+\nI\n")
    assert fs.s3.put_arguments and all("ServerSideEncryption" not in a for a in fs.s3.put_arguments)
    fs.s3.meta.endpoint_url = "https://s3.us-east-1.amazonaws.com"
    try:
        assert fs.objects.upload_args() == {"ServerSideEncryption": "AES256"}
    finally:
        fs.s3.meta.endpoint_url = "http://in-process.invalid"


def test_refresh_of_one_analysis_shows_its_new_files_before_the_ttl(make_fs):
    fs = make_fs("running_ttl=3600")
    emu = fs.emulator
    before = set(fs.listdir("analyses/10002/all"))
    key = f"analyses/7/10002/late/late_{uuid.uuid4().hex[:6]}.txt"
    emu.store.put(emu.bucket, key, b"late\n")
    record = emu.state.add_file(10002, key, ["late"], 5, "late", datetime.now(UTC))
    try:
        assert set(fs.listdir("analyses/10002/all")) == before  # cached for an hour
        fs.write_bytes(".bpfs/refresh", b"analyses/10002\n")
        assert "late" in fs.listdir("analyses/10002/all")
        assert fs.read_bytes(f"analyses/10002/late/{key.rsplit('/', 1)[-1]}") == b"late\n"
    finally:
        with emu.state.lock:
            emu.state.files.pop(record["id"], None)
            emu.state.analyses[10002]["file_ids"].remove(record["id"])
