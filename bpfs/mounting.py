"""Putting the pieces together, and the mount point's lifecycle (checks, recovery, unmount)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bpfs.api import ApiClient
from bpfs.config import Config
from bpfs.errors import BpfsError, ConfigError
from bpfs.filesystem import Filesystem
from bpfs.namespace import Namespace
from bpfs.options import MountOptions
from bpfs.prefetch import PrefetchConfig, Prefetcher
from bpfs.s3 import ObjectClient
from bpfs.stats import Stats

log = logging.getLogger("bpfs")


def mounted_fuse(mountpoint: str | os.PathLike) -> bool:
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[1].replace("\\040", " ") == target:
                    return True
    except OSError:
        pass
    return False


def fusermount() -> str:
    for name in ("fusermount3", "fusermount"):
        found = shutil.which(name)
        if found:
            return found
    raise BpfsError("neither fusermount3 nor fusermount is installed (apt-get install fuse3)")


def check_mountpoint(mountpoint: str) -> str:
    """The absolute mount point, recovering one left dead by a crashed daemon."""
    path = os.path.abspath(os.path.expanduser(mountpoint))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"mount point {path} does not exist") from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise ConfigError(f"mount point {path}: {exc.strerror}") from None
        # "Transport endpoint is not connected": the daemon died; detach the corpse and go on
        subprocess.run([fusermount(), "-uz", path], capture_output=True, timeout=30)
        log.warning("recovered %s, left dead by an earlier bpfs that exited", path)
        st = os.stat(path)
    if not os.path.isdir(path):
        raise ConfigError(f"mount point {path} is not a directory")
    del st
    if mounted_fuse(path):
        raise ConfigError(f"{path} is already mounted (bpfs umount {path} first)")
    return path


def holders(mountpoint: str) -> list[str]:
    """'pid (command)' of processes whose cwd or open files are under the mount point."""
    prefix = os.path.realpath(mountpoint)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            links = [os.readlink(f"/proc/{pid}/cwd")]
            fd_dir = f"/proc/{pid}/fd"
            links += [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        if any(link == prefix or link.startswith(prefix + "/") for link in links):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                name = "?"
            found.append(f"{pid} ({name})")
    return found


def unmount(mountpoint: str, lazy: bool = False) -> None:
    path = os.path.abspath(os.path.expanduser(mountpoint))
    if not mounted_fuse(path):
        raise ConfigError(f"{path} is not mounted")
    result = subprocess.run([fusermount(), "-uz" if lazy else "-u", path], capture_output=True, text=True,
                            timeout=60)
    if result.returncode == 0:
        return
    message = (result.stderr or result.stdout).strip().splitlines()
    reason = message[-1] if message else "fusermount failed"
    if "busy" in reason.lower():
        users = holders(path)
        who = f"; in use by {', '.join(users)}" if users else ""
        raise BpfsError(f"{path} is busy{who}. Close those, or detach now with: bpfs umount --lazy {path}")
    raise BpfsError(f"cannot unmount {path}: {reason}")


def raise_readahead(mountpoint: str, kb: int) -> None:
    """Let the kernel read ahead `kb` KiB (1 MiB FUSE reads instead of 128 KiB): root only, best effort.

    FUSE can only lower a mount's readahead from its init reply; raising it takes the bdi's sysfs
    knob. The device comes from mountinfo, so the daemon never touches its own mount.
    """
    if kb <= 0:
        return
    target = mountpoint  # already real: resolving it here would stat the mount from inside its own daemon
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            for line in mountinfo:
                fields = line.split()
                if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                    Path("/sys/class/bdi", fields[2], "read_ahead_kb").write_text(str(kb))
                    log.info("read_ahead_kb of %s set to %d", target, kb)
                    return
    except OSError as exc:
        log.info("kept the kernel's readahead for %s (%s)", target, exc.strerror or exc)


def connect(config: Config, stats: Stats) -> tuple[ApiClient, Config]:
    """Check the credentials (401 → a clear error) and complete a v3 `cli` config from the server."""
    api = ApiClient(config, stats)
    api.whoami()
    if config.fetch_storage:
        config = config.with_storage(api.storage_configuration())
        api.config = config
    return api, config


def build_filesystem(config: Config, options: MountOptions, stats: Stats | None = None) -> Filesystem:
    stats = stats or Stats()
    api, config = connect(config, stats)
    objects = ObjectClient(config, stats, max_connections=max(16, options.readers * 2),
                           read_timeout=options.s3_timeout)
    namespace = Namespace(api, objects, stats, list_ttl=options.list_ttl, running_ttl=options.running_ttl)
    readers = Prefetcher(objects, stats, PrefetchConfig(
        part_size=options.part_mb << 20, cache_bytes=options.cache_mb << 20, workers=options.readers,
        max_in_flight=max(2, options.readers) * (options.part_mb << 20)))
    from bpfs.writer import SampleWriter  # noqa: I001 - the sample writer (samples/new/), unless -o ro

    writer = None if options.ro else SampleWriter(namespace.api, objects, namespace, stats, options)
    return Filesystem(namespace, readers, stats, options, writer=writer)


def serve(config: Config, options: MountOptions, mountpoint: str, on_ready: Callable[[], None],
          debug: bool = False) -> None:
    from bpfs import fuseops  # libfuse is loaded only when something is mounted

    fs = build_filesystem(replace(config), options)
    real_mountpoint = os.path.realpath(mountpoint)  # before mounting: afterwards this would ask the daemon

    def ready() -> None:
        raise_readahead(real_mountpoint, options.read_ahead_kb)
        on_ready()

    log.info("mounting %s (%s API at %s) on %s", config.username, config.dialect, config.base_url, mountpoint)
    try:
        fuseops.mount(fs, mountpoint, on_ready=ready, debug=debug)
    finally:
        if fs.writer is not None:
            fs.writer.shutdown()  # uploads still open are aborted and marked failed, never left half-done
        fs.readers.close()
        log.info("unmounted %s", mountpoint)
