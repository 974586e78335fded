"""Creating samples through samples/new/ on real mounts, checked against the emulator's records and S3."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from bpfs.remote import api as bpfs_api
from tests.conftest import needs_fuse
from tests.helpers import (
    MiB,
    cp,
    digest,
    make_file,
    new_draft,
    open_mpus,
    samples_named,
    stored,
    stored_md5,
    the_sample,
    unique,
    uploads_of,
    uploads_with_key,
    wait_for,
)

pytestmark = needs_fuse

def check_uploaded(emu, sample: dict, files: list[tuple[Path, bool]]) -> list[dict]:
    """The sample's upload records match `files` (source, is read 2) in order, and S3 holds their bytes."""
    uploads = uploads_of(emu, sample["id"])
    assert len(uploads) == len(files)
    for order, (upload, (src, read2)) in enumerate(zip(uploads, files, strict=True)):
        assert upload["key"] == f"uploads/{emu.user_id}/{sample['id']}/{src.name}"
        assert upload["status"] == "completed"
        assert upload["order"] == order
        assert upload["is_paired_end"] is read2
        assert upload["filesize"] == src.stat().st_size
        assert upload["seq_length"] == 0
        assert isinstance(upload["timetaken"], int)
        assert stored_md5(emu, upload["key"]) == digest(src)
    return uploads


@pytest.fixture
def record_api(emulator, monkeypatch):
    """Every request body the emulator's API receives: [(method, path, body)]."""
    seen: list[tuple[str, str, dict]] = []
    original = emulator.api.handle

    def handle(method, path, query, body):
        if method in ("POST", "PUT"):
            try:
                seen.append((method, path, json.loads(body or b"{}")))
            except ValueError:
                pass
        return original(method, path, query, body)

    monkeypatch.setattr(emulator.api, "handle", handle)
    return seen


# -- the main flow -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", ["v3", "v1"])
def test_paired_sample_mkdir_and_cp(make_mount, tmp_path, dialect, record_api):
    m = make_mount(dialect)
    emu = m.emulator
    name = unique(f"liver_{dialect}")
    r1 = make_file(tmp_path / "src" / f"{name}_R1.fastq.gz", 20 * MiB + 12345)
    r2 = make_file(tmp_path / "src" / f"{name}_R2.fastq.gz", 3 * MiB)
    draft = new_draft(m, name)
    assert samples_named(emu, name) == []  # an empty mkdir creates nothing
    assert os.listdir(m.path / "samples" / "new").count(name) == 1
    cp(r1, r2, draft)

    sample = the_sample(emu, name)
    assert sample["datatype"] == "rna-seq"
    check_uploaded(emu, sample, [(r1, False), (r2, True)])
    assert open_mpus(emu) == []
    # the request bodies, as §8 of the API notes has them
    posts = [b for method, path, b in record_api if method == "POST" and "/uploads" in path]
    puts = [b for method, path, b in record_api if method == "PUT" and "/uploads/" in path]
    assert [p["status"] for p in posts] == ["in_progress", "in_progress"]
    assert all(p["sample"] == (sample["id"] if dialect == "v3" else f"{emu.api_url}api/v1/samples/{sample['id']}")
               for p in posts)
    assert [sorted(p) for p in puts] == [sorted(["filesize", "status", "timetaken", "seq_length"]
                                                + (["key"] if dialect == "v3" else []))] * 2

    # the drop box still lists what was copied; the sample is visible at once, byte-identical
    assert sorted(os.listdir(draft)) == sorted([r1.name, r2.name])
    assert (draft / r1.name).stat().st_size == r1.stat().st_size
    assert digest(draft / r2.name) == digest(r2)
    listed = m.path / "samples" / str(sample["id"])
    assert sorted(os.listdir(listed)) == sorted([r1.name, r2.name, "sample.json"])
    assert digest(listed / r1.name) == digest(r1) and digest(listed / r2.name) == digest(r2)
    index = (m.path / "samples" / "index.tsv").read_text().splitlines()
    assert any(line.split("\t")[:2] == [str(sample["id"]), name] for line in index)
    stats = m.stats()
    assert stats["uploads_completed"] == 2 and stats["uploads_in_flight"] == 0 and stats["uploads_failed"] == 0
    assert stats["bytes_uploaded"] == r1.stat().st_size + r2.stat().st_size


