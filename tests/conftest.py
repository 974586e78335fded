"""Fixtures: a running emulator and real bpfs mounts of it, always unmounted afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpfs.mounting.mountpoints import mounted_fuse

FUSE_OK = os.path.exists("/dev/fuse") and (shutil.which("fusermount3") or shutil.which("fusermount"))
needs_fuse = pytest.mark.fuse  # a test that mounts; skipped where FUSE is missing (see below)
MOUNTING_FIXTURES = frozenset({"mount", "make_mount"})


def pytest_collection_modifyitems(config, items) -> None:
    """Every test that mounts is marked `fuse` (so `pytest -m "not fuse"` is the fast in-process loop), and
    skipped where FUSE is missing (outside CI)."""
    skip = pytest.mark.skip(reason="needs /dev/fuse and fusermount (apt-get install fuse3)")
    for item in items:
        if MOUNTING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fuse)
        if not FUSE_OK and item.get_closest_marker("fuse") is not None:
            item.add_marker(skip)


def pytest_configure(config) -> None:
    """In CI the integration tests must really mount: a missing tool fails the run instead of skipping."""
    if os.environ.get("CI") == "true":
        missing = [name for name, ok in (("FUSE (/dev/fuse, fusermount3)", FUSE_OK),
                                         ("samtools", shutil.which("samtools")), ("tabix", shutil.which("tabix")),
                                         ("rsync", shutil.which("rsync"))) if not ok]
        if missing:
            raise pytest.UsageError(f"CI needs {', '.join(missing)}: run scripts/setup.sh")


def fusermount() -> str:
    return shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"


def unmount_hard(path: Path) -> None:
    """fusermount -u, then -uz as a last resort: no test leaves a mount behind."""
    if not mounted_fuse(path):
        return
    for flag in ("-u", "-uz"):
        for _ in range(20):
            if subprocess.run([fusermount(), flag, str(path)], capture_output=True).returncode == 0:
                return
            if not mounted_fuse(path):
                return
            time.sleep(0.25)


def wait_mounted(path: Path, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mounted_fuse(path):
            with contextlib.suppress(OSError):
                os.listdir(path)
                return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"bpfs exited with {proc.returncode} before mounting")
        time.sleep(0.05)
    raise AssertionError(f"{path} was not mounted within {timeout}s")


class Mount:
    """A `bpfs mount --foreground` child process (so its PID is known) and its mount point."""

    def __init__(self, emulator, workdir: Path, dialect: str = "v3", options: tuple[str, ...] = (),
                 env: dict | None = None, args: tuple[str, ...] = ()) -> None:
        self.emulator = emulator
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / "mnt"
        self.path.mkdir(exist_ok=True)
        self.config = emulator.write_config(workdir / f"config-{dialect}.json", dialect=dialect)
        os.chmod(self.config, 0o600)
        self.log = workdir / "bpfs.log"
        cmd = [sys.executable, "-m", "bpfs", "mount", str(self.path), "-c", str(self.config), "--foreground",
               "--log-file", str(self.log)]
        for option in options:
            cmd += ["-o", option]
        cmd += list(args)
        self.stderr = open(workdir / "stderr.txt", "wb")  # noqa: SIM115 - closed in stop()
        # each mount keeps its upload journal in its own directory unless a test shares one on purpose
        self.state_dir = Path((env or {}).get("XDG_STATE_HOME") or workdir / "state")
        self.proc = subprocess.Popen(cmd, stdout=self.stderr, stderr=subprocess.STDOUT,
                                     env={**os.environ, "XDG_STATE_HOME": str(self.state_dir), **(env or {})})
        try:
            wait_mounted(self.path, self.proc)
        except BaseException:
            self.stop()
            raise

    def stats(self) -> dict:
        return json.loads((self.path / ".bpfs" / "stats").read_text())

    def stop(self) -> None:
        try:
            unmount_hard(self.path)
        finally:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.stderr.close()

    def __enter__(self) -> Mount:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session", autouse=True)
def private_state(tmp_path_factory):
    """The upload journal of every mount and in-process filesystem the tests make goes to a temporary
    directory, not the user's ~/.local/state (each emulator is an account of its own there)."""
    state = tmp_path_factory.mktemp("state")
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state)
    yield state
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous


@pytest.fixture(scope="session")
def emulator():
    from bpfs.emulator import Emulator

    emu = Emulator(big_file_mib=24, bam_reads=20000).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def mount(emulator, tmp_path_factory):
    if not FUSE_OK:
        pytest.skip("needs FUSE")
    with Mount(emulator, tmp_path_factory.mktemp("mount-v3"), "v3") as m:
        yield m


@pytest.fixture
def make_mount(emulator, tmp_path):
    """Mount with custom options; every mount made is stopped at the end of the test."""
    if not FUSE_OK:
        pytest.skip("needs FUSE")
    mounts = []

    def make(dialect: str = "v3", options: tuple[str, ...] = (), emu=None, name: str | None = None, env=None,
             args: tuple[str, ...] = ()):
        m = Mount(emu or emulator, tmp_path / (name or f"m{len(mounts)}"), dialect, options, env, args)
        mounts.append(m)
        return m

    try:
        yield make
    finally:
        for m in mounts:
            m.stop()
