"""The read-only tree, the same in-process and through a mount: listings, contents, tag expressions, errnos."""

from __future__ import annotations

import errno
import json
import os

import pytest

from tests.helpers import SEED_GENOMES, api, md5, s3_bytes


def walk(fs, top: str) -> list[str]:
    """Every file below `top`, as paths relative to the mount."""
    out = []
    for name in fs.listdir(top):
        path = f"{top}/{name}"
        if fs.stat(path).is_dir:
            out += walk(fs, path)
        else:
            out.append(path)
    return out


def test_root_lists_the_four_trees_and_hides_bpfs(fs):
    assert sorted(fs.listdir("")) == ["analyses", "genomes", "samples", "workflows"]
    assert fs.stat(".bpfs").is_dir
    stats = json.loads(fs.read_text(".bpfs/stats"))
    for key in ("api_requests", "s3_requests", "s3_bytes_fetched", "bytes_served", "cache_hits", "cache_misses",
                "uploads_in_flight"):
        assert isinstance(stats[key], int)


def test_genomes_index_is_the_seed_table(fs):
    lines = fs.read_text("genomes/index.tsv").splitlines()
    assert lines[0] == "id\tname\tcreated_on"
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[1] for r in rows] == SEED_GENOMES
    assert rows[0] == ["1", "hg19", rows[0][2]] and rows[0][2].startswith("2018-04-18T14:58:15.865993")
    assert json.loads(fs.read_text("genomes/hg19.json")) == api(fs.emulator, "genomes/1")
    assert sorted(fs.listdir("genomes")) == sorted(["index.tsv"] + [g + ".json" for g in SEED_GENOMES])


def test_workflows_and_samples(fs):
    emu = fs.emulator
    workflows = api(emu, "pipelines")["objects"]
    lines = fs.read_text("workflows/index.tsv").splitlines()
    assert lines[0] == "id\tname\tdatatype" and len(lines) == len(workflows) + 1
    for w in workflows:
        assert json.loads(fs.read_text(f"workflows/{w['id']}.json")) == w
    samples = api(emu, "samples")["objects"]
    index = fs.read_text("samples/index.tsv").splitlines()
    assert index[0] == "id\tname\tdatatype\tgenome\tdate_created"
    assert {line.split("\t")[1] for line in index[1:]} >= {s["name"] for s in samples if s["id"] < 20000}
    assert "new" in fs.listdir("samples")
    for s in samples[:4]:
        d = f"samples/{s['id']}"
        assert json.loads(fs.read_text(f"{d}/sample.json"))["id"] == s["id"]
        for upload in s["uploads"]:
            if upload["status"] != "completed":
                continue
            name = upload["key"].rsplit("/", 1)[-1]
            data = s3_bytes(emu, upload["key"])
            assert fs.stat(f"{d}/{name}").st_size == len(data)  # exact, also where the API gives no filesize
            assert md5(fs.read_bytes(f"{d}/{name}")) == md5(data)


def test_analyses_index_lists_every_status(fs):
    lines = fs.read_text("analyses/index.tsv").splitlines()
    assert lines[0] == "id\tname\tstatus\tworkflow\tsamples\tdate_created"
    statuses = {line.split("\t")[2] for line in lines[1:]}
    assert {"completed", "running", "error"} <= statuses
    ids = {line.split("\t")[0] for line in lines[1:]}
    assert ids <= set(fs.listdir("analyses"))


def test_analysis_directory_has_json_all_and_one_dir_per_tag(fs):
    detail = api(fs.emulator, "analyses/10000")
    assert json.loads(fs.read_text("analyses/10000/analysis.json")) == detail
    tags = {t for f in detail["files"] for t in (f["tags"] or [])}
    assert set(fs.listdir("analyses/10000")) == {"analysis.json", "all"} | tags
    for f in detail["files"]:
        for tag in f["tags"] or []:
            names = fs.listdir(f"analyses/10000/{tag}")
            base = f["path"].rsplit("/", 1)[-1]
            assert base in names or any(f"~{f['id']}" in n for n in names)
    # two files with one basename in one tag directory: each gets its id
    summaries = sorted(fs.listdir("analyses/10000/summary"))
    ids = sorted(str(f["id"]) for f in detail["files"] if f["path"].endswith("/summary.txt"))
    assert summaries == sorted(f"summary~{i}.txt" for i in ids)


def test_every_file_is_byte_identical_with_exact_size(fs):
    emu = fs.emulator
    for analysis in api(emu, "analyses")["objects"][:4]:
        detail = api(emu, f"analyses/{analysis['id']}")
        found = []
        for path in walk(fs, f"analyses/{analysis['id']}/all"):
            data = fs.read_bytes(path)
            assert len(data) == fs.stat(path).st_size
            found.append((len(data), md5(data)))
        expected = sorted((len(b), md5(b)) for b in (s3_bytes(emu, f["path"]) for f in detail["files"]))
        assert sorted(found) == expected, analysis["id"]


def test_all_layout_strips_the_canonical_prefix(fs):
    assert {"star", "fastqc", "counts", "metrics", "logs"} <= set(fs.listdir("analyses/10000/all"))
    assert not fs.stat("analyses/10000/all/star/liver_rep1.bam").is_dir
    emu = fs.emulator
    for analysis in api(emu, "analyses")["objects"]:
        detail = api(emu, f"analyses/{analysis['id']}")
        prefix = f"analyses/{emu.user_id}/{analysis['id']}/"
        if detail["files"] and not all(f["path"].startswith(prefix) for f in detail["files"]):
            top = fs.listdir(f"analyses/{analysis['id']}/all")
            assert top and all(not name.startswith("analyses") for name in top)
            break
    else:
        pytest.fail("the demo account has no analysis with keys outside analyses/<user>/<id>/")


