"""Faults injected in the emulator, survived by a real mount; and freshness without a remount."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from bpfs.mounting.mountpoints import mounted_fuse
from tests.conftest import needs_fuse

pytestmark = needs_fuse

BIGWIG = "analyses/7/10000/star/liver_rep1.bigwig"
BIGWIG_PATH = ("analyses", "10000", "bigwig", "liver_rep1.bigwig")


@pytest.fixture
def faults(emulator):
    try:
        yield emulator
    finally:
        emulator.faults_s3.clear()
        emulator.faults_api.clear()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def expected(emulator, key=BIGWIG) -> bytes:
    return emulator.store.get_bytes(emulator.bucket, key)


def test_s3_slowdown_is_retried(make_mount, faults):
    m = make_mount()
    rule = faults.faults_s3.add(method="GET", path="liver_rep1.bigwig", status=503, code="SlowDown", times=2)
    data = m.path.joinpath(*BIGWIG_PATH).read_bytes()
    assert md5(data) == md5(expected(faults)) and rule.hits == 2


def test_a_body_cut_off_midway_resumes_where_it_stopped(make_mount, faults):
    m = make_mount()
    rule = faults.faults_s3.add(method="GET", path="liver_rep1.bigwig", drop_after=100_000, times=3)
    data = m.path.joinpath(*BIGWIG_PATH).read_bytes()
    assert md5(data) == md5(expected(faults)) and rule.hits == 3
    resumed = m.log.read_text().count("broke off at byte")
    assert resumed >= 2 and m.stats()["s3_errors"] == resumed  # each cut body was resumed, none failed


def test_a_stalled_server_times_out_and_is_retried(make_mount, faults):
    m = make_mount(options=("s3_timeout=1",))
    rule = faults.faults_s3.add(method="GET", path="liver_rep1.bigwig", delay=3, times=1)
    started = time.monotonic()
    with open(m.path.joinpath(*BIGWIG_PATH), "rb") as f:
        f.seek(5_000_000)
        assert f.read(4096) == expected(faults)[5_000_000:5_004_096]
    assert rule.hits == 1 and time.monotonic() - started < 20


def test_archived_object_is_eio_at_once_with_a_log_line_then_recovers(make_mount, faults):
    m = make_mount()
    key = "analyses/7/10000/metrics/rnaseq_metrics.json"
    p = m.path / "analyses" / "10000" / "json" / "rnaseq_metrics.json"
    faults.store.set_storage_class(faults.bucket, key, "GLACIER")
    try:
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            p.read_bytes()
        assert info.value.errno == errno.EIO and time.monotonic() - started < 5
        log = m.log.read_text()
        assert "rnaseq_metrics.json" in log and "archive" in log
        assert any("archive" in e["error"] for e in m.stats()["last_errors"])
    finally:
        faults.store.set_storage_class(faults.bucket, key, "STANDARD")
    assert p.read_bytes() == expected(faults, key)  # the same mount reads again once restored


def test_s3_access_denied_is_eacces(make_mount, faults):
    m = make_mount()
    p = m.path / "analyses" / "10000" / "html" / "liver_rep1_R1_fastqc.html"
    faults.faults_s3.add(method="GET", path="liver_rep1_R1_fastqc.html", status=403, code="AccessDenied", times=None)
    with pytest.raises(PermissionError):
        p.read_bytes()
    faults.faults_s3.clear()
    assert p.read_bytes() == expected(faults, "analyses/7/10000/fastqc/liver_rep1_R1_fastqc.html")


def test_api_5xx_is_retried(make_mount, faults):
    m = make_mount()
    rule = faults.faults_api.add(method="GET", path="/api/v3/genomes", status=503, times=2)
    assert (m.path / "genomes" / "index.tsv").read_text().count("\n") == 24
    assert rule.hits == 2


def test_api_down_serves_cached_listings_and_fails_fast_elsewhere(make_mount, faults):
    m = make_mount(options=("list_ttl=1",))
    before = sorted(os.listdir(m.path / "analyses"))
    index = (m.path / "samples" / "index.tsv").read_text()
    faults.faults_api.add(status=503, times=None)
    time.sleep(1.5)  # past the TTL: refreshing fails, the last good listing is served
    assert sorted(os.listdir(m.path / "analyses")) == before
    assert (m.path / "samples" / "index.tsv").read_text() == index
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        os.listdir(m.path / "analyses" / "10004" / "all")  # never fetched: nothing stale to serve
    assert info.value.errno == errno.EIO and time.monotonic() - started < 30
    assert "HTTP 503" in m.log.read_text()
    faults.faults_api.clear()
    assert "all" in os.listdir(m.path / "analyses" / "10004")  # recovers without a remount


def test_credentials_revoked_mid_session_is_eacces(make_mount, faults):
    m = make_mount(options=("list_ttl=1",))
    assert os.listdir(m.path / "workflows")
    faults.faults_api.add(status=401, times=None)
    time.sleep(1.5)
    with pytest.raises(PermissionError):
        os.listdir(m.path / "workflows")
    assert "credentials refused" in m.log.read_text()
    faults.faults_api.clear()
    time.sleep(1.1)
    assert "index.tsv" in os.listdir(m.path / "workflows")


def test_debug_log_and_errors_never_show_secrets(make_mount, faults):
    m = make_mount(args=("--debug",))
    faults.faults_api.add(method="GET", path="/api/v3/analyses/10002", status=500, times=None)
    with pytest.raises(OSError):
        os.listdir(m.path / "analyses" / "10002")
    faults.faults_api.clear()
    m.path.joinpath(*BIGWIG_PATH).open("rb").read(100)
    text = m.log.read_text() + (m.workdir / "stderr.txt").read_text() + (m.path / ".bpfs" / "stats").read_text()
    secret = faults.config_v3()["storage"]["user"]["credentials"]["secret"]
    assert "DEBUG" in text
    for value in (faults.api_key, secret):
        assert value not in text
    assert value.encode() not in open(f"/proc/{m.proc.pid}/cmdline", "rb").read()


def test_sigterm_unmounts_cleanly(make_mount):
    m = make_mount()
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=20) == 0
    assert not mounted_fuse(m.path)


def test_refresh_shows_new_records_before_the_ttl(make_mount, faults):
    m = make_mount(options=("list_ttl=3600",))
    state = faults.state
    assert "late arrival" not in (m.path / "samples" / "index.tsv").read_text()
    sample = state.create_sample({"name": "late arrival"})
    try:
        assert "late arrival" not in (m.path / "samples" / "index.tsv").read_text()  # cached for an hour
        subprocess.run([sys.executable, "-m", "bpfs", "refresh", str(m.path), "samples"], check=True)
        assert "late arrival" in (m.path / "samples" / "index.tsv").read_text()
    finally:
        state.delete_sample(sample["id"])
    subprocess.run([sys.executable, "-m", "bpfs", "refresh", str(m.path)], check=True)
    assert "late arrival" not in (m.path / "samples" / "index.tsv").read_text()


def test_refresh_works_on_a_read_only_mount(make_mount, faults):
    m = make_mount(options=("ro,list_ttl=3600",))
    (m.path / "samples" / "index.tsv").read_text()
    sample = faults.state.create_sample({"name": "ro arrival"})
    try:
        subprocess.run([sys.executable, "-m", "bpfs", "refresh", str(m.path), "samples"], check=True)
        assert "ro arrival" in (m.path / "samples" / "index.tsv").read_text()
    finally:
        faults.state.delete_sample(sample["id"])


def test_running_analysis_is_repolled(make_mount, faults):
    m = make_mount(options=("running_ttl=1",))
    d = m.path / "analyses" / "10002"
    before = set(os.listdir(d / "all"))
    key = "analyses/7/10002/star/progress.txt"
    faults.store.put(faults.bucket, key, b"half way\n")
    record = faults.state.add_file(10002, key, ["progress"], 9, "star", datetime.now(UTC))
    try:
        time.sleep(1.2)
        assert set(os.listdir(d / "all")) == before | {"star"} or "star" in os.listdir(d / "all")
        assert (d / "progress" / "progress.txt").read_bytes() == b"half way\n"
    finally:
        with faults.state.lock:
            faults.state.files.pop(record["id"], None)
            faults.state.analyses[10002]["file_ids"].remove(record["id"])
