"""Trust off the happy path, writes: the file the server records is the file the user wrote.

Odd writers (a shell group, a loop, a child writing to its parent's file, fsync mid-file), failures of
every step, the way back from a partial copy (`rm`), and a daemon killed mid-upload, on real mounts.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import needs_fuse, unmount_hard
from tests.helpers import (
    MiB,
    cp,
    make_file,
    new_draft,
    open_mpus,
    samples_named,
    stored,
    the_sample,
    unique,
    uploads_of,
    uploads_with_key,
    wait_for,
)

pytestmark = needs_fuse


def sh(script: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def upload_of(emu, name: str, basename: str) -> dict:
    (upload,) = [u for u in uploads_of(emu, the_sample(emu, name)["id"]) if u["key"].endswith("/" + basename)]
    return upload


# -- odd writers: one file, several closes ---------------------------------------------------------------
@pytest.mark.parametrize("form", ["group", "loop"])
def test_a_file_written_by_several_processes_is_recorded_whole(make_mount, tmp_path, form):
    """`{ cat a; cat b; } > f` and `for f in lane*; do cat "$f"; done > f`: each cat closes its inherited
    descriptor; only the shell's close, the last, finishes the upload."""
    m = make_mount()
    emu = m.emulator
    lanes = [make_file(tmp_path / f"lane{i}.fastq", size) for i, size in enumerate((6 * MiB + 7, 3 * MiB, 1234))]
    name = unique(form)
    draft = new_draft(m, name)
    target = draft / f"{name}_R1.fastq"
    if form == "group":
        script = f'{{ cat "{lanes[0]}"; cat "{lanes[1]}"; cat "{lanes[2]}"; }} > "{target}"'
    else:
        script = f'for f in "{tmp_path}"/lane*.fastq; do cat "$f"; done > "{target}"'
    result = sh(script)
    assert result.returncode == 0, result.stderr
    whole = b"".join(p.read_bytes() for p in lanes)
    upload = wait_for(lambda: (u := upload_of(emu, name, target.name))["status"] == "completed" and u,
                      what="the upload to complete")
    assert upload["filesize"] == len(whole) and stored(emu, upload["key"]) == whole
    assert m.stats()["uploads_completed"] == 1 and m.stats()["uploads_failed"] == 0


