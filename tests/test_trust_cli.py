"""Trust off the happy path, the command line: one clear line instead of a traceback, options checked at
mount, awkward mount points, a dead daemon, a normal user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bpfs.mounting.mountpoints import find_mount, mounted_fuse
from tests.conftest import FUSE_OK, needs_fuse, unmount_hard, wait_mounted
from tests.test_cli import one_line_error, run

ROOT = os.getuid() == 0
pytestmark = pytest.mark.fuse  # the bpfs command: the front end that mounts


def config_file(emulator, tmp_path: Path, change=None, name: str = "config.json") -> Path:
    data = emulator.config_v3()
    if change is not None:
        change(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    os.chmod(path, 0o600)
    return path


def test_a_failed_foreground_mount_prints_one_line(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def unreachable(data):
        data["api_v3"]["host"] = "127.0.0.1:9"

    cfg = config_file(emulator, tmp_path, unreachable)
    result = run("mount", str(mnt), "-c", str(cfg), "--foreground", "--log-file", str(tmp_path / "log"))
    line = one_line_error(result)  # no urllib3 "Retrying ..." warnings, no second copy of the error
    assert "cannot reach the Basepair API at http://127.0.0.1:9" in line and "connection refused" in line


def test_a_host_that_does_not_resolve_is_named_as_such(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def nowhere(data):
        data["api_v3"]["host"] = "no-such-host.invalid"

    cfg = config_file(emulator, tmp_path, nowhere)
    line = one_line_error(run("mount", str(mnt), "-c", str(cfg), "--foreground", "--log-file", str(tmp_path / "log")))
    assert "no-such-host.invalid" in line and "DNS" in line


def test_a_config_that_is_not_utf8_is_one_line(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = tmp_path / "latin1.json"
    cfg.write_bytes(json.dumps(emulator.config_v3()).encode().replace(b"demo", b"d\xe9mo"))
    line = one_line_error(run("mount", str(mnt), "-c", str(cfg)))
    assert "not UTF-8" in line


@pytest.mark.parametrize("storage", ["a string", {"user": []}, {"user": {"settings": {"bucket": 7}}}])
def test_a_storage_section_of_the_wrong_shape_is_refused(emulator, tmp_path, storage):
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def broken(data):
        data["storage"] = storage

    line = one_line_error(run("mount", str(mnt), "-c", str(config_file(emulator, tmp_path, broken))))
    assert "storage" in line


@pytest.mark.parametrize("option, words", [
    ("list_ttl=nan", "list_ttl"), ("list_ttl=inf", "0 to 86400"), ("cache_mb=1e9", "cache_mb"),
    ("s3_timeout=0", "1 to 600"), ("readers=100000", "readers"), ("umask=8", "umask"),
    ("genome=no-such-genome", "no-such-genome"), ("default_workflow=999999", "999999"),
    ("default_workflow=7.5", "default_workflow"),
])
def test_mount_options_are_checked_at_mount(emulator, tmp_path, option, words):
    if not FUSE_OK:
        pytest.skip("needs FUSE")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = config_file(emulator, tmp_path)
    line = one_line_error(run("mount", str(mnt), "-c", str(cfg), "-o", option, "--log-file", str(tmp_path / "log")))
    assert words in line
    assert not mounted_fuse(mnt)


@pytest.fixture
def nobody_dir():
    """A directory `nobody` may use (pytest's own temporary directories are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="bpfs-nobody-"))
    os.chmod(path, 0o755)
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        unmount_hard(path / "mnt")
        shutil.rmtree(path, ignore_errors=True)


AS_NOBODY = ["setpriv", f"--reuid={65534}", f"--regid={65534}", "--clear-groups"]
NOBODY = 65534


@pytest.mark.skipif(not ROOT or not shutil.which("setpriv"), reason="needs root to run as another user")
def test_dev_fuse_not_accessible_is_one_line(emulator, nobody_dir):
    if os.stat("/dev/fuse").st_mode & 0o006 == 0o006:
        pytest.skip("/dev/fuse is open to every user here")
    mnt = nobody_dir / "mnt"
    mnt.mkdir()
    cfg = config_file(emulator, nobody_dir)
    for path in (mnt, cfg):
        os.chown(path, NOBODY, NOBODY)
    result = subprocess.run([*AS_NOBODY, sys.executable, "-m", "bpfs", "mount", str(mnt), "-c", str(cfg)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(nobody_dir)},
                            cwd=nobody_dir)
    line = one_line_error(result)
    assert "/dev/fuse" in line and "permission denied" in line


@pytest.mark.skipif(not ROOT or not shutil.which("unshare"), reason="needs root and unshare")
def test_dev_fuse_missing_is_one_line(emulator, tmp_path):
    """A container without /dev/fuse: a private mount namespace with a /dev that lacks it."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = config_file(emulator, tmp_path)
    script = f"""
        set -e
        mkdir -p {tmp_path}/dev
        for node in null zero random urandom; do cp -a /dev/$node {tmp_path}/dev/; done
        mount --bind {tmp_path}/dev /dev
        exec {sys.executable} -m bpfs mount {mnt} -c {cfg} --log-file {tmp_path}/log
    """
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                            capture_output=True, text=True, timeout=60)
    line = one_line_error(result)
    assert "FUSE is not available" in line and "/dev/fuse" in line


@needs_fuse
@pytest.mark.parametrize("name", ["with space", "tab\there", "back\\slash", "new\nline"])
def test_awkward_mount_points_are_found_by_umount_refresh_and_the_mounted_check(emulator, tmp_path, name):
    mnt = tmp_path / name
    mnt.mkdir()
    cfg = config_file(emulator, tmp_path)
    result = run("mount", str(mnt), "-c", str(cfg), "--log-file", str(tmp_path / "log"))
    try:
        assert result.returncode == 0, result.stderr
        wait_mounted(mnt)
        assert find_mount(str(mnt)) is not None and mounted_fuse(mnt)
        assert "10000" in os.listdir(mnt / "analyses")
        line = one_line_error(run("mount", str(mnt), "-c", str(cfg)))
        assert "already mounted" in line
        assert run("refresh", str(mnt), "analyses").returncode == 0
        umount = run("umount", str(mnt))
        assert umount.returncode == 0, umount.stderr
        assert not mounted_fuse(mnt)
    finally:
        unmount_hard(mnt)


@needs_fuse
def test_df_shows_room_and_the_mount_never_warns_about_threads(make_mount):
    m = make_mount()
    result = subprocess.run(["df", "-B1", str(m.path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    size, used, available = map(int, result.stdout.splitlines()[1].split()[1:4])
    assert size >= 1 << 40 and available >= 1 << 40
    st = os.statvfs(m.path)
    assert st.f_bavail * st.f_frsize >= 1 << 40
    m.stop()
    assert "Ignoring invalid max threads" not in (m.workdir / "stderr.txt").read_text()


@needs_fuse
def test_refresh_on_a_dead_mount_says_the_daemon_is_gone(emulator, tmp_path):
    from tests.conftest import Mount

    m = Mount(emulator, tmp_path / "dead")
    try:
        m.proc.kill()
        m.proc.wait(timeout=30)
        line = one_line_error(run("refresh", str(m.path)))
        assert "gone" in line and "bpfs mount" in line
    finally:
        m.stop()


@needs_fuse
@pytest.mark.skipif(not ROOT or not shutil.which("unshare") or not shutil.which("setpriv"),
                    reason="needs root to make /dev/fuse usable for a normal user in a private namespace")
def test_a_normal_user_mounts_reads_writes_and_unmounts(emulator, nobody_dir):
    """As `nobody`, in a mount namespace where /dev/fuse is open to all (as on most desktops): a background
    mount, a listing, a sample copied in, the log private to the user, an unmount."""
    home = nobody_dir
    (home / "mnt").mkdir()
    src = home / "n_R1.fastq"
    src.write_bytes(b"@r\nACGT\n+\nIIII\n" * 1000)
    cfg = config_file(emulator, home)
    name = f"nobody_{os.getpid()}"
    for path in (home / "mnt", cfg, src):
        os.chown(path, NOBODY, NOBODY)
    device = home / "fuse"
    subprocess.run(["mknod", str(device), "c", "10", "229"], check=True)
    os.chmod(device, 0o666)
    as_nobody = " ".join(AS_NOBODY)
    script = f"""
        set -e
        mount --bind {device} /dev/fuse
        {as_nobody} {sys.executable} -m bpfs mount {home}/mnt -c {cfg}
        {as_nobody} ls {home}/mnt/analyses/10000 > {home}/ls.txt
        {as_nobody} mkdir {home}/mnt/samples/new/{name}
        {as_nobody} cp {src} {home}/mnt/samples/new/{name}/
        {as_nobody} {sys.executable} -m bpfs umount {home}/mnt
    """
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                            capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "analysis.json" in (home / "ls.txt").read_text()
    with emulator.state.lock:
        (sample,) = [s for s in emulator.state.table("samples").values() if s["name"] == name]
        statuses = [u["status"] for u in emulator.state.table("uploads").values() if u["sample"] == sample["id"]]
    assert statuses == ["completed"]
    log = home / ".cache" / "bpfs" / "bpfs.log"
    assert log.stat().st_uid == NOBODY and log.stat().st_mode & 0o777 == 0o600
