"""Extended attributes: what a file is, read-only, at no API cost (both runners)."""

from __future__ import annotations

import errno

import pytest

from tests.helpers import api


def test_an_analysis_file_says_what_it_is(fs):
    detail = api(fs.emulator, "analyses/10000")
    bam = next(f for f in detail["files"] if f["path"].endswith("/liver_rep1.bam"))
    paths = ("analyses/10000/bam/liver_rep1.bam", "analyses/10000/all/star/liver_rep1.bam",
             "analyses/10000/dedup+bam/liver_rep1.bam")
    for path in paths:
        fs.stat(path)  # listed once: the attributes come with the listing
    before = fs.stats()["api_requests"]
    for path in ("analyses/10000/bam/liver_rep1.bam", "analyses/10000/all/star/liver_rep1.bam",
                 "analyses/10000/dedup+bam/liver_rep1.bam"):
        assert fs.getxattr(path, "user.basepair.file_id") == str(bam["id"]).encode()
        assert fs.getxattr(path, "user.basepair.tags") == b"bam,dedup"
        assert fs.getxattr(path, "user.basepair.s3_uri") == f"s3://{fs.emulator.bucket}/{bam['path']}".encode()
        assert fs.getxattr(path, "user.basepair.analysis_id") == b"10000"
        assert set(fs.listxattr(path)) == {"user.basepair.file_id", "user.basepair.tags", "user.basepair.s3_uri",
                                           "user.basepair.analysis_id"}
    assert fs.stats()["api_requests"] == before  # no request to list or read them


def test_directories_and_sample_files(fs):
    analyses = {a["id"]: a for a in api(fs.emulator, "analyses")["objects"]}
    assert fs.getxattr("analyses/10000", "user.basepair.status") == analyses[10000]["status"].encode()
    assert fs.getxattr("analyses/10000", "user.basepair.workflow") == str(analyses[10000]["workflow"]).encode()
    sample = api(fs.emulator, "samples")["objects"][0]
    assert fs.getxattr(f"samples/{sample['id']}", "user.basepair.genome") == sample["genome_name"].encode()
    assert fs.getxattr(f"samples/{sample['id']}", "user.basepair.datatype") == sample["datatype"].encode()
    upload = next(u for u in sample["uploads"] if u["status"] == "completed")
    raw = f"samples/{sample['id']}/{upload['key'].rsplit('/', 1)[-1]}"
    assert fs.getxattr(raw, "user.basepair.upload_id") == str(upload["id"]).encode()
    assert fs.getxattr(raw, "user.basepair.sample_id") == str(sample["id"]).encode()
    assert fs.getxattr(raw, "user.basepair.s3_uri").startswith(b"s3://")


def test_unknown_names_are_enodata_and_setting_is_refused(fs):
    with pytest.raises(OSError) as raised:
        fs.getxattr("analyses/10000/analysis.json", "user.basepair.file_id")
    assert raised.value.errno == errno.ENODATA
    with pytest.raises(OSError) as raised:
        fs.getxattr("analyses/10000/bam/liver_rep1.bam", "user.other")
    assert raised.value.errno == errno.ENODATA
    for path, name in (("analyses/10000/bam/liver_rep1.bam", "user.basepair.tags"),
                       ("analyses/10000", "user.basepair.status"), ("samples/new", "user.x")):
        with pytest.raises(OSError) as raised:  # what a filesystem without attributes answers: cp -a skips it
            fs.setxattr(path, name, b"x")
        assert raised.value.errno == errno.EOPNOTSUPP, path
    with pytest.raises(OSError) as raised:
        fs.setxattr("analyses/404404", "user.x", b"x")
    assert raised.value.errno == errno.ENOENT


def test_getfattr_dumps_them(fs):
    import shutil
    import subprocess

    if fs.name != "fuse" or not shutil.which("getfattr"):
        pytest.skip("getfattr reads a real mount")
    out = subprocess.run(["getfattr", "-d", str(fs.root / "analyses/10000/bam/liver_rep1.bam")], capture_output=True,
                         text=True, check=True).stdout
    assert 'user.basepair.tags="bam,dedup"' in out and "user.basepair.file_id=" in out
