"""The command line and the mount's lifecycle, as a user runs them."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bpfs.mounting.mountpoints import mounted_fuse
from tests.conftest import needs_fuse, unmount_hard, wait_mounted

BPFS = [sys.executable, "-m", "bpfs"]
pytestmark = pytest.mark.fuse  # the bpfs command: the front end that mounts


def run(*args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*BPFS, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def daemon_pids(mountpoint: Path) -> list[int]:
    """PIDs of bpfs processes serving this (unique, temporary) mount point."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"bpfs" in b" ".join(cmd) and str(mountpoint).encode() in cmd and int(pid) != os.getpid():
            pids.append(int(pid))
    return pids


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_and_version():
    assert run("--version").stdout.startswith("bpfs ")
    out = run("--help").stdout
    for command in ("mount", "umount", "demo"):
        assert command in out
    assert "list_ttl" in run("mount", "--help").stdout


def test_user_mistakes_are_one_line(emulator, tmp_path):
    config = emulator.write_config(tmp_path / "c.json", dialect="v3")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert "does not exist" in one_line_error(run("mount", str(mnt), "-c", str(tmp_path / "nope.json")))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert "not valid JSON" in one_line_error(run("mount", str(mnt), "-c", str(bad)))
    assert "does not exist" in one_line_error(run("mount", str(tmp_path / "missing"), "-c", str(config)))
    (tmp_path / "file").write_text("x")
    assert "not a directory" in one_line_error(run("mount", str(tmp_path / "file"), "-c", str(config)))
    assert "unknown mount option" in one_line_error(run("mount", str(mnt), "-c", str(config), "-o", "bogus"))
    assert "not mounted" in one_line_error(run("umount", str(mnt)))
    env = {**os.environ, "HOME": str(tmp_path), "BP_CONFIG_FILE": ""}
    assert "no config file" in one_line_error(run("mount", str(mnt), env=env))


