"""The samples/new/ drop box, the same in-process and through a mount: what each write records."""

from __future__ import annotations

import errno
import os
import uuid

import pytest

MiB = 1 << 20


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def data(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 131 + seed) % 251 for i in range(4096))
    return (block * (size // 4096 + 1))[:size]


def samples_named(emu, name: str) -> list[dict]:
    with emu.state.lock:
        return [dict(s) for s in emu.state.table("samples").values() if s["name"] == name]


def uploads_of(emu, sample_id: int) -> list[dict]:
    with emu.state.lock:
        rows = [dict(u) for u in emu.state.table("uploads").values() if u["sample"] == sample_id]
    return sorted(rows, key=lambda u: (u["order"], u["id"]))


@pytest.fixture(autouse=True)
def no_faults_left(fs):
    yield
    fs.clear_faults()


def test_a_sample_directory_becomes_a_paired_sample(fs):
    emu = fs.emulator
    name = unique("pair")
    fs.mkdir(f"samples/new/{name}")
    r1, r2 = data(3 * MiB + 5, 1), data(9 * MiB + 7, 2)  # R2 spans two parts
    fs.write_bytes(f"samples/new/{name}/{name}_R1.fastq.gz", r1)
    fs.write_bytes(f"samples/new/{name}/{name}_R2.fastq.gz", r2)
    (sample,) = samples_named(emu, name)
    uploads = uploads_of(emu, sample["id"])
    assert [(u["key"].rsplit("/", 1)[-1], u["order"], u["is_paired_end"], u["status"]) for u in uploads] == [
        (f"{name}_R1.fastq.gz", 0, False, "completed"), (f"{name}_R2.fastq.gz", 1, True, "completed")]
    assert [emu.store.get_bytes(emu.bucket, u["key"]) for u in uploads] == [r1, r2]
    assert sorted(fs.listdir(f"samples/new/{name}")) == [f"{name}_R1.fastq.gz", f"{name}_R2.fastq.gz"]
    assert f"{name}_R2.fastq.gz" in fs.listdir(f"samples/{sample['id']}")
    assert fs.read_bytes(f"samples/{sample['id']}/{name}_R2.fastq.gz") == r2
    assert fs.open_multipart_uploads() == []


def test_a_single_file_makes_a_single_end_sample(fs):
    name = unique("single")
    fs.write_bytes(f"samples/new/{name}.fq.gz", data(1000))
    (sample,) = samples_named(fs.emulator, name)
    assert [u["is_paired_end"] for u in uploads_of(fs.emulator, sample["id"])] == [False]


def test_an_empty_mkdir_creates_nothing_and_rmdir_forgets_it(fs):
    name = unique("empty")
    fs.mkdir(f"samples/new/{name}")
    assert name in fs.listdir("samples/new") and samples_named(fs.emulator, name) == []
    fs.rmdir(f"samples/new/{name}")
    assert name not in fs.listdir("samples/new")


def test_sample_json_sets_the_genome_and_a_bad_one_is_einval(fs):
    emu = fs.emulator
    name = unique("meta")
    fs.mkdir(f"samples/new/{name}")
    fs.write_bytes(f"samples/new/{name}/sample.json", b'{"genome": "mm10", "datatype": "chip-seq"}')
    fs.write_bytes(f"samples/new/{name}/x.fastq", data(100))
    (sample,) = samples_named(emu, name)
    assert sample["datatype"] == "chip-seq" and emu.state.genomes[sample["genome"]]["name"] == "mm10"
    for bad in (b"{not json", b'{"genome": "no-such-genome"}', b'{"colour": 1}', b"[" * 50000 + b"]" * 50000):
        other = unique("badmeta")
        fs.mkdir(f"samples/new/{other}")
        with pytest.raises(OSError) as info:
            fs.write_bytes(f"samples/new/{other}/sample.json", bad)
        assert info.value.errno == errno.EINVAL
        assert samples_named(emu, other) == []


def test_a_hole_is_zeros_but_a_write_back_into_it_fails_the_file(fs):
    """A write past the end (cp skipping a sparse file's hole) fills the gap with zeros; writing back into
    the gap afterwards, or past a gap of more than 256 MiB, fails the file: nothing is recorded."""
    emu = fs.emulator
    name = unique("hole")
    fd = fs.open(f"samples/new/{name}.fastq", os.O_WRONLY | os.O_CREAT)
    fs.write_fd(fd, b"x" * 1000)
    fs.pwrite(fd, b"y" * 10, 5000)
    fs.close(fd)
    ((sample,),) = (samples_named(emu, name),)
    (upload,) = uploads_of(emu, sample["id"])
    assert emu.store.get_bytes(emu.bucket, upload["key"]) == b"x" * 1000 + bytes(4000) + b"y" * 10
    for gap, back in ((5000, 2000), (1000 + (256 << 20) + 1, None)):
        other = unique("holeback")
        fd = fs.open(f"samples/new/{other}.fastq", os.O_WRONLY | os.O_CREAT)
        fs.write_fd(fd, b"x" * 1000)
        with pytest.raises(OSError) as raised:
            if back is not None:
                fs.pwrite(fd, b"y", gap)
            fs.pwrite(fd, b"z", back if back is not None else gap)
        assert raised.value.errno == errno.ESPIPE
        with pytest.raises(OSError) as closing:
            fs.close(fd)
        assert closing.value.errno == errno.EIO
        assert samples_named(emu, other) == []


def test_writes_must_be_sequential(fs):
    name = unique("seq")
    fd = fs.open(f"samples/new/{name}.fastq", os.O_WRONLY | os.O_CREAT)
    fs.write_fd(fd, b"x" * 1000)
    with pytest.raises(OSError) as raised:
        fs.pwrite(fd, b"y", 0)
    assert raised.value.errno == errno.ESPIPE
    with pytest.raises(OSError) as closing:
        fs.close(fd)
    assert closing.value.errno == errno.EIO
    assert samples_named(fs.emulator, name) == []


@pytest.mark.parametrize("operation", ["upload_part", "complete_multipart_upload", "create_multipart_upload"])
def test_a_failing_s3_step_fails_the_file_and_leaves_no_sample(fs, operation):
    name = unique(operation.split("_")[0])
    fs.fail_s3(operation, rf"/{name}\.fastq$", times=None)
    with pytest.raises(OSError) as raised:
        fs.write_bytes(f"samples/new/{name}.fastq", data(20 * MiB))
    assert raised.value.errno == errno.EIO
    assert samples_named(fs.emulator, name) == []
    assert fs.open_multipart_uploads() == []
    assert not fs.exists(f"samples/new/{name}.fastq")


def test_fsync_finishes_nothing(fs):
    emu = fs.emulator
    name = unique("fsync")
    fd = fs.open(f"samples/new/{name}.fastq", os.O_WRONLY | os.O_CREAT)
    try:
        fs.write_fd(fd, data(9 * MiB))
        fs.fsync(fd)
        (sample,) = samples_named(emu, name)
        assert [u["status"] for u in uploads_of(emu, sample["id"])] == ["in_progress"]
        fs.write_fd(fd, b"tail")
    finally:
        fs.close(fd)
    (upload,) = uploads_of(emu, samples_named(emu, name)[0]["id"])
    assert upload["status"] == "completed" and emu.store.get_bytes(emu.bucket, upload["key"]) == data(9 * MiB) + b"tail"


def test_rm_takes_an_upload_back(fs):
    emu = fs.emulator
    name = unique("rm")
    fs.mkdir(f"samples/new/{name}")
    fs.write_bytes(f"samples/new/{name}/a_R1.fq", data(100))
    fs.write_bytes(f"samples/new/{name}/a_R2.fq", data(200))
    (sample,) = samples_named(emu, name)
    fs.unlink(f"samples/new/{name}/a_R2.fq")
    assert [u["key"].rsplit("/", 1)[-1] for u in uploads_of(emu, sample["id"])] == ["a_R1.fq"]
    fs.unlink(f"samples/new/{name}/a_R1.fq")
    assert samples_named(emu, name) == []


def test_rm_of_an_open_file(fs):
    """A file still being written is refused (the upload goes on); an uploaded file open for reading is
    deleted at once, not renamed to a hidden name and copied."""
    emu = fs.emulator
    name = unique("rmopen")
    fs.mkdir(f"samples/new/{name}")
    fs.write_bytes(f"samples/new/{name}/a_R1.fq", data(300))
    writing = fs.open(f"samples/new/{name}/b_R1.fq", os.O_WRONLY | os.O_CREAT)
    fs.write_fd(writing, data(100))
    with pytest.raises(OSError) as refused:
        fs.unlink(f"samples/new/{name}/b_R1.fq")
    assert refused.value.errno == errno.EBUSY
    fs.close(writing)
    reading = fs.open(f"samples/new/{name}/a_R1.fq", os.O_RDONLY)
    try:
        fs.unlink(f"samples/new/{name}/a_R1.fq")
        assert sorted(fs.listdir(f"samples/new/{name}")) == ["b_R1.fq"]
        with pytest.raises(OSError) as gone:  # its object is deleted: the reader is told so
            fs.read_fd(reading, 100, 0)
        # ESTALE from bpfs; through a mount the kernel's page cache turns any failed page read into EIO
        assert gone.value.errno in (errno.ESTALE, errno.EIO)
    finally:
        fs.close(reading)
    (sample,) = samples_named(emu, name)
    assert [u["key"].rsplit("/", 1)[-1] for u in uploads_of(emu, sample["id"])] == ["b_R1.fq"]
    assert fs.read_bytes(f"samples/new/{name}/b_R1.fq") == data(100)


def test_deleting_a_sample_needs_allow_delete(make_fs):
    plain = make_fs()
    name = unique("del")
    plain.write_bytes(f"samples/new/{name}.fastq", data(100))
    (sample,) = samples_named(plain.emulator, name)
    with pytest.raises(OSError) as info:
        plain.rmdir(f"samples/{sample['id']}")
    assert info.value.errno == errno.EACCES
    deleting = make_fs("allow_delete")
    deleting.rmdir(f"samples/{sample['id']}")
    assert samples_named(deleting.emulator, name) == []
    with pytest.raises(FileNotFoundError):
        deleting.rmdir("samples/999999")