def test_cp_r_directory(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    name = unique("cpr")
    src = tmp_path / name
    files = [make_file(src / f"{name}_S1_L001_R1_001.fastq.gz", 9 * MiB),
             make_file(src / f"{name}_S1_L001_R2_001.fastq.gz", 9 * MiB)]
    cp("-r", src, m.path / "samples" / "new")
    sample = the_sample(emu, name)
    uploads = uploads_of(emu, sample["id"])
    by_name = {u["key"].rsplit("/", 1)[-1]: u for u in uploads}
    assert sorted(by_name) == sorted(f.name for f in files)
    assert sorted(u["order"] for u in uploads) == [0, 1]
    assert by_name[files[1].name]["is_paired_end"] is True and by_name[files[0].name]["is_paired_end"] is False
    for f in files:
        assert by_name[f.name]["status"] == "completed"
        assert stored_md5(emu, by_name[f.name]["key"]) == digest(f)


def test_rsync(make_mount, tmp_path):
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (apt-get install -y rsync)")
    m = make_mount()
    emu = m.emulator
    name = unique("rsync")
    src = tmp_path / name
    r1 = make_file(src / "reads_R1.fq.gz", 10 * MiB + 7)
    r2 = make_file(src / "reads_R2.fq.gz", 1000)
    result = subprocess.run(["rsync", "-a", str(src), str(m.path / "samples" / "new") + "/"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sample = the_sample(emu, name)
    uploads = uploads_of(emu, sample["id"])
    assert sorted(u["key"].rsplit("/", 1)[-1] for u in uploads) == ["reads_R1.fq.gz", "reads_R2.fq.gz"]
    for u in uploads:
        src_file = r1 if u["key"].endswith("R1.fq.gz") else r2
        assert u["status"] == "completed" and u["filesize"] == src_file.stat().st_size
        assert u["is_paired_end"] is (src_file is r2)
        assert stored(emu, u["key"]) == src_file.read_bytes()
    assert sorted(os.listdir(m.path / "samples" / "new" / name)) == ["reads_R1.fq.gz", "reads_R2.fq.gz"]
    assert not [k for k in emu.store.keys(emu.bucket, f"uploads/{emu.user_id}/{sample['id']}/") if "/." in k]


@pytest.mark.parametrize("flags", [["-a"], ["--inplace"]])
def test_rsync_single_file(make_mount, tmp_path, flags):
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (apt-get install -y rsync)")
    m = make_mount()
    name = unique("rsync1")
    src = make_file(tmp_path / f"{name}.fastq.gz", 2 * MiB)
    result = subprocess.run(["rsync", *flags, str(src), str(m.path / "samples" / "new") + "/"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sample = the_sample(m.emulator, name)
    (upload,) = uploads_of(m.emulator, sample["id"])
    assert upload["key"].endswith(f"/{src.name}")
    assert upload["status"] == "completed" and stored(m.emulator, upload["key"]) == src.read_bytes()
    assert src.name in os.listdir(m.path / "samples" / "new")


def test_rename_after_upload_moves_the_object(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    name = unique("mv")
    draft = new_draft(m, name)
    src = make_file(tmp_path / "x.fastq", 100_000)
    cp(src, draft / "tmp.fastq")
    os.rename(draft / "tmp.fastq", draft / "x_R2.fastq")
    (upload,) = uploads_of(emu, the_sample(emu, name)["id"])
    assert upload["key"].endswith("/x_R2.fastq") and upload["is_paired_end"] is True
    assert stored(emu, upload["key"]) == src.read_bytes()
    assert not emu.store.exists(emu.bucket, upload["key"].replace("x_R2.fastq", "tmp.fastq"))
    assert os.listdir(draft) == ["x_R2.fastq"]
    renamed = draft.with_name(name + "_renamed")
    os.rename(draft, renamed)  # renaming the draft renames its sample
    assert the_sample(emu, name + "_renamed")["id"] == upload["sample"]
    assert os.listdir(renamed) == ["x_R2.fastq"]


@pytest.mark.parametrize("filename,expected", [("single_S3.fastq.gz", "single_S3"), ("reads.fq.bz2", "reads"),
                                               ("notes.txt", "notes.txt")])
def test_single_file_makes_a_single_end_sample(make_mount, tmp_path, filename, expected):
    m = make_mount()
    emu = m.emulator
    tag = uuid.uuid4().hex[:8]
    src = make_file(tmp_path / f"{tag}_{filename}", 1_000_000)
    cp(src, m.path / "samples" / "new")
    sample = the_sample(emu, f"{tag}_{expected}")
    (upload,) = uploads_of(emu, sample["id"])
    assert upload["key"] == f"uploads/{emu.user_id}/{sample['id']}/{src.name}"
    assert upload["is_paired_end"] is False and upload["order"] == 0 and upload["status"] == "completed"
    assert stored(emu, upload["key"]) == src.read_bytes()
    assert (m.path / "samples" / "new" / src.name).stat().st_size == 1_000_000


def test_shell_redirection(make_mount, tmp_path):
    """`cat x > file`: the shell closes a dup'ed fd before cat writes; that close must not finish the file."""
    m = make_mount()
    emu = m.emulator
    name = unique("redirect")
    src = make_file(tmp_path / "in.fastq", 9 * MiB + 3)
    target = m.path / "samples" / "new" / f"{name}.fastq"
    result = subprocess.run(["bash", "-c", f'cat "{src}" > "{target}"'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (upload,) = uploads_of(emu, the_sample(emu, name)["id"])
    assert upload["status"] == "completed" and stored_md5(emu, upload["key"]) == digest(src)


# -- sample.json -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", ["v3", "v1"])
def test_sample_json_sets_genome_datatype_platform_info(make_mount, tmp_path, dialect, record_api):
    m = make_mount(dialect)
    emu = m.emulator
    name = unique(f"meta_{dialect}")
    genome = emu.state.genome_by_name("mm10")
    workflow_id = min(emu.state.table("workflows"))
    meta = tmp_path / "sample.json"
    meta.write_text(json.dumps({"genome": "mm10", "datatype": "chip-seq", "platform": "illumina",
                                "default_workflow": workflow_id, "info": {"stranded": "reverse"}}))
    draft = new_draft(m, name)
    cp(meta, draft)
    assert samples_named(emu, name) == []  # sample.json alone creates nothing yet
    assert json.loads((draft / "sample.json").read_text())["genome"] == "mm10"
    cp(make_file(tmp_path / "r_1.fq", 5000), draft)
    sample = the_sample(emu, name)
    assert sample["genome"] == genome["id"] and sample["datatype"] == "chip-seq"
    assert sample["platform"] == "illumina" and sample["info"] == {"stranded": "reverse"}
    assert sample["default_workflow"] == workflow_id
    (body,) = [b for method, path, b in record_api if method == "POST" and "/samples" in path]
    if dialect == "v3":
        assert body["genome"] == genome["id"] and body["default_workflow"] == workflow_id
        assert body["meta"] == {"source": "api"}
    else:
        assert body["genome"] == "mm10" and body["default_workflow"] == f"/api/v1/workflows/{workflow_id}"


@pytest.mark.parametrize("content", ["{not json", '{"genome": "no-such-genome"}', '{"genom": "hg19"}', "[1, 2]",
                                     '{"default_workflow": 7.5}', '{"default_workflow": 999}'])
def test_bad_sample_json_fails_and_creates_nothing(make_mount, tmp_path, content):
    m = make_mount()
    emu = m.emulator
    name = unique("badmeta")
    src = tmp_path / "in"
    (src / "sample.json").parent.mkdir()
    (src / "sample.json").write_text(content)
    r1 = make_file(src / "a_R1.fastq", 1000)
    draft = new_draft(m, name)
    result = cp(src / "sample.json", r1, draft, check=False)
    assert result.returncode != 0
    assert "Invalid argument" in result.stderr
    assert samples_named(emu, name) == []  # the data file is refused too: the settings were meant for it
    assert "sample.json" in m.log.read_text()
    os.unlink(draft / "sample.json")  # removing the bad file lifts the block
    cp(r1, draft)
    assert the_sample(emu, name)["datatype"] == "rna-seq"


def test_sample_json_after_the_data_updates_the_sample(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    name = unique("late_meta")
    draft = new_draft(m, name)
    cp(make_file(tmp_path / "a.fastq", 100), draft)
    (tmp_path / "sample.json").write_text('{"genome": "hg19", "info": {"barcode": "ACGT"}}')
    cp(tmp_path / "sample.json", draft)
    sample = the_sample(emu, name)
    assert sample["genome"] == emu.state.genome_by_name("hg19")["id"] and sample["info"] == {"barcode": "ACGT"}


def test_mount_options_give_defaults(make_mount, tmp_path):
    m = make_mount(options=("genome=hg19,datatype=atac-seq,platform=nanopore",))
    emu = m.emulator
    name = unique("defaults")
    (m.path / "samples" / "new" / name).mkdir()
    cp(make_file(tmp_path / "a.fastq", 100), m.path / "samples" / "new" / name)
    sample = the_sample(emu, name)
    assert sample["genome"] == emu.state.genome_by_name("hg19")["id"]
    assert sample["datatype"] == "atac-seq" and sample["platform"] == "nanopore"


# -- edge cases --------------------------------------------------------------------------------------------
def test_zero_byte_file(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    name = unique("empty")
    draft = new_draft(m, name)
    cp(make_file(tmp_path / "empty_R1.fastq", 0), draft)
    sample = the_sample(emu, name)
    upload = wait_for(lambda: [u for u in uploads_of(emu, sample["id"]) if u["status"] == "completed"],
                      what="the empty upload to complete")[0]
    assert upload["filesize"] == 0 and stored(emu, upload["key"]) == b""
    assert (draft / "empty_R1.fastq").stat().st_size == 0
    assert (m.path / "samples" / str(sample["id"]) / "empty_R1.fastq").read_bytes() == b""


def test_names_with_spaces(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    name = unique("my liver sample")
    draft = new_draft(m, name)
    src = make_file(tmp_path / "lane one R1.fastq.gz", 6 * MiB)
    cp(src, draft)
    sample = the_sample(emu, name)
    (upload,) = uploads_of(emu, sample["id"])
    assert upload["key"] == f"uploads/{emu.user_id}/{sample['id']}/lane one R1.fastq.gz"
    assert stored(emu, upload["key"]) == src.read_bytes()
    assert (m.path / "samples" / str(sample["id"]) / "lane one R1.fastq.gz").read_bytes() == src.read_bytes()


def test_two_samples_copied_concurrently(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    names = [unique("conc_a"), unique("conc_b")]
    sources = {n: [make_file(tmp_path / n / f"{n}_R1.fastq", 17 * MiB + 1),
                   make_file(tmp_path / n / f"{n}_R2.fastq", 17 * MiB + 2)] for n in names}
    results: dict[str, subprocess.CompletedProcess] = {}

    def run(n: str) -> None:
        results[n] = cp("-r", tmp_path / n, m.path / "samples" / "new", check=False)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for n in names:
        assert results[n].returncode == 0, results[n].stderr
        sample = the_sample(emu, n)
        uploads = uploads_of(emu, sample["id"])
        assert len(uploads) == 2 and all(u["status"] == "completed" for u in uploads)
        for src in sources[n]:
            (u,) = [u for u in uploads if u["key"].endswith("/" + src.name)]
            assert stored_md5(emu, u["key"]) == digest(src)
            assert u["is_paired_end"] is src.name.endswith("_R2.fastq")
    assert open_mpus(emu) == []


def test_two_files_copied_concurrently_into_one_draft(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    name = unique("same_draft")
    draft = new_draft(m, name)
    files = [make_file(tmp_path / f"p_R{i}.fastq", 10 * MiB + i) for i in (1, 2)]
    results = []
    threads = [threading.Thread(target=lambda f=f: results.append(cp(f, draft, check=False))) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    sample = the_sample(emu, name)  # one sample, however the creates interleaved
    uploads = uploads_of(emu, sample["id"])
    assert sorted(u["order"] for u in uploads) == [0, 1] and all(u["status"] == "completed" for u in uploads)
    for f in files:
        (u,) = [u for u in uploads if u["key"].endswith("/" + f.name)]
        assert stored_md5(emu, u["key"]) == digest(f)


def test_64_mib_file(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    src = make_file(tmp_path / f"{unique('big')}.fastq.gz", 64 * MiB)
    cp(src, m.path / "samples" / "new")
    sample = the_sample(emu, src.name.removesuffix(".fastq.gz"))
    (upload,) = uploads_of(emu, sample["id"])
    assert upload["filesize"] == 64 * MiB and stored_md5(emu, upload["key"]) == digest(src)
    assert emu.store.info(emu.bucket, upload["key"]).etag.endswith('-8"')  # eight 8 MiB parts


@pytest.mark.slow  # about 12 s; deselect with -m "not slow"
def test_1_gib_file(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    src = make_file(tmp_path / f"{unique('huge')}.fastq.gz", 1 << 30)
    cp(src, m.path / "samples" / "new")
    (upload,) = uploads_of(emu, the_sample(emu, src.name.removesuffix(".fastq.gz"))["id"])
    assert upload["filesize"] == 1 << 30 and stored_md5(emu, upload["key"]) == digest(src)
    assert m.stats()["uploads_in_flight"] == 0


def test_peak_memory_of_a_300_mb_write(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    src = make_file(tmp_path / f"{unique('rss')}.fastq", 300 * 1000 * 1000)
    cp(src, m.path / "samples" / "new")
    status = Path(f"/proc/{m.proc.pid}/status").read_text()
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    assert peak_kib * 1024 < 300 * 1000 * 1000, f"peak RSS {peak_kib} KiB"
    (upload,) = uploads_of(emu, the_sample(emu, src.stem)["id"])
    assert upload["filesize"] == src.stat().st_size and stored_md5(emu, upload["key"]) == digest(src)


def test_writes_must_be_sequential(make_mount):
    m = make_mount()
    emu = m.emulator
    name = unique("seq")
    path = m.path / "samples" / "new" / f"{name}.fastq"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, b"x" * 1000) == 1000
        with pytest.raises(OSError) as raised:
            os.pwrite(fd, b"y" * 10, 0)
        assert raised.value.errno == errno.ESPIPE
    finally:
        with pytest.raises(OSError) as closing:
            os.close(fd)
    assert closing.value.errno == errno.EIO  # a file that was written out of order is not uploaded
    assert samples_named(emu, name) == [] and uploads_with_key(emu, f"/{name}.fastq") == []
    assert "sequential writes only" in m.log.read_text()


def test_listing_shows_a_file_being_written_with_its_size(make_mount):
    m = make_mount()
    emu = m.emulator
    name = unique("growing")
    draft = new_draft(m, name)
    fd = os.open(draft / "g_R1.fastq", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"A" * (3 * MiB))
        assert os.listdir(draft) == ["g_R1.fastq"]
        assert os.stat(draft / "g_R1.fastq").st_size == 3 * MiB
        assert [u["status"] for u in uploads_with_key(emu, f"/{the_sample(emu, name)['id']}/g_R1.fastq")] == \
            ["in_progress"]
        assert m.stats()["uploads_in_flight"] == 1
        with pytest.raises(OSError) as raised:
            os.unlink(draft / "g_R1.fastq")
        assert raised.value.errno == errno.EBUSY
        os.write(fd, b"C" * 10)
    finally:
        os.close(fd)
    assert os.stat(draft / "g_R1.fastq").st_size == 3 * MiB + 10
    (upload,) = uploads_of(emu, the_sample(emu, name)["id"])
    assert upload["status"] == "completed" and upload["filesize"] == 3 * MiB + 10
    with pytest.raises(OSError) as raised:  # an uploaded file cannot be rewritten
        open(draft / "g_R1.fastq", "wb")
    assert raised.value.errno == errno.EPERM


# -- refusals -----------------------------------------------------------------------------------------------
def test_read_only_mount_refuses_writes(make_mount, tmp_path):
    m = make_mount(options=("ro",))
    with pytest.raises(OSError) as raised:
        os.mkdir(m.path / "samples" / "new" / unique("ro"))
    assert raised.value.errno == errno.EROFS
    result = cp(make_file(tmp_path / "a.fastq", 10), m.path / "samples" / "new", check=False)
    assert result.returncode != 0 and "Read-only" in result.stderr


def test_writes_outside_the_drop_box_are_refused(make_mount, tmp_path):
    m = make_mount()
    for target in (m.path / "samples" / "x.fastq", m.path / "genomes" / "x.json"):
        with pytest.raises(OSError) as raised:
            target.write_bytes(b"x")
        assert raised.value.errno in (errno.EACCES, errno.EPERM)
    with pytest.raises(OSError) as raised:
        os.mkdir(m.path / "analyses" / "x")
    assert raised.value.errno in (errno.EACCES, errno.EPERM)
    draft = m.path / "samples" / "new" / unique("nosub")
    draft.mkdir()
    with pytest.raises(OSError) as raised:
        os.mkdir(draft / "sub")
    assert raised.value.errno in (errno.EACCES, errno.EPERM)
    os.rmdir(draft)  # an empty draft goes away with rmdir
    assert draft.name not in os.listdir(m.path / "samples" / "new")


def test_rmdir_sample_needs_allow_delete(make_mount, tmp_path):
    src = make_file(tmp_path / f"{unique('del')}.fastq", 1000)
    m = make_mount()
    emu = m.emulator
    cp(src, m.path / "samples" / "new")
    sample = the_sample(emu, src.stem)
    with pytest.raises(OSError) as raised:
        os.rmdir(m.path / "samples" / str(sample["id"]))
    assert raised.value.errno == errno.EACCES
    assert samples_named(emu, src.stem)
    m2 = make_mount(options=("allow_delete",))
    assert str(sample["id"]) in os.listdir(m2.path / "samples")
    os.rmdir(m2.path / "samples" / str(sample["id"]))
    assert samples_named(emu, src.stem) == []
    assert str(sample["id"]) not in os.listdir(m2.path / "samples")
    assert not (m2.path / "samples" / "index.tsv").read_text().count(f"\t{src.stem}\t")


def test_uploads_work_with_a_server_that_refuses_aws_chunked(make_mount, tmp_path):
    from bpfs.emulator import Emulator

    emu = Emulator(big_file_mib=1, bam_reads=200, accept_aws_chunked=False).start()
    try:
        m = make_mount(emu=emu)
        name = unique("strict")
        (m.path / "samples" / "new" / name).mkdir()
        small, big = make_file(tmp_path / "s_R1.fq", 1000), make_file(tmp_path / "s_R2.fq", 20 * MiB)
        cp(small, big, m.path / "samples" / "new" / name)
        sample = the_sample(emu, name)
        check_uploaded(emu, sample, [(small, False), (big, True)])
        m.stop()
    finally:
        emu.stop()


# -- failures ------------------------------------------------------------------------------------------------
def _no_sample_without_files(emu, name: str) -> None:
    for sample in samples_named(emu, name):
        assert any(u["status"] == "completed" for u in uploads_of(emu, sample["id"])), sample


def _fails_cleanly(m, tmp_path, fault_on: str, size: int, **fault) -> None:
    """R1 uploads; then R2 is copied under the fault: cp fails, R2 is aborted and recorded failed,
    the sample stays with R1 only. Then the same fault on a single file: its sample is deleted again."""
    emu = m.emulator
    faults = emu.faults_api if fault_on == "api" else emu.faults_s3
    name = unique("fault")
    draft = new_draft(m, name)
    r1, r2 = make_file(tmp_path / "f_R1.fastq", 1000), make_file(tmp_path / "f_R2.fastq", size)
    cp(r1, draft)
    faults.add(**fault)
    try:
        result = cp(r2, draft, check=False)
    finally:
        faults.clear()
    assert result.returncode != 0 and "Input/output error" in result.stderr
    sample = the_sample(emu, name)
    uploads = uploads_of(emu, sample["id"])
    assert [(u["key"].rsplit("/", 1)[-1], u["status"]) for u in uploads] == [(r1.name, "completed"),
                                                                             (r2.name, "failed")]
    assert open_mpus(emu) == []
    assert not emu.store.exists(emu.bucket, uploads[1]["key"])
    assert os.listdir(draft) == [r1.name]  # the failed file is not listed
    _no_sample_without_files(emu, name)

    single = make_file(tmp_path / f"{unique('lone')}.fastq", size)
    if fault.get("times") is not None:
        fault = {**fault, "times": None}
    faults.add(**fault)
    try:
        result = cp(single, m.path / "samples" / "new", check=False)
    finally:
        faults.clear()
    assert result.returncode != 0
    assert samples_named(emu, single.stem) == []  # no sample is left behind that has no file
    assert uploads_with_key(emu, "/" + single.name) == []
    assert open_mpus(emu) == []
    assert not [k for k in emu.store.keys(emu.bucket, "uploads/") if k.endswith("/" + single.name)]
    assert single.name not in os.listdir(m.path / "samples" / "new")
    stats = m.stats()
    assert stats["uploads_failed"] == 2 and stats["uploads_in_flight"] == 0


def test_s3_part_failure(make_mount, tmp_path):
    m = make_mount()
    _fails_cleanly(m, tmp_path, "s3", 20 * MiB, method="PUT", path=r"/uploads/.*R2\.fastq$|/lone_",
                   query="partNumber=2", status=500, times=None)


def test_s3_completion_failure(make_mount, tmp_path):
    m = make_mount()
    _fails_cleanly(m, tmp_path, "s3", 12 * MiB, method="POST", path=r"/uploads/", query="uploadId=",
                   status=500, times=None)


def test_api_failure_when_completing_the_record(make_mount, tmp_path):
    m = make_mount()
    # the client retries a PUT on 5xx RETRIES times: fail them all, then let the `failed` mark through
    _fails_cleanly(m, tmp_path, "api", 12 * MiB, method="PUT", path=r"/uploads/\d+", status=500,
                   times=1 + bpfs_api.RETRIES)


def test_unmount_during_an_upload_aborts_it(make_mount, tmp_path):
    """SIGTERM to the daemon while a file is open: the upload is aborted, never left in progress."""
    m = make_mount()
    emu = m.emulator
    name = unique("unmounted")
    upload_key = f"/{name}.fastq"
    fd = os.open(m.path / "samples" / "new" / f"{name}.fastq", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, os.urandom(9 * MiB))
        assert [u["status"] for u in uploads_with_key(emu, upload_key)] == ["in_progress"]
        m.proc.terminate()
        m.proc.wait(timeout=60)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    assert samples_named(emu, name) == []  # its sample had no other file: deleted again
    assert uploads_with_key(emu, upload_key) == []
    assert open_mpus(emu) == []


@pytest.mark.parametrize("how", ["signal", "status"])
def test_a_writer_that_dies_midway_records_nothing_complete(make_mount, tmp_path, how):
    """A killed cp closes its files on the way out: that close must abort, not complete a truncated file."""
    m = make_mount()
    name = unique("killed")
    target = m.path / "samples" / "new" / f"{name}.fastq"
    ending = "os.kill(os.getpid(), signal.SIGKILL)" if how == "signal" else "os._exit(3)"
    code = ("import os, signal, sys\n"
            "f = open(sys.argv[1], 'wb')\n"
            "f.write(os.urandom(12 * 1024 * 1024))\n"
            "f.flush()\n"
            f"{ending}\n")
    subprocess.run([sys.executable, "-c", code, str(target)], timeout=120)
    wait_for(lambda: not open_mpus(m.emulator) and not any(
        u["status"] == "in_progress" for u in uploads_with_key(m.emulator, f"/{name}.fastq")),
        what="the upload to settle")
    assert all(u["status"] == "failed" for u in uploads_with_key(m.emulator, f"/{name}.fastq"))
    assert samples_named(m.emulator, name) == []  # no sample is left behind that has no file
    assert any("the writing process" in line for line in m.log.read_text().splitlines())
