"""Mount points: checks before mounting, recovery of a dead mount, unmounting (naming what keeps a mount
busy), and the kernel readahead of a mount. (mountinfo itself is read in `bpfs.processes`.)"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from bpfs.errors import BpfsError, ConfigError
from bpfs.processes import MountEntry, mount_table, open_files

log = logging.getLogger("bpfs")


def find_mount(path: str | os.PathLike) -> MountEntry | None:
    """The mount on exactly this path (the topmost, when several are stacked)."""
    target = os.fspath(path)
    found = None
    for entry in mount_table():
        if entry.mountpoint == target:
            found = entry
    return found


def mounted_fuse(mountpoint: str | os.PathLike) -> bool:
    """Whether a FUSE filesystem is mounted on this path. Never stats the path: a dead mount would hang."""
    entry = find_mount(os.path.abspath(os.path.expanduser(os.fspath(mountpoint))))
    return entry is not None and entry.fstype.startswith("fuse")


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
    if os.geteuid() != 0 and not os.access(path, os.W_OK):
        # fusermount's own rule for users; refused there, libfuse reports only "mount failed: 4"
        raise ConfigError(f"mount point {path} is not writable by you, and a user may mount only on a directory "
                          f"they can write to: chown it to yourself, or use one in your home directory")
    if mounted_fuse(path):
        raise ConfigError(f"{path} is already mounted (bpfs umount {path} first)")
    return path


def holders(mountpoint: str) -> list[str]:
    """'pid (command)' of processes whose cwd or open files are under the mount point."""
    found: dict[int, str] = {}
    for pid, _path in open_files(os.path.abspath(mountpoint), skip=os.getpid()):
        if pid not in found:
            try:
                found[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                found[pid] = "?"
    return [f"{pid} ({name})" for pid, name in found.items()]


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


def raise_readahead(mountpoint: str, kb: int, settle: float = 5.0) -> None:
    """Let the kernel read ahead `kb` KiB (1 MiB FUSE reads instead of 128 KiB): root only, best effort.

    FUSE can only lower a mount's readahead, and the kernel applies the INIT reply *after* our init
    callback returns, taking the smaller of the two: a value written from init is undone at once. So
    this runs in the background, writes the bdi's sysfs knob, and writes it again until it holds. The
    device comes from mountinfo, so the daemon never touches its own mount.
    """
    if kb <= 0:
        return

    def apply() -> None:
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            entry = find_mount(mountpoint)  # already real: resolving it here would enter the mount
            if entry is not None:
                knob = Path("/sys/class/bdi", entry.device, "read_ahead_kb")
                try:
                    if knob.read_text().strip() == str(kb):
                        time.sleep(0.2)  # held once; make sure the INIT reply has not come in between
                        if knob.read_text().strip() == str(kb):
                            log.info("read_ahead_kb of %s set to %d", mountpoint, kb)
                            return
                    knob.write_text(str(kb))
                except OSError as exc:
                    log.info("kept the kernel's readahead for %s (%s)", mountpoint, exc.strerror or exc)
                    return
            time.sleep(0.05)
        log.info("kept the kernel's readahead for %s (it did not hold)", mountpoint)

    threading.Thread(target=apply, name="bpfs-readahead", daemon=True).start()


def check_fuse() -> None:
    """FUSE must be usable before we fork: one clear line instead of libfuse's error code."""
    device = "/dev/fuse"
    if not os.path.exists(device):
        raise ConfigError("FUSE is not available: /dev/fuse does not exist. On a host: apt-get install fuse3 "
                          "(and modprobe fuse); in a container: run it with --device /dev/fuse "
                          "--cap-add SYS_ADMIN, or use the fsspec interface, which needs no FUSE")
    if not os.access(device, os.R_OK | os.W_OK):
        raise ConfigError(f"cannot open /dev/fuse: permission denied for user {os.getuid()}. Ask an "
                          "administrator to let you use FUSE (on some systems: add your user to the group that "
                          "owns /dev/fuse, often 'fuse', and log in again)")
    if os.getuid() != 0:
        fusermount()  # a normal user mounts through the setuid helper