def test_null_filesize_is_answered_by_s3_not_zero(fs):
    detail = api(fs.emulator, "analyses/10000")
    nulls = [f for f in detail["files"] if f["filesize"] is None]
    assert nulls
    for f in nulls:
        path = "analyses/10000/all/" + f["path"].split("/10000/", 1)[1]
        assert fs.stat(path).st_size == len(s3_bytes(fs.emulator, f["path"])) > 0


@pytest.mark.parametrize("expr, want", [
    ("fastqc", lambda t: "fastqc" in t),
    ("-bam", lambda t: "bam" not in t),
    ("rnaseq_metrics+json", lambda t: {"rnaseq_metrics", "json"} <= t),
    ("rnaseq_metrics+json,fastqc+zip", lambda t: {"rnaseq_metrics", "json"} <= t or {"fastqc", "zip"} <= t),
])
def test_tag_expressions_select_exactly_the_matching_files(fs, expr, want):
    detail = api(fs.emulator, "analyses/10000")
    expected = sorted((f["filesize"] or len(s3_bytes(fs.emulator, f["path"])), f["path"].rsplit("/", 1)[-1])
                      for f in detail["files"] if want(set(f["tags"] or [])))
    names = fs.listdir(f"analyses/10000/{expr}")
    got = sorted((fs.stat(f"analyses/10000/{expr}/{n}").st_size, n.split("~")[0] + (
        n[n.index("."):] if "~" in n else "")) for n in names)
    assert [size for size, _ in got] == [size for size, _ in expected]  # which files, not just how many
    assert sorted(n for _, n in got) == sorted(n for _, n in expected)
    if expr not in fs.listdir("analyses/10000"):
        assert "+" in expr or "," in expr or expr.startswith("-")  # expressions are not listed


@pytest.mark.parametrize("name", ["nosuchtag", "-nosuchtag", "bam+bai", "a,,b", "+x", "untagged"])
def test_bad_or_empty_expressions_are_enoent(fs, name):
    with pytest.raises(FileNotFoundError):
        fs.listdir(f"analyses/10000/{name}")


@pytest.mark.parametrize("path", ["nope", "analyses/999999", "analyses/abc", "analyses/010000", "samples/999999",
                                  "genomes/nope.json", "analyses/10000/all/nope", ".bpfs/nope"])
def test_missing_paths_are_enoent(fs, path):
    with pytest.raises(FileNotFoundError):
        fs.stat(path)


def test_a_directory_is_not_a_file(fs):
    with pytest.raises(IsADirectoryError):
        fs.read_bytes("analyses/10000")


def test_index_files_resolve_beside_data_in_tag_directories(fs):
    assert "liver_rep1.bam.bai" not in fs.listdir("analyses/10000/bam")
    bai = s3_bytes(fs.emulator, "analyses/7/10000/star/liver_rep1.bam.bai")
    assert fs.read_bytes("analyses/10000/bam/liver_rep1.bam.bai") == bai
    assert fs.read_bytes("analyses/10000/bam/liver_rep1.bai") == bai
    with pytest.raises(FileNotFoundError):
        fs.stat("analyses/10000/bam/nothing.bam.bai")


@pytest.mark.parametrize("action", ["create", "mkdir", "rm", "mv", "append", "rmdir_sample"])
def test_writes_outside_the_drop_boxes_are_refused_with_eacces(fs, action):
    with pytest.raises(OSError) as info:
        if action == "create":
            fs.write_bytes("analyses/10000/new.txt", b"x")
        elif action == "mkdir":
            fs.mkdir("genomes/x")
        elif action == "rm":
            fs.unlink("analyses/10000/analysis.json")
        elif action == "mv":
            fs.rename("analyses/10000/analysis.json", "analyses/10000/x.json")
        elif action == "append":
            fd = fs.open("analyses/10000/analysis.json", os.O_WRONLY | os.O_APPEND)
            fs.close(fd)
        elif action == "rmdir_sample":
            fs.rmdir("samples/" + sorted(n for n in fs.listdir("samples") if n.isdigit())[0])
    assert info.value.errno in (errno.EACCES, errno.EPERM)


def test_read_only_mount_refuses_every_write_with_erofs(make_fs):
    ro = make_fs("ro")
    for attempt in (lambda: ro.write_bytes("genomes/x.txt", b"x"), lambda: ro.mkdir("samples/new/x"),
                    lambda: ro.write_bytes("samples/new/x.fastq", b"x")):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    assert ro.read_text("genomes/hg19.json").startswith("{")
    assert ro.stat("genomes/hg19.json").st_mode & 0o222 == 0


def test_refresh_control_file(fs):
    fs.write_bytes(".bpfs/refresh", b"/analyses/10000\n")
    assert fs.read_text(".bpfs/refresh").startswith("dropped")
    with pytest.raises(OSError) as info:
        fs.write_bytes(".bpfs/stats", b"x")
    assert info.value.errno in (errno.EACCES, errno.EPERM)
