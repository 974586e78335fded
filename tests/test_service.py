"""bpfs as a system tool: the mount helper form (fstab), a systemd user unit with readiness, `bpfs status`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpfs.mounting.mountpoints import mounted_fuse
from tests.conftest import unmount_hard, wait_mounted
from tests.helpers import MiB, unique
from tests.test_cli import one_line_error, run

pytestmark = pytest.mark.fuse


def config(emulator, tmp_path: Path) -> Path:
    path = emulator.write_config(tmp_path / "config.json")
    os.chmod(path, 0o600)
    return path


def test_the_mount_helper_form_mounts_and_unmounts(emulator, tmp_path):
    """What mount(8) runs for `CONFIG /mnt fuse.bpfs user,noauto,list_ttl=30 0 0` in /etc/fstab."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run(str(config(emulator, tmp_path)), str(mnt), "-o", "rw,user,noauto,_netdev,nofail,list_ttl=30,"
                 "x-systemd.automount", env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")})
    try:
        assert result.returncode == 0, result.stderr
        wait_mounted(mnt)
        assert "10000" in os.listdir(mnt / "analyses")
        assert run("umount", str(mnt)).returncode == 0 and not mounted_fuse(mnt)
    finally:
        unmount_hard(mnt)


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("mount.fuse3"), reason="mount(8) as root, with mount.fuse3")
def test_mount_dash_t_fuse_runs_bpfs_as_its_helper(emulator, tmp_path):
    """mount(8) runs helpers with a fixed PATH; the `PROGRAM#SOURCE` form names bpfs wherever it is installed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    program = Path(sys.executable).parent / "bpfs"
    if not program.exists():
        pytest.skip("the bpfs command is not installed beside this Python")
    result = subprocess.run(["mount", "-t", "fuse", f"{program}#{config(emulator, tmp_path)}", str(mnt), "-o",
                             "noauto,list_ttl=30"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")})
    try:
        assert result.returncode == 0, result.stderr
        wait_mounted(mnt)
        assert "hg19.json" in os.listdir(mnt / "genomes")
        assert subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60).returncode == 0
        assert not mounted_fuse(mnt)
    finally:
        unmount_hard(mnt)


def test_a_systemd_unit_that_verifies_and_a_mount_that_says_ready(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = config(emulator, tmp_path)
    unit = run("systemd-unit", str(mnt), "-c", str(cfg), "-o", "list_ttl=30")
    assert unit.returncode == 0
    text = unit.stdout
    assert "Type=notify" in text and f"ExecStop={sys.executable} -m bpfs umount {mnt}" in text
    assert "Restart=on-failure" in text and "--foreground" in text
    if shutil.which("systemd-analyze"):
        path = tmp_path / "bpfs-test.service"
        path.write_text(text)
        verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stderr
    # Type=notify: the daemon tells systemd once the mount is live
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(60)
    proc = subprocess.Popen([sys.executable, "-m", "bpfs", "mount", str(mnt), "--foreground", "-c", str(cfg),
                             "--log-file", str(tmp_path / "log")],
                            env={**os.environ, "NOTIFY_SOCKET": address, "XDG_STATE_HOME": str(tmp_path / "s")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        message = listener.recv(4096).decode()
        assert message.startswith("READY=1") and mounted_fuse(mnt)
        unmount_hard(mnt)
        assert "STOPPING=1" in listener.recv(4096).decode()
        assert proc.wait(timeout=30) == 0
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        unmount_hard(mnt)


def test_status_shows_counters_and_an_upload_in_flight(make_mount):
    m = make_mount()
    (m.path / "genomes" / "hg19.json").read_bytes()
    name = unique("status")
    fd = os.open(m.path / "samples" / "new" / f"{name}.fastq", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, os.urandom(9 * MiB))
        time.sleep(0.5)
        result = run("status", str(m.path))
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert f"bpfs at {m.path}" in out and "requests   API" in out and "cache " in out
        assert f"samples/new/{name}.fastq: 9.4 MB written" in out
        watching = subprocess.Popen([sys.executable, "-m", "bpfs", "status", str(m.path), "--watch", "0.2"],
                                    stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        watching.terminate()
        watched = watching.communicate(timeout=10)[0]
        assert watched.count(f"bpfs at {m.path}") >= 2 and "read through the mount" in watched
    finally:
        os.close(fd)
    line = one_line_error(run("status", str(m.workdir)))
    assert "not mounted" in line
    assert json.loads((m.path / ".bpfs" / "stats").read_text())["uploads"] == []