def test_a_user_is_told_when_the_mount_point_is_not_theirs(tmp_path, monkeypatch):
    """fusermount refuses a user a directory they cannot write to, and libfuse then says only "4"."""
    from bpfs.errors import ConfigError
    from bpfs.mounting import mountpoints

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    monkeypatch.setattr(mountpoints.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(mountpoints.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="not writable by you"):
        mountpoints.check_mountpoint(str(mnt))
    monkeypatch.setattr(mountpoints.os, "access", lambda path, mode: True)
    assert mountpoints.check_mountpoint(str(mnt)) == str(mnt)


@needs_fuse
def test_refused_credentials_and_unreachable_api(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    data = emulator.config_v3()
    data["api_v3"]["key"] = "wrong-key-0000"
    cfg = tmp_path / "wrong.json"
    cfg.write_text(json.dumps(data))
    os.chmod(cfg, 0o600)
    line = one_line_error(run("mount", str(mnt), "-c", str(cfg), "--log-file", str(tmp_path / "log")))
    assert "credentials refused" in line and "wrong-key-0000" not in line
    data = emulator.config_v3()
    data["api_v3"]["host"] = "127.0.0.1:9"  # nothing listens on the discard port
    cfg.write_text(json.dumps(data))
    started = time.monotonic()
    line = one_line_error(run("mount", str(mnt), "-c", str(cfg), "--log-file", str(tmp_path / "log")))
    assert "cannot reach the Basepair API" in line and "connection refused" in line and time.monotonic() - started < 60
    assert not mounted_fuse(mnt)
    log = (tmp_path / "log").read_text()
    assert emulator.api_key not in log and "wrong-key-0000" not in log


@needs_fuse
def test_background_mount_umount_busy_and_lazy(emulator, tmp_path):
    config = emulator.write_config(tmp_path / "c.json", dialect="v1")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    holder = None
    try:
        result = run("mount", str(mnt), "-c", str(config), "--log-file", str(tmp_path / "log"))
        assert result.returncode == 0, result.stderr
        assert mounted_fuse(mnt) and "analyses" in os.listdir(mnt)  # live when mount returns
        pids = daemon_pids(mnt)
        assert len(pids) == 1
        cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
        assert emulator.api_key.encode() not in cmdline
        assert "already mounted" in one_line_error(run("mount", str(mnt), "-c", str(config)))
        holder = subprocess.Popen(["sleep", "60"], cwd=mnt / "analyses")
        time.sleep(0.3)
        line = one_line_error(run("umount", str(mnt)))
        assert "busy" in line and str(holder.pid) in line and "--lazy" in line
        assert run("umount", "--lazy", str(mnt)).returncode == 0
        assert not mounted_fuse(mnt)
        holder.kill()
        holder.wait()
        holder = None
        deadline = time.monotonic() + 20
        while daemon_pids(mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not daemon_pids(mnt)  # the daemon exits once unmounted
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        unmount_hard(mnt)
        for pid in daemon_pids(mnt):
            os.kill(pid, signal.SIGTERM)


@needs_fuse
def test_a_dead_mount_is_recovered_by_the_next_mount(emulator, tmp_path):
    config = emulator.write_config(tmp_path / "c.json")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        assert run("mount", str(mnt), "-c", str(config), "--log-file", str(tmp_path / "log")).returncode == 0
        for pid in daemon_pids(mnt):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        with pytest.raises(OSError):
            os.listdir(mnt)  # Transport endpoint is not connected
        result = run("mount", str(mnt), "-c", str(config), "--log-file", str(tmp_path / "log"))
        assert result.returncode == 0, result.stderr
        assert "genomes" in os.listdir(mnt)
        assert run("umount", str(mnt)).returncode == 0
    finally:
        unmount_hard(mnt)
        for pid in daemon_pids(mnt):
            os.kill(pid, signal.SIGTERM)


@needs_fuse
def test_demo_mounts_and_ctrl_c_cleans_up(tmp_path):
    mnt = tmp_path / "demo"
    proc = subprocess.Popen([*BPFS, "demo", str(mnt), "--log-file", str(tmp_path / "log")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_mounted(mnt, proc, timeout=120)
        assert "liver_rep1.bam" in os.listdir(mnt / "analyses" / "10000" / "bam")
        # the whole loop: upload a sample, start an analysis on it, read its results
        (tmp_path / "demo_R1.fastq").write_bytes(b"@r1\nACGT\n+\nIIII\n" * 100)
        script = textwrap.dedent(f"""
            set -e
            mkdir {mnt}/samples/new/demo_sample
            cp {tmp_path}/demo_R1.fastq {mnt}/samples/new/demo_sample/
            cat > {mnt}/analyses/new/liver-star.json <<'EOF'
            {{"workflow": 7, "samples": ["demo_sample"],
             "params": {{"node": {{"star": {{"outFilterMultimapNmax": "20"}}}}}}}}
            EOF
            cat {mnt}/analyses/new/liver-star.json
        """)
        started = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        new = json.loads(started.stdout)["id"]
        assert str(new) in os.listdir(mnt / "analyses")
        deadline = time.monotonic() + 60
        while "counts" not in os.listdir(mnt / "analyses" / str(new) / "all") and time.monotonic() < deadline:
            time.sleep(1)
        counts = next((mnt / "analyses" / str(new) / "all" / "counts").iterdir())
        assert counts.read_text().startswith("gene_id")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert not mounted_fuse(mnt)
        assert "Traceback" not in err and "unmounted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        unmount_hard(mnt)


@needs_fuse
def test_5000_analyses_list_with_one_request_per_page_cold_and_none_warm(make_mount):
    from bpfs.emulator import Emulator

    emu = Emulator(extra_analyses=5000, big_file_mib=1, bam_reads=1000).start()
    try:
        m = make_mount(emu=emu)
        total = len(emu.state.table("analyses"))
        assert total >= 5000
        emu.api.reset_stats()
        names = os.listdir(m.path / "analyses")
        assert len(names) == total + 2  # and index.tsv, new/
        cold = emu.api.stats.get("GET analyses", 0)
        assert cold == math.ceil(total / 100)
        lines = (m.path / "analyses" / "index.tsv").read_text().splitlines()
        assert len(lines) == total + 1
        subprocess.run(["ls", "-l", str(m.path / "analyses")], check=True, capture_output=True)
        assert emu.api.stats.get("GET analyses", 0) == cold  # warm: served from the cache
    finally:
        emu.stop()