def test_a_child_writing_to_its_parents_file_and_the_parent_after_it(make_mount, tmp_path):
    """A subprocess writes through the parent's descriptor and exits; the parent writes on, then closes."""
    m = make_mount()
    emu = m.emulator
    name = unique("child")
    target = m.path / "samples" / "new" / f"{name}.fastq"
    code = textwrap.dedent(f"""
        import subprocess, sys
        with open({str(target)!r}, "wb") as f:
            f.write(b"parent-1\\n")
            f.flush()
            subprocess.run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'child\\\\n' * 1000)"],
                           stdout=f, check=True)
            f.write(b"parent-2\\n")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (upload,) = uploads_of(emu, the_sample(emu, name)["id"])
    assert upload["status"] == "completed"
    assert stored(emu, upload["key"]) == b"parent-1\n" + b"child\n" * 1000 + b"parent-2\n"


def test_the_parent_closing_first_does_not_cut_a_child_still_writing(make_mount):
    """The opener closes while its child still holds the file: the child's later close is the last."""
    m = make_mount()
    emu = m.emulator
    name = unique("orphan")
    target = m.path / "samples" / "new" / f"{name}.fastq"
    code = textwrap.dedent(f"""
        import subprocess, sys
        f = open({str(target)!r}, "wb")
        child = subprocess.Popen([sys.executable, "-c",
                                  "import sys, time; time.sleep(1); sys.stdout.buffer.write(b'late\\\\n' * 5000)"],
                                 stdout=f)
        f.close()
        sys.exit(child.wait())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    upload = wait_for(lambda: (u := uploads_of(emu, the_sample(emu, name)["id"])[0])["status"] == "completed"
                      and u, what="the upload to complete")
    assert stored(emu, upload["key"]) == b"late\n" * 5000


def test_fsync_mid_file_finishes_nothing(make_mount):
    m = make_mount()
    emu = m.emulator
    name = unique("fsync")
    fd = os.open(m.path / "samples" / "new" / f"{name}.fastq", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"A" * (9 * MiB))  # one full part in flight
        os.fsync(fd)  # waits for the part, completes nothing
        (upload,) = uploads_with_key(emu, f"/{name}.fastq")
        assert upload["status"] == "in_progress" and len(open_mpus(emu)) >= 1
        os.write(fd, b"B" * 100)
    finally:
        os.close(fd)
    (upload,) = uploads_with_key(emu, f"/{name}.fastq")
    assert upload["status"] == "completed" and stored(emu, upload["key"]) == b"A" * (9 * MiB) + b"B" * 100


def test_dup_and_second_close_complete_once_with_all_the_data(make_mount):
    """Two descriptors of one open file (dup): the first close finishes nothing, the second all of it."""
    m = make_mount()
    emu = m.emulator
    name = unique("dup")
    fd = os.open(m.path / "samples" / "new" / f"{name}.fq", os.O_WRONLY | os.O_CREAT, 0o644)
    other = os.dup(fd)
    os.write(fd, b"@r\nACGT\n+\nIIII\n")
    os.close(fd)
    assert uploads_with_key(emu, f"/{name}.fq")[0]["status"] == "in_progress"
    os.write(other, b"@s\nTTTT\n+\nIIII\n")
    os.close(other)
    (upload,) = uploads_of(emu, the_sample(emu, name)["id"])
    assert upload["status"] == "completed"
    assert stored(emu, upload["key"]) == b"@r\nACGT\n+\nIIII\n@s\nTTTT\n+\nIIII\n"
    assert m.stats()["uploads_completed"] == 1


# -- every failure fails the file, never shortens it -------------------------------------------------------
def test_create_multipart_upload_refused_fails_the_file(make_mount, tmp_path):
    """S3 refuses to start the multipart upload: the write fails, and the close does not record a shorter file."""
    m = make_mount()
    emu = m.emulator
    name = unique("nompu")
    src = make_file(tmp_path / f"{name}.fastq", 20 * MiB)
    emu.faults_s3.add(method="POST", path=f"/{name}.fastq$", query=r"(^|&)uploads(=|&|$)", status=500,
                      times=None)
    try:
        result = cp(src, m.path / "samples" / "new", check=False)
    finally:
        emu.faults_s3.clear()
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert [u["status"] for u in uploads_with_key(emu, f"/{name}.fastq")] in ([], ["failed"])
    assert samples_named(emu, name) == []
    assert not [k for k in emu.store.keys(emu.bucket, "uploads/") if k.endswith(f"/{name}.fastq")]


def test_an_empty_file_whose_upload_fails_fails_its_close(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    name = unique("empty")
    src = tmp_path / f"{name}.fastq"
    src.write_bytes(b"")
    emu.faults_s3.add(method="PUT", path=f"/{name}.fastq$", status=500, times=None)
    try:
        result = cp(src, m.path / "samples" / "new", check=False)
    finally:
        emu.faults_s3.clear()
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert samples_named(emu, name) == []


@pytest.mark.parametrize("holes", ["end", "start_middle_end"])
def test_cp_of_a_sparse_file_is_recorded_whole(make_mount, tmp_path, holes):
    """cp skips a sparse file's holes (lseek past them, then ftruncate for one at the end): the mount fills
    them with zeros, as S3 holds no holes, instead of refusing and recording a short file."""
    m = make_mount()
    emu = m.emulator
    name = unique("sparse")
    src = tmp_path / f"{name}.fastq"
    with open(src, "wb") as f:
        if holes != "end":
            f.seek(1 * MiB)
        f.write(os.urandom(5000))
        if holes != "end":
            f.seek(2 * MiB, os.SEEK_CUR)
            f.write(os.urandom(70000))
        f.truncate(f.tell() + 3 * MiB + 17)
    cp("--sparse=always", src, m.path / "samples" / "new")
    upload = wait_for(lambda: (u := upload_of(emu, name, src.name))["status"] == "completed" and u,
                      what="the upload to complete")
    assert stored(emu, upload["key"]) == src.read_bytes() and upload["filesize"] == src.stat().st_size


def test_a_refused_truncate_fails_the_file_instead_of_recording_it_short(make_mount):
    """A writer that shrinks its file (or ignores the refusal, as cp does with a failed ftruncate) never has
    the file recorded: the truncate fails, and so does the close."""
    m = make_mount()
    emu = m.emulator
    name = unique("shrunk")
    f = open(m.path / "samples" / "new" / f"{name}.fastq", "wb", buffering=0)
    f.write(b"@r1\nACGT\n+\nIIII\n" * 100)
    with pytest.raises(OSError) as refused:
        f.truncate(20)
    assert refused.value.errno == errno.EPERM
    with pytest.raises(OSError) as failed:
        f.close()
    assert failed.value.errno == errno.EIO
    wait_for(lambda: all(u["status"] != "in_progress" for u in uploads_with_key(emu, f"/{name}.fastq")),
             timeout=30, what="the upload to end")
    assert [u["status"] for u in uploads_with_key(emu, f"/{name}.fastq")] in ([], ["failed"])
    assert samples_named(emu, name) == []


@pytest.mark.parametrize("how", [["cp", "-p"], ["cp", "-a"], ["mv"]])
def test_writers_that_keep_attributes_succeed(make_mount, tmp_path, how):
    """cp -p, cp -a and mv copy ACLs and attributes after the data: refused with EOPNOTSUPP, they skip
    that step; refused with EACCES they exited 1 after the upload, and a retry made a second copy."""
    m = make_mount()
    emu = m.emulator
    name = unique(how[-1].strip("-"))
    src = make_file(tmp_path / f"{name}.fastq", 3 * MiB + 5)
    data = src.read_bytes()
    result = subprocess.run([*how, str(src), str(m.path / "samples" / "new")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    upload = wait_for(lambda: (u := upload_of(emu, name, src.name))["status"] == "completed" and u,
                      what="the upload to complete")
    assert stored(emu, upload["key"]) == data
    assert m.stats()["fuse_errors"] == 0  # a skipped ACL is no error to show in last_errors or the log


def test_names_basepair_cannot_hold_are_refused_before_anything_is_created(make_mount):
    """A name that is not UTF-8, holds a control character, is blank, or makes a sample named '..': EINVAL
    at create/mkdir/rename, no sample; the log says why in escaped text (it had UnicodeEncodeError
    tracebacks on stderr, and a sample created before the close failed with EIO)."""
    m = make_mount()
    emu = m.emulator
    new = os.fsencode(m.path / "samples" / "new")
    with emu.state.lock:
        before = len(emu.state.samples)
    for name in (b"bad\xff.fastq", b"tab\tname.fastq", b"...fastq", b" .fastq", b"....ABCDEF"):
        with pytest.raises(OSError) as raised:
            with open(new + b"/" + name, "wb") as f:
                f.write(b"@r\nA\n+\nI\n")
        assert raised.value.errno == errno.EINVAL, name
    for name in (b"dir\xfe", b"   "):
        with pytest.raises(OSError) as raised:
            os.mkdir(new + b"/" + name)
        assert raised.value.errno == errno.EINVAL, name
    os.mkdir(new + b"/ok_dir")
    (m.path / "samples" / "new" / "ok_dir" / "a.fastq").write_bytes(b"@r\nA\n+\nI\n")
    with pytest.raises(OSError) as raised:
        os.rename(new + b"/ok_dir/a.fastq", new + b"/ok_dir/\xff.fastq")
    assert raised.value.errno == errno.EINVAL
    with emu.state.lock:
        assert len(emu.state.samples) == before + 1  # ok_dir only
    log = m.log.read_text()
    assert "bad\\xff.fastq: refused" in log and "Logging error" not in log
    assert "Logging error" not in (m.workdir / "stderr.txt").read_text(errors="replace")


@pytest.mark.parametrize("dialect", ["v3", "v1"])
def test_a_sample_whose_answer_is_lost_is_created_once(make_mount, tmp_path, dialect):
    """POST samples and POST uploads are applied but their answers are cut off: the copy goes into the sample
    and upload record the server made, not into a failure that leaves them behind (nor a second on a retry)."""
    m = make_mount(dialect=dialect)
    emu = m.emulator
    name = unique("lostpost")
    src = make_file(tmp_path / f"{name}.fastq", 2 * MiB + 3)
    emu.faults_api.add(method="POST", path=r"/samples/?$", drop_after=0)
    emu.faults_api.add(method="POST", path=r"/uploads/?$", drop_after=0)
    cp(src, m.path / "samples" / "new")
    (sample,) = samples_named(emu, name)
    upload = wait_for(lambda: (u := upload_of(emu, name, src.name))["status"] == "completed" and u,
                      what="the upload to complete")
    assert stored(emu, upload["key"]) == src.read_bytes() and f"/{sample['id']}/" in upload["key"]
    assert len(uploads_of(emu, sample["id"])) == 1


def test_many_files_written_at_once_keep_memory_within_the_budget(make_mount):
    """Twelve files written round-robin (a demultiplexer's outputs): the parts being filled in memory stay
    within the mount's budget (64 MiB), the rest fill temporary files, and every file is recorded whole."""
    m = make_mount()
    emu = m.emulator
    name = unique("demux")
    draft = new_draft(m, name)
    rng = random.Random(12)
    size = 10 * MiB + 99
    piece = 1 * MiB
    files = {f"{name}_{i:02d}.fastq": bytearray() for i in range(12)}
    handles = {n: open(draft / n, "wb") for n in files}  # noqa: SIM115 - closed below
    peak, filling = 0, 0
    try:
        for offset in range(0, size, piece):
            for n, f in handles.items():
                chunk = rng.randbytes(min(piece, size - offset))
                files[n] += chunk
                f.write(chunk)
            for f in handles.values():
                f.flush()
            filling = m.stats()["upload_pool"]["filling"]
            peak = max(peak, filling)
    finally:
        for f in handles.values():
            f.close()
    assert peak <= 64 * MiB
    assert m.stats()["upload_parts_spilled"] > 0 and m.stats()["upload_pool"]["filling"] == 0
    sample_id = the_sample(emu, name)["id"]
    uploads = {u["key"].rsplit("/", 1)[-1]: u for u in uploads_of(emu, sample_id)}
    assert set(uploads) == set(files)
    for n, data in files.items():
        assert uploads[n]["status"] == "completed" and stored(emu, uploads[n]["key"]) == bytes(data), n


def test_a_request_refused_while_a_reader_holds_it_open_fails_its_close(make_mount):
    """`tail -f` (or an editor) has analyses/new/x.json open while a writer sends a request the server
    refuses: the writer's close is the last writer's, so it sends and fails with EINVAL (it returned 0,
    the request went out at release, and the refusal reached only the log)."""
    m = make_mount()
    path = m.path / "analyses" / "new" / "watched.json"
    path.write_bytes(b"")
    reader = subprocess.Popen([sys.executable, "-c", f"f = open({str(path)!r}, 'rb'); import time; time.sleep(60)"])
    try:
        wait_for(lambda: any(os.path.realpath(f"/proc/{reader.pid}/fd/{fd}") == str(path)
                             for fd in os.listdir(f"/proc/{reader.pid}/fd")), what="the reader to open it")
        with pytest.raises(OSError) as raised:
            with open(path, "wb") as f:
                f.write(b'{"workflow": 999999, "samples": [1]}')
        assert raised.value.errno == errno.EINVAL
        assert "refused" in path.read_text()
    finally:
        reader.kill()
        reader.wait()


def test_a_lost_answer_never_puts_a_file_into_another_clients_sample(make_mount, tmp_path):
    """Someone else made a sample of the same name, on another genome, a moment before; our POST samples
    fails (502, nothing made): the copy fails, it does not go into theirs (it went in with exit 0)."""
    m = make_mount(options=("genome=mm10",))
    emu = m.emulator
    name = unique("twinname")
    with emu.state.lock:
        hg19 = emu.state.genome_by_name("hg19")["id"]
        theirs = emu.state.create_sample({"name": name, "genome": hg19})["id"]
    src = make_file(tmp_path / f"{name}.fastq", 1000)
    emu.faults_api.add(method="POST", path=r"/samples/?$", status=502)
    result = cp(src, m.path / "samples" / "new", check=False)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert uploads_of(emu, theirs) == []


# -- the way back: rm -----------------------------------------------------------------------------------------
def test_rm_removes_an_uploaded_file_and_a_sample_left_empty(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    name = unique("undo")
    draft = new_draft(m, name)
    r1, r2 = make_file(tmp_path / "u_R1.fastq", 2 * MiB), make_file(tmp_path / "u_R2.fastq", 6 * MiB)
    cp(r1, r2, draft)
    sample = the_sample(emu, name)
    keys = [u["key"] for u in uploads_of(emu, sample["id"])]
    os.unlink(draft / r2.name)  # a partial copy, say: the user takes it back
    assert [u["key"] for u in uploads_of(emu, sample["id"])] == keys[:1]
    assert not emu.store.exists(emu.bucket, keys[1])
    assert sorted(os.listdir(draft)) == [r1.name]
    assert r2.name not in os.listdir(m.path / "samples" / str(sample["id"]))
    cp(r2, draft)  # and copies it again, whole
    assert [u["status"] for u in uploads_of(emu, sample["id"])] == ["completed", "completed"]
    os.unlink(draft / r1.name)
    os.unlink(draft / r2.name)
    assert samples_named(emu, name) == []  # a sample left with no file is deleted, as after a failure
    os.rmdir(draft)


def test_rm_is_refused_once_the_sample_has_an_analysis(make_mount, tmp_path):
    from bpfs.emulator import Emulator

    with Emulator(big_file_mib=1, bam_reads=200) as emu:  # its own account: an analysis is added to it
        m = make_mount(emu=emu)
        src = make_file(tmp_path / f"{unique('analysed')}.fastq", 1000)
        cp(src, m.path / "samples" / "new")
        sample = the_sample(emu, src.stem)
        now = datetime.now(UTC).replace(tzinfo=None)
        emu.state.add_analysis("an analysis of it", "running", 7, [sample["id"]], [], {}, now, now, None, now)
        with pytest.raises(OSError) as raised:
            os.unlink(m.path / "samples" / "new" / src.name)
        assert raised.value.errno == errno.EBUSY
        assert [u["status"] for u in uploads_of(emu, sample["id"])] == ["completed"]
        assert "already has analyses" in m.log.read_text()
        m.stop()


# -- a daemon killed mid-upload ---------------------------------------------------------------------------------
def test_the_next_mount_cleans_up_after_a_daemon_killed_mid_upload(make_mount, tmp_path):
    state = tmp_path / "state"  # both mounts keep their upload journal here
    m = make_mount(env={"XDG_STATE_HOME": str(state)}, name="killed")
    emu = m.emulator
    single, paired = unique("crash"), unique("crashdir")
    draft = new_draft(m, paired)
    r1 = make_file(tmp_path / "c_R1.fastq", 1000)
    cp(r1, draft)  # this sample keeps a completed file
    fds = [os.open(m.path / "samples" / "new" / f"{single}.fastq", os.O_WRONLY | os.O_CREAT, 0o644),
           os.open(draft / "c_R2.fastq", os.O_WRONLY | os.O_CREAT, 0o644)]
    for fd in fds:
        os.write(fd, os.urandom(9 * MiB))  # a multipart upload is open for each
    assert len(open_mpus(emu)) >= 2
    m.proc.kill()  # SIGKILL: no cleanup at all
    m.proc.wait(timeout=30)
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    unmount_hard(m.path)
    assert [u["status"] for u in uploads_with_key(emu, f"/{single}.fastq")] == ["in_progress"]

    again = make_mount(env={"XDG_STATE_HOME": str(state)}, name="again")
    wait_for(lambda: samples_named(emu, single) == [], timeout=30, what="the empty sample to be deleted")
    wait_for(lambda: [u["status"] for u in uploads_of(emu, the_sample(emu, paired)["id"])]
             == ["completed", "failed"], timeout=30, what="the open upload to be marked failed")
    assert open_mpus(emu) == []
    assert not [k for k in emu.store.keys(emu.bucket, "uploads/") if k.endswith(("/c_R2.fastq", f"/{single}.fastq"))]
    assert "was in flight when an earlier mount stopped" in again.log.read_text()
    assert not list((state / "bpfs" / "uploads").glob("*/*.jsonl")) or all(
        p.stat().st_size == 0 for p in (state / "bpfs" / "uploads").glob("*/*.jsonl"))
    time.sleep(0.1)


# -- rsync again ------------------------------------------------------------------------------------------------
def test_rsync_a_second_time_succeeds_and_uploads_nothing_twice(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    src = tmp_path / unique("resync")
    make_file(src / "r_R1.fastq", 3 * MiB)
    make_file(src / "r_R2.fastq", 1 * MiB)
    target = m.path / "samples" / "new"
    for _ in range(2):
        result = subprocess.run(["rsync", "-a", str(src), str(target)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    sample = the_sample(emu, src.name)
    assert [u["status"] for u in uploads_of(emu, sample["id"])] == ["completed", "completed"]


# -- the same file through another path: a bind mount, a detached mount -------------------------------------
def test_writers_through_a_bind_mount_are_recorded_whole(make_mount, tmp_path):
    """As a container volume would reach the mount: `cat a > f` (the shell closes a duplicate first) and a
    shell group, through a bind mount of the mount point."""
    if os.getuid() != 0:
        pytest.skip("mount --bind needs root")
    m = make_mount()
    emu = m.emulator
    bind = tmp_path / "bind"
    bind.mkdir()
    subprocess.run(["mount", "--bind", str(m.path), str(bind)], check=True)
    try:
        a, b = make_file(tmp_path / "a.fastq", 3 * MiB), make_file(tmp_path / "b.fastq", 2 * MiB + 5)
        single, group = unique("bindcat"), unique("bindgroup")
        assert sh(f'cat "{a}" > "{bind}/samples/new/{single}.fastq"').returncode == 0
        assert sh(f'{{ cat "{a}"; cat "{b}"; }} > "{bind}/samples/new/{group}.fastq"').returncode == 0
        for name, data in ((single, a.read_bytes()), (group, a.read_bytes() + b.read_bytes())):
            (upload,) = uploads_with_key(emu, f"/{name}.fastq")
            assert upload["status"] == "completed" and stored(emu, upload["key"]) == data, name
    finally:
        subprocess.run(["umount", "-l", str(bind)], check=False)


def test_a_writer_outlives_a_lazy_unmount(make_mount, tmp_path):
    """`bpfs umount --lazy` while `{ cat a; sleep; cat b; } > f` runs: the file is finished when the shell
    closes it, whole, even though its path no longer starts with the mount point."""
    m = make_mount()
    emu = m.emulator
    a, b = make_file(tmp_path / "l0.fastq", 1 * MiB), make_file(tmp_path / "l1.fastq", 1 * MiB)
    name = unique("lazy")
    target = m.path / "samples" / "new" / f"{name}.fastq"
    writer = subprocess.Popen(["bash", "-c", f'{{ cat "{a}"; sleep 3; cat "{b}"; }} > "{target}"'])
    time.sleep(1.5)
    subprocess.run(["fusermount3", "-uz", str(m.path)], check=True)
    assert writer.wait(timeout=60) == 0
    upload = wait_for(lambda: next((u for u in uploads_with_key(emu, f"/{name}.fastq")
                                    if u["status"] != "in_progress"), None), timeout=30, what="the upload to end")
    assert upload["status"] == "completed" and stored(emu, upload["key"]) == a.read_bytes() + b.read_bytes()


def test_a_file_taken_back_and_copied_again_reads_as_the_new_one(make_mount, tmp_path):
    """rm the wrong file, copy the right one under the same name: samples/<id>/<name> shows the new bytes
    (the same S3 key was written again: nothing cached of the old object may be served)."""
    m = make_mount()
    emu = m.emulator
    name = unique("recopy")
    draft = new_draft(m, name)
    cp(make_file(tmp_path / "keep_R1.fastq", 1000), draft)
    (tmp_path / "w").mkdir()
    wrong, right = tmp_path / "w" / "x_R2.fastq", tmp_path / "x_R2.fastq"
    wrong.write_bytes(b"W" * (300 * 1024))
    right.write_bytes(b"R" * (300 * 1024))
    cp(wrong, draft)
    sample_id = the_sample(emu, name)["id"]
    assert (m.path / "samples" / str(sample_id) / "x_R2.fastq").read_bytes() == wrong.read_bytes()
    os.unlink(draft / "x_R2.fastq")
    cp(right, draft)
    time.sleep(1.2)  # the kernel's attribute and entry timeouts
    assert (m.path / "samples" / str(sample_id) / "x_R2.fastq").read_bytes() == right.read_bytes()


def test_a_writer_killed_inside_a_group_fails_the_file(make_mount, tmp_path):
    """`{ writer; cat b; } > f` where the writer is killed mid-file: the shell closes last and lives, but the
    file was cut short by a process that wrote to it: never recorded complete."""
    m = make_mount()
    emu = m.emulator
    b = make_file(tmp_path / "b.fastq", 1 * MiB)
    name = unique("killedgroup")
    target = m.path / "samples" / "new" / f"{name}.fastq"
    killer = f"{sys.executable} -c 'import os, signal, sys; sys.stdout.buffer.write(os.urandom(9 << 20)); " \
             "sys.stdout.flush(); os.kill(os.getpid(), signal.SIGKILL)'"
    sh(f'{{ {killer}; cat "{b}"; }} > "{target}"')
    wait_for(lambda: all(u["status"] != "in_progress" for u in uploads_with_key(emu, f"/{name}.fastq")),
             timeout=30, what="the upload to end")
    assert [u["status"] for u in uploads_with_key(emu, f"/{name}.fastq")] in ([], ["failed"])
    assert samples_named(emu, name) == []
    assert "was killed by signal 9" in m.log.read_text()


def test_rsync_of_a_directory_with_its_sample_json(make_mount, tmp_path):
    m = make_mount()
    emu = m.emulator
    src = tmp_path / unique("rsmeta")
    src.mkdir()
    (src / "sample.json").write_text('{"genome": "mm10", "datatype": "chip-seq"}')
    make_file(src / "m_R1.fastq", 1000)
    result = subprocess.run(["rsync", "-a", str(src), str(m.path / "samples" / "new")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    sample = the_sample(emu, src.name)
    assert sample["datatype"] == "chip-seq" and emu.state.genomes[sample["genome"]]["name"] == "mm10"
    assert [u["key"].rsplit("/", 1)[-1] for u in uploads_of(emu, sample["id"])] == ["m_R1.fastq"]
    # run again: nothing to send (sample.json keeps the time rsync gave it); then with sample.json changed,
    # whose temporary file rsync creates exclusively (it was taken for sample.json: "File exists", exit 23)
    for change in (False, True):
        if change:
            (src / "sample.json").write_text('{"genome": "mm10", "datatype": "chip-seq", "info": {"x": "1"}}')
        again = subprocess.run(["rsync", "-a", "-i", str(src), str(m.path / "samples" / "new")],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert ("sample.json" in again.stdout) == change, again.stdout
    assert [u["key"].rsplit("/", 1)[-1] for u in uploads_of(emu, sample["id"])] == ["m_R1.fastq"]
