"""The behaviour suite's runners: every test here runs in-process (`in_process`: the core, no FUSE)
and through a real mount (`fuse`), against the same emulated account."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfs.mounting.assembly import build_filesystem
from bpfs.options import parse_options
from bpfs.remote.config import parse_config
from bpfs.stats import Stats
from tests.behaviour.runners import InProcess, Mounted, Runner
from tests.conftest import FUSE_OK, Mount
from tests.fakes import InProcessApi, in_process_objects

RUNNERS = ["in_process", pytest.param("fuse", marks=pytest.mark.fuse)]


@contextlib.contextmanager
def in_process(emulator, workdir: Path, options: tuple[str, ...] = (), dialect: str = "v3") -> Iterator[InProcess]:
    config = parse_config(emulator.config_v1() if dialect == "v1" else emulator.config_v3(), environ={})
    stats = Stats()
    api = InProcessApi(config, emulator.api, stats)
    api.whoami()
    objects = in_process_objects(config, emulator.store, stats)
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(workdir / "state")  # this runner's upload journal
    try:
        fs = build_filesystem(config, parse_options(list(options)), stats, api=api, objects=objects)
    finally:
        if saved is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = saved
    try:
        yield InProcess(fs, emulator, api, objects)
    finally:
        fs.close()


@contextlib.contextmanager
def runner(kind: str, emulator, workdir: Path, options: tuple[str, ...] = (), dialect: str = "v3") -> Iterator[Runner]:
    if kind == "in_process":
        with in_process(emulator, workdir, options, dialect) as r:
            yield r
        return
    if not FUSE_OK:
        pytest.skip("needs FUSE")
    with Mount(emulator, workdir, dialect, options) as m:
        yield Mounted(m)


@pytest.fixture(scope="module", params=RUNNERS)
def fs(request, emulator, tmp_path_factory) -> Iterator[Runner]:
    """The default mount, shared by a module's tests."""
    with runner(request.param, emulator, tmp_path_factory.mktemp(request.param)) as r:
        yield r


@pytest.fixture(params=RUNNERS)
def make_fs(request, emulator, tmp_path):
    """A runner with options of its own, stopped at the end of the test."""
    stack = contextlib.ExitStack()

    def make(*options: str, dialect: str = "v3", emu=None) -> Runner:
        return stack.enter_context(runner(request.param, emu or emulator, tmp_path / f"r{len(stack._exit_callbacks)}",
                                          options, dialect))

    with stack:
        yield make
