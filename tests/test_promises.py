"""README promises about configuration and operations: the v3 `cli` config, the AWS credential chain, index
files beside data (.csi, .crai), log rotation, the mount's readahead, `-o direct_io`, `bpfs refresh MNT
analyses/<id>`."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bpfs.logs import PrivateRotatingFileHandler
from bpfs.mounting.assembly import connect
from bpfs.mounting.mountpoints import find_mount
from bpfs.remote.config import parse_config
from bpfs.remote.s3 import ObjectClient
from bpfs.stats import Stats
from tests.helpers import s3_bytes
from tests.test_tree_model import tree_of


def test_a_v3_cli_config_takes_its_storage_from_the_server(emulator):
    config = parse_config(emulator.config_v3(cli=True), environ={})
    assert config.fetch_storage and config.bucket is None
    _, complete = connect(config, Stats())
    assert (complete.bucket, complete.endpoint_url) == (emulator.bucket, emulator.s3_url)
    assert complete.aws_id and complete.aws_secret


def test_without_keys_in_the_config_s3_uses_the_aws_credential_chain(emulator, monkeypatch):
    data = emulator.config_v1()
    del data["aws"]["aws_id"], data["aws"]["aws_secret"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIACHAINCHAINCHAIN0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    client = ObjectClient(parse_config(data, environ={}), Stats())
    credentials = client.client._request_signer._credentials  # what botocore signs with
    assert credentials.access_key == "AKIACHAINCHAINCHAIN0"


@pytest.mark.parametrize("data, index", [("x.cram", "x.cram.crai"), ("x.cram", "x.crai"), ("x.bam", "x.bam.csi"),
                                         ("x.vcf.gz", "x.vcf.gz.csi"), ("x.vcf.gz", "x.vcf.gz.tbi")])
def test_index_files_resolve_beside_their_data(data, index):
    base = "analyses/7/10000/out"
    tree = tree_of([{"id": 10000, "status": "completed", "owner": 7, "files": [
        {"id": 1, "path": f"{base}/{data}", "tags": ["data"], "filesize": 100},
        {"id": 2, "path": f"{base}/{index}", "tags": ["index"], "filesize": 7}]}])
    assert tree.listdir("analyses/10000/data").keys() == {data}  # not listed...
    assert tree.lookup(f"analyses/10000/data/{index}").size == 7  # ...but found beside the data file


def test_logs_rotate_and_every_file_stays_private(tmp_path):
    log_file = tmp_path / "bpfs.log"
    handler = PrivateRotatingFileHandler(log_file, maxBytes=2000, backupCount=2)
    logger = logging.getLogger(f"rotation-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(200):
            logger.error("line %d of a log that must rotate", i)
    finally:
        handler.close()
    files = sorted(tmp_path.glob("bpfs.log*"))
    assert [f.name for f in files] == ["bpfs.log", "bpfs.log.1", "bpfs.log.2"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert all(f.stat().st_size <= 2100 for f in files)


@pytest.mark.fuse
@pytest.mark.skipif(os.getuid() != 0, reason="raising a mount's readahead needs root")
def test_read_ahead_kb_sets_the_mounts_readahead(make_mount):
    for value, expected in (("read_ahead_kb=2048", "2048"), ("read_ahead_kb=0", None)):
        m = make_mount(options=(value,))
        knob = Path("/sys/class/bdi", find_mount(str(m.path)).device, "read_ahead_kb")
        deadline = time.monotonic() + 10  # set in the background once the kernel has taken the INIT reply
        while knob.read_text().strip() != (expected or "2048") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        got = knob.read_text().strip()
        assert got == expected if expected else got != "2048"  # 0: left as the kernel set it
        m.stop()


@pytest.mark.fuse
def test_direct_io_reads_s3_files_at_the_callers_size_past_the_page_cache(make_mount, emulator):
    m = make_mount(options=("direct_io",))
    bigwig = m.path / "analyses" / "10000" / "bigwig" / "liver_rep1.bigwig"
    want = s3_bytes(emulator, "analyses/7/10000/star/liver_rep1.bigwig")
    fd = os.open(bigwig, os.O_RDONLY)
    try:
        before = m.stats()["s3_bytes_fetched"]
        assert os.pread(fd, 4096, 1_000_003) == want[1_000_003:1_004_099]
        # exactly what was asked: through the page cache the kernel asks whole pages and reads ahead
        assert m.stats()["s3_bytes_fetched"] - before == 4096
        assert os.pread(fd, 4096, 1_000_003) == want[1_000_003:1_004_099]  # again: the daemon's cache
        assert m.stats()["s3_bytes_fetched"] - before == 4096
    finally:
        os.close(fd)
    # mappings in another process: a page fault here would hold the GIL that this process's emulator needs
    script = (
        "import mmap, os, sys, hashlib\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "with mmap.mmap(fd, 0, access=mmap.ACCESS_COPY) as m: print(hashlib.md5(m).hexdigest())\n"
        "try:\n"
        "    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m: print(hashlib.md5(m).hexdigest())\n"
        "except OSError as exc: print(exc.errno)\n")
    out = subprocess.run([sys.executable, "-c", script, str(bigwig)], capture_output=True, text=True, timeout=60)
    private, shared = out.stdout.split()
    assert private == hashlib.md5(want).hexdigest()  # a private mapping works
    # the documented cost: a shared mapping of a direct_io file is refused (ENODEV) while libfuse is older
    # than 3.16; where the kernel allows it, it must read the right bytes
    assert shared in (str(errno.ENODEV), private)
    with open(bigwig, "rb") as f:  # a stream reads every byte, in 1 MiB requests (st_blksize)
        assert f.read() == want
    stats = m.stats()
    assert stats["fuse_errors"] == 0 and stats["s3_errors"] == 0


@pytest.mark.fuse
def test_bpfs_refresh_of_one_analysis(make_mount, emulator):
    m = make_mount(options=("running_ttl=3600",))
    before = set(os.listdir(m.path / "analyses" / "10002" / "all"))
    key = f"analyses/7/10002/later/later_{uuid.uuid4().hex[:6]}.txt"
    emulator.store.put(emulator.bucket, key, b"later\n")
    record = emulator.state.add_file(10002, key, ["later"], 6, "later", datetime.now(UTC))
    try:
        assert set(os.listdir(m.path / "analyses" / "10002" / "all")) == before
        for target in ("analyses/10002", str(m.path / "analyses" / "10002")):
            subprocess.run([sys.executable, "-m", "bpfs", "refresh", str(m.path), target], check=True, timeout=60)
        assert "later" in os.listdir(m.path / "analyses" / "10002" / "all")
    finally:
        with emulator.state.lock:
            emulator.state.files.pop(record["id"], None)
            emulator.state.analyses[10002]["file_ids"].remove(record["id"])
