"""The read-only tree through a real mount, checked against the emulator's own records and objects."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys

import pytest
import requests

from tests.conftest import needs_fuse

pytestmark = needs_fuse

SEED_GENOMES = ["hg19", "mm10", "mm9", "danRer10", "tair10", "dm6", "danRer7", "sacCer3", "SL2.40", "Xla.v91",
                "xenTro7", "taeGut2", "Streptococcus_sanguinis", "CENPK113-7D-RP", "rn6", "susScr11", "ce11",
                "Manis_javanica", "Ictalurus_punctatus", "mouse_GRCm38_M18", "Citrus_clementina.v1",
                "Nematostella_vectensis", "Gallus_gallus"]


def api(emulator, resource: str, **params) -> object:
    params = {"username": emulator.username, "api_key": emulator.api_key, "limit": 0, **params}
    response = requests.get(f"{emulator.api_url}api/v3/{resource}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def s3_bytes(emulator, path: str) -> bytes:
    if path.startswith("s3://"):
        bucket, _, key = path[5:].partition("/")
    else:
        bucket, key = emulator.bucket, path
    return emulator.store.get_bytes(bucket, key)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_root_lists_the_four_trees_and_hides_bpfs(mount):
    assert sorted(os.listdir(mount.path)) == ["analyses", "genomes", "samples", "workflows"]
    stats = mount.stats()
    for key in ("api_requests", "s3_requests", "s3_bytes_fetched", "bytes_served", "cache_hits", "cache_misses",
                "uploads_in_flight"):
        assert isinstance(stats[key], int)


def test_genomes_index_is_the_seed_table(mount):
    lines = (mount.path / "genomes" / "index.tsv").read_text().splitlines()
    assert lines[0] == "id\tname\tcreated_on"
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[1] for r in rows] == SEED_GENOMES
    assert rows[0] == ["1", "hg19", rows[0][2]] and rows[0][2].startswith("2018-04-18T14:58:15.865993")
    record = json.loads((mount.path / "genomes" / "hg19.json").read_text())
    assert record == api(mount.emulator, "genomes/1")
    assert sorted(os.listdir(mount.path / "genomes")) == sorted(["index.tsv"] + [g + ".json" for g in SEED_GENOMES])


def test_workflows_and_samples(mount):
    emu = mount.emulator
    workflows = api(emu, "pipelines")["objects"]
    lines = (mount.path / "workflows" / "index.tsv").read_text().splitlines()
    assert lines[0] == "id\tname\tdatatype" and len(lines) == len(workflows) + 1
    for w in workflows:
        assert json.loads((mount.path / "workflows" / f"{w['id']}.json").read_text()) == w
    samples = api(emu, "samples")["objects"]
    index = (mount.path / "samples" / "index.tsv").read_text().splitlines()
    assert index[0] == "id\tname\tdatatype\tgenome\tdate_created"
    assert {line.split("\t")[1] for line in index[1:]} == {s["name"] for s in samples}
    assert "new" in os.listdir(mount.path / "samples")
    for s in samples:
        d = mount.path / "samples" / str(s["id"])
        assert json.loads((d / "sample.json").read_text()) == s
        for upload in s["uploads"]:
            if upload["status"] != "completed":
                continue
            name = upload["key"].rsplit("/", 1)[-1]
            data = s3_bytes(emu, upload["key"])
            assert (d / name).stat().st_size == len(data)  # exact, also where the API gives no filesize
            assert md5((d / name).read_bytes()) == md5(data)


def test_analyses_index_lists_every_status(mount):
    lines = (mount.path / "analyses" / "index.tsv").read_text().splitlines()
    assert lines[0] == "id\tname\tstatus\tworkflow\tsamples\tdate_created"
    statuses = {line.split("\t")[2] for line in lines[1:]}
    assert {"completed", "running", "error"} <= statuses
    ids = {line.split("\t")[0] for line in lines[1:]}
    assert ids <= set(os.listdir(mount.path / "analyses"))


def test_analysis_directory_has_json_all_and_one_dir_per_tag(mount):
    emu = mount.emulator
    detail = api(emu, "analyses/10000")
    d = mount.path / "analyses" / "10000"
    assert json.loads((d / "analysis.json").read_text()) == detail
    tags = {t for f in detail["files"] for t in (f["tags"] or [])}
    assert set(os.listdir(d)) == {"analysis.json", "all"} | tags
    assert "untagged" not in os.listdir(d)
    for f in detail["files"]:
        for tag in f["tags"] or []:
            names = os.listdir(d / tag)
            base = f["path"].rsplit("/", 1)[-1]
            assert base in names or any(n.endswith(f"~{f['id']}" + n[n.find('.', n.find('~')):]) for n in names)
    # two files with one basename in one tag directory: each gets its id
    summaries = sorted(n for n in os.listdir(d / "summary"))
    ids = sorted(str(f["id"]) for f in detail["files"] if f["path"].endswith("/summary.txt"))
    assert summaries == sorted(f"summary~{i}.txt" for i in ids)


def test_every_file_is_byte_identical_with_exact_size(mount):
    emu = mount.emulator
    for analysis in api(emu, "analyses")["objects"][:6]:
        detail = api(emu, f"analyses/{analysis['id']}")
        root = mount.path / "analyses" / str(analysis["id"]) / "all"
        found = {}
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                p = os.path.join(dirpath, name)
                found[p] = (os.path.getsize(p), md5(open(p, "rb").read()))
        expected = sorted((len(b), md5(b)) for b in (s3_bytes(emu, f["path"]) for f in detail["files"]))
        assert sorted(found.values()) == expected, analysis["id"]


def test_all_layout_strips_the_canonical_prefix(mount):
    d = mount.path / "analyses" / "10000" / "all"
    assert {"star", "fastqc", "counts", "metrics", "logs"} <= set(os.listdir(d))
    assert (d / "star" / "liver_rep1.bam").is_file()
    # an analysis whose keys leave analyses/<user>/<id>/: laid out below their longest common directory
    emu = mount.emulator
    for analysis in api(emu, "analyses")["objects"]:
        detail = api(emu, f"analyses/{analysis['id']}")
        prefix = f"analyses/{emu.user_id}/{analysis['id']}/"
        if detail["files"] and not all(f["path"].startswith(prefix) for f in detail["files"]):
            top = os.listdir(mount.path / "analyses" / str(analysis["id"]) / "all")
            assert top and all(not name.startswith("analyses") for name in top)
            break
    else:
        pytest.fail("the demo account has no analysis with keys outside analyses/<user>/<id>/")


def test_null_filesize_is_answered_by_s3_not_zero(mount):
    emu = mount.emulator
    detail = api(emu, "analyses/10000")
    nulls = [f for f in detail["files"] if f["filesize"] is None]
    assert nulls
    for f in nulls:
        p = mount.path / "analyses" / "10000" / "all" / f["path"].split("/10000/", 1)[1]
        assert p.stat().st_size == len(s3_bytes(emu, f["path"])) > 0


@pytest.mark.parametrize("expr, want", [
    ("fastqc", lambda t: "fastqc" in t),
    ("-bam", lambda t: "bam" not in t),
    ("rnaseq_metrics+json", lambda t: {"rnaseq_metrics", "json"} <= t),
    ("rnaseq_metrics+json,fastqc+zip", lambda t: {"rnaseq_metrics", "json"} <= t or {"fastqc", "zip"} <= t),
])
def test_tag_expressions_resolve_like_the_seed_examples(mount, expr, want):
    detail = api(mount.emulator, "analyses/10000")
    d = mount.path / "analyses" / "10000" / expr
    expected = sorted(f["id"] for f in detail["files"] if want(set(f["tags"] or [])))
    assert len(os.listdir(d)) == len(expected)
    if expr not in os.listdir(d.parent):
        assert "+" in expr or "," in expr or expr.startswith("-")  # expressions are not listed


def test_cp_r_of_an_expression_is_download_analysis(mount, tmp_path):
    src = mount.path / "analyses" / "10000" / "rnaseq_metrics+json,fastqc+zip"
    subprocess.run(["cp", "-r", str(src), str(tmp_path / "test")], check=True)
    got = sorted(os.listdir(tmp_path / "test"))
    assert got == sorted(os.listdir(src)) and any(n.endswith(".zip") for n in got)
    assert "rnaseq_metrics.json" in got


@pytest.mark.parametrize("name", ["nosuchtag", "-nosuchtag", "bam+bai", "a,,b", "+x", "untagged"])
def test_bad_or_empty_expressions_are_enoent(mount, name):
    with pytest.raises(FileNotFoundError):
        os.listdir(mount.path / "analyses" / "10000" / name)


def test_missing_paths_are_enoent(mount):
    for p in ("nope", "analyses/999999", "analyses/abc", "samples/999999", "genomes/nope.json",
              "analyses/10000/all/nope"):
        with pytest.raises(FileNotFoundError):
            os.stat(mount.path / p)


def test_ls_l_costs_no_request_per_entry(mount):
    d = mount.path / "analyses" / "10000" / "all" / "star"
    subprocess.run(["ls", "-lR", str(mount.path / "analyses" / "10000")], check=True, capture_output=True)
    before = mount.stats()["api_requests"]
    for _ in range(3):
        subprocess.run(["ls", "-l", str(mount.path / "analyses"), str(mount.path / "genomes"), str(d)],
                       check=True, capture_output=True)
    assert mount.stats()["api_requests"] == before


def test_samtools_region_and_tabix_region_match_local_copies(mount, tmp_path):
    emu = mount.emulator
    bam = mount.path / "analyses" / "10000" / "bam" / "liver_rep1.bam"
    local = tmp_path / "l.bam"
    local.write_bytes(s3_bytes(emu, "analyses/7/10000/star/liver_rep1.bam"))
    (tmp_path / "l.bam.bai").write_bytes(s3_bytes(emu, "analyses/7/10000/star/liver_rep1.bam.bai"))
    all_dir = mount.path / "analyses" / "10000" / "all" / "star"
    for region in ("chr1:10000-20000", "chr2:1-5000"):
        through = subprocess.run(["samtools", "view", str(all_dir / "liver_rep1.bam"), region],
                                 check=True, capture_output=True).stdout
        direct = subprocess.run(["samtools", "view", str(local), region], check=True, capture_output=True).stdout
        assert through == direct and through.count(b"\n") > 0
    assert bam.stat().st_size == local.stat().st_size
    detail = api(emu, "analyses/10001")
    vcf = next(f for f in detail["files"] if f["path"].endswith(".vcf.gz"))
    tbi = next(f for f in detail["files"] if f["path"].endswith(".vcf.gz.tbi"))
    (tmp_path / "v.vcf.gz").write_bytes(s3_bytes(emu, vcf["path"]))
    (tmp_path / "v.vcf.gz.tbi").write_bytes(s3_bytes(emu, tbi["path"]))
    mounted = mount.path / "analyses" / "10001" / "all" / vcf["path"].split("/10001/", 1)[1]
    for region in ("chr1:1-200000", "chr2:50000-900000"):
        through = subprocess.run(["tabix", str(mounted), region], check=True, capture_output=True).stdout
        direct = subprocess.run(["tabix", str(tmp_path / "v.vcf.gz"), region], check=True,
                                capture_output=True).stdout
        assert through == direct and through


def test_grep_find_and_md5sum(mount):
    out = subprocess.run(["grep", "-c", "liver", str(mount.path / "samples" / "index.tsv")],
                         capture_output=True, text=True, check=True).stdout
    assert int(out) >= 2
    found = subprocess.run(["find", str(mount.path / "analyses" / "10000" / "all"), "-name", "*.bam"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert [os.path.basename(p) for p in found] == ["liver_rep1.bam"]
    p = mount.path / "analyses" / "10000" / "bigwig" / "liver_rep1.bigwig"
    out = subprocess.run(["md5sum", str(p)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert out == md5(s3_bytes(mount.emulator, "analyses/7/10000/star/liver_rep1.bigwig"))


def test_head_c_100_fetches_little(mount):
    p = mount.path / "analyses" / "10000" / "bigwig" / "liver_rep1.bigwig"
    before = mount.stats()["s3_bytes_fetched"]
    with open(p, "rb") as f:
        head = f.read(100)
    assert head == s3_bytes(mount.emulator, "analyses/7/10000/star/liver_rep1.bigwig")[:100]
    assert mount.stats()["s3_bytes_fetched"] - before <= 1_200_000


@pytest.mark.parametrize("action", ["touch", "mkdir", "rm", "mv", "append", "rmdir_sample", "chmod"])
def test_writes_are_refused_with_eacces(mount, action):
    d = mount.path / "analyses" / "10000"
    with pytest.raises(OSError) as info:
        if action == "touch":
            open(d / "new.txt", "w").close()
        elif action == "mkdir":
            os.mkdir(mount.path / "genomes" / "x")
        elif action == "rm":
            os.unlink(d / "analysis.json")
        elif action == "mv":
            os.rename(d / "analysis.json", d / "x.json")
        elif action == "append":
            open(d / "analysis.json", "a").close()
        elif action == "rmdir_sample":
            os.rmdir(mount.path / "samples" / os.listdir(mount.path / "samples")[-1])
        elif action == "chmod":
            os.chmod(d / "analysis.json", 0o777)
    assert info.value.errno in (errno.EACCES, errno.EPERM)


def test_ro_option_refuses_with_erofs(make_mount):
    m = make_mount(options=("ro",))
    with pytest.raises(OSError) as info:
        open(m.path / "genomes" / "x.txt", "w").close()
    assert info.value.errno == errno.EROFS
    assert (m.path / "genomes" / "hg19.json").read_text().startswith("{")


@pytest.mark.parametrize("bare", [False, True])
def test_v1_config_shows_the_same_tree(make_mount, mount, bare, tmp_path):
    from bpfs.emulator import Emulator

    emu = None
    if bare:
        emu = Emulator(big_file_mib=1, bam_reads=2000, v1_bare_lists=True).start()
    try:
        m = make_mount("v1", emu=emu)
        v3 = mount if not bare else None
        index = (m.path / "genomes" / "index.tsv").read_text().splitlines()
        assert index[0] == "id\tname\tdate_created" and [r.split("\t")[1] for r in index[1:]] == SEED_GENOMES
        assert set(os.listdir(m.path / "analyses" / "10000")) >= {"analysis.json", "all", "bam", "fastqc"}
        ids = sorted(os.listdir(m.path / "analyses"))
        if v3 is not None:
            assert ids == sorted(os.listdir(v3.path / "analyses"))
            for rel in ("analyses/10000/bam/liver_rep1.bam", "samples/index.tsv"):
                if rel.endswith(".tsv"):
                    a = [line.split("\t")[:3] for line in (m.path / rel).read_text().splitlines()[1:]]
                    b = [line.split("\t")[:3] for line in (v3.path / rel).read_text().splitlines()[1:]]
                    assert a == b
                else:
                    assert md5((m.path / rel).read_bytes()) == md5((v3.path / rel).read_bytes())
        record = json.loads((m.path / "analyses" / "10000" / "analysis.json").read_text())
        assert str(record["workflow"]).startswith("/api/v1/")  # the v1 record, as the API gave it
        m.stop()
    finally:
        if emu is not None:
            emu.stop()


def test_mmap_reads_the_same_bytes(mount):
    # in a child process: a page fault holds the GIL, and this process also runs the emulator
    p = mount.path / "analyses" / "10000" / "bam" / "liver_rep1.bam"
    expected = s3_bytes(mount.emulator, "analyses/7/10000/star/liver_rep1.bam")
    code = ("import hashlib, mmap, sys\n"
            "with open(sys.argv[1], 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as v:\n"
            "    print(len(v), v[:4].hex(), hashlib.md5(v[:]).hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(expected)), "1f8b0804", md5(expected)]


def test_many_concurrent_readers_of_one_file_and_of_many_files(mount):
    import random
    import threading

    emu = mount.emulator
    big = s3_bytes(emu, "analyses/7/10000/star/liver_rep1.bigwig")
    bam = s3_bytes(emu, "analyses/7/10000/star/liver_rep1.bam")
    files = {
        mount.path / "analyses" / "10000" / "bigwig" / "liver_rep1.bigwig": big,
        mount.path / "analyses" / "10000" / "all" / "star" / "liver_rep1.bam": bam,
    }
    errors = []

    def whole(path, data):
        try:
            assert md5(path.read_bytes()) == md5(data)
        except BaseException as exc:
            errors.append(exc)

    def scattered(path, data, seed):
        try:
            rng = random.Random(seed)
            with open(path, "rb") as f:
                for _ in range(40):
                    offset = rng.randrange(0, len(data))
                    size = rng.randrange(1, 300_000)
                    assert os.pread(f.fileno(), size, offset) == data[offset:offset + size]
        except BaseException as exc:
            errors.append(exc)

    threads = []
    for i, (path, data) in enumerate(list(files.items()) * 3):
        threads.append(threading.Thread(target=whole, args=(path, data)))
        threads.append(threading.Thread(target=scattered, args=(path, data, i)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]


def test_zero_byte_object_reads_empty(make_mount, emulator):
    from datetime import UTC, datetime

    key = "analyses/7/10001/qc/empty.txt"
    emulator.store.put(emulator.bucket, key, b"")
    record = emulator.state.add_file(10001, key, ["empty"], 0, "qc", datetime.now(UTC))
    try:
        m = make_mount()
        p = m.path / "analyses" / "10001" / "empty" / "empty.txt"
        assert p.stat().st_size == 0 and p.read_bytes() == b""
    finally:
        with emulator.state.lock:
            emulator.state.files.pop(record["id"], None)
            emulator.state.analyses[10001]["file_ids"].remove(record["id"])


def test_index_files_resolve_beside_data_in_tag_directories(mount, tmp_path):
    d = mount.path / "analyses" / "10000" / "bam"
    assert "liver_rep1.bam.bai" not in os.listdir(d)  # not listed: cp -r bam/ copies exactly the tag's files
    bai = s3_bytes(mount.emulator, "analyses/7/10000/star/liver_rep1.bam.bai")
    assert (d / "liver_rep1.bam.bai").read_bytes() == bai
    assert (d / "liver_rep1.bai").read_bytes() == bai
    region = subprocess.run(["samtools", "view", str(d / "liver_rep1.bam"), "chr1:10000-20000"],
                            capture_output=True, check=True).stdout
    assert region and region == subprocess.run(
        ["samtools", "view", str(mount.path / "analyses/10000/all/star/liver_rep1.bam"), "chr1:10000-20000"],
        capture_output=True, check=True).stdout
    vcf_dir = mount.path / "analyses" / "10001" / "vcf"
    vcf = next(n for n in os.listdir(vcf_dir) if n.endswith(".vcf.gz"))
    assert subprocess.run(["tabix", str(vcf_dir / vcf), "chr1:1-500000"], capture_output=True).returncode == 0
    with pytest.raises(FileNotFoundError):
        os.stat(d / "nothing.bam.bai")


def test_ownership_permissions_and_allow_other_options(make_mount):
    m = make_mount(options=("uid=1234,gid=5678,umask=027,allow_other",))
    st = os.stat(m.path / "genomes" / "hg19.json")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 5678, 0o440)
    d = os.stat(m.path / "analyses")
    assert (d.st_uid, d.st_mode & 0o777) == (1234, 0o550)
    assert "allow_other" in next(line for line in open("/proc/mounts") if str(m.path) in line)
