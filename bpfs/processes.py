"""What bpfs learns from /proc: who still holds a file open, whether the process closing one is dying,
and the mount table (the one parser of mountinfo in bpfs).

A file in the drop box is finished at its *last* close: `{ cat a; cat b; } > f` and a `subprocess`
writing to its parent's file close the file several times, and only the last close ends it. FUSE
says who closes (flush) but not whether others still hold the file, so bpfs looks: at flush time
the closing descriptor is already gone from /proc/PID/fd, and any other descriptor on the file,
in any process, means this is not the last close. A descriptor is recognised by its path inside the
filesystem and the device of its mount, so bind mounts, containers and `umount -l` are seen too.
Only `readlink` and fdinfo are read: they never enter the mount, so the daemon never calls itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PF_EXITING = 0x4  # /proc/PID/stat flags: the process is in exit()


def open_files(prefix: str, skip: int | None = None) -> Iterator[tuple[int, str]]:
    """(pid, path) of every working directory and open file at or below `prefix` that we may see."""
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return
    for pid in pids:
        if pid == skip:
            continue
        links = []
        try:
            links.append(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            pass
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            fds = []
        for fd in fds:
            try:
                links.append(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
        for link in links:
            if link == prefix or link.startswith(prefix + "/"):
                yield pid, link


class Processes:
    """/proc facts for the files of one mount point (`None`: no mount, as in the in-process tests)."""

    def __init__(self, mountpoint: str | None) -> None:
        self.mountpoint = mountpoint.rstrip("/") if mountpoint else None
        self._device: str | None = None

    def device(self) -> str | None:
        """Our filesystem's device (major:minor), which every bind mount of it shares."""
        if self._device is None and self.mountpoint is not None:
            for entry in _mountinfo("/proc/self/mountinfo"):
                if entry[2] == self.mountpoint:
                    self._device = entry[1]
        return self._device

    def still_open(self, path: str, for_writing: bool = False) -> bool | None:
        """Whether any process still has `path` (below the mount point) open (`for_writing`: open to write,
        so a reader such as `tail -f` does not count); None when we cannot tell.

        A descriptor counts when its link ends with the file's path inside our filesystem and it lives
        on our filesystem: its mount (fdinfo's mnt_id, looked up in that process's mountinfo) has our
        device. So a file opened through a bind mount, in a container, or under a mount point detached
        with `umount -l` (where the link is the path inside the filesystem) is seen as well."""
        if self.mountpoint is None:
            return None
        rel = "/" + path.strip("/")
        device = self.device()
        me = os.getpid()
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return None
        for pid in pids:
            if pid == me:
                continue
            fd_dir = f"/proc/{pid}/fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            mounts: dict[str, tuple[str, str, str]] | None = None
            for fd in fds:
                try:
                    link = os.readlink(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if not (link == rel or link.endswith(rel)):
                    continue
                if for_writing and not _writable(pid, fd):
                    continue
                if link == self.mountpoint + rel:
                    return True
                if mounts is None:
                    mounts = {m[0]: m for m in _mountinfo(f"/proc/{pid}/mountinfo")}
                mount = mounts.get(_mnt_id(pid, fd) or "")
                if mount is None:
                    if link == rel:  # a detached mount (umount -l): the link is the path inside it
                        return True
                    continue
                mount_id, mount_device, mountpoint, root = mount
                inside = link[len(mountpoint.rstrip("/")):] if link.startswith(mountpoint.rstrip("/") + "/") else None
                if mount_device == device and inside is not None and \
                        (root.rstrip("/") + inside == rel or inside == rel):
                    return True
        return False

    @staticmethod
    def same_process(a: int | None, b: int | None) -> bool:
        """Whether two thread ids belong to one process (FUSE reports the calling thread)."""
        if not a or not b:
            return a == b
        return tgid(a) == tgid(b)

    @staticmethod
    def dying(pid: int | None) -> str | None:
        """How the process closing a file ends, when it is exiting abnormally; None while it lives or exits 0.

        A killed `cp` closes its files on the way out, which would otherwise complete a truncated upload.
        /proc/PID/stat shows PF_EXITING and the exit code (field 52) while the files are closed.
        """
        if not pid:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            flags, exit_code = int(fields[6]), int(fields[49])
        except (OSError, IndexError, ValueError):
            return None
        if not flags & PF_EXITING:
            return None
        if exit_code & 0x7F:
            return f"was killed by signal {exit_code & 0x7F}"
        if exit_code >> 8:
            return f"exited with status {exit_code >> 8}"
        return None


def _writable(pid: int, fd: str) -> bool:
    """Whether the descriptor was opened to write (fdinfo's octal flags); True when that cannot be read."""
    flags = _fdinfo(pid, fd, "flags:")
    return flags is None or int(flags, 8) & os.O_ACCMODE != os.O_RDONLY


def _mnt_id(pid: int, fd: str) -> str | None:
    return _fdinfo(pid, fd, "mnt_id:")


def _fdinfo(pid: int, fd: str, field: str) -> str | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith(field):
                    return line.split()[1]
    except (OSError, IndexError):
        pass
    return None


def _mountinfo(path: str) -> list[tuple[str, str, str, str]]:
    """(mount id, device, mount point, root) of each mount a process sees."""
    return [(str(m.mount_id), m.device, m.mountpoint, m.root) for m in mount_table(path)]


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    device: str  # "major:minor": the bdi of a FUSE mount, /sys/class/bdi/<device>
    mountpoint: str
    fstype: str
    source: str
    root: str = "/"  # the directory of the filesystem mounted here (a bind mount of a subdirectory)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040, \\011, \\012, \\134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_table(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """The one parser of /proc/self/mountinfo in bpfs."""
    entries = []
    try:
        with open(mountinfo, "rb") as table:
            lines = table.read().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
            entries.append(MountEntry(int(fields[0]), fields[2], _unescape(fields[4]), fields[dash + 1],
                                      _unescape(fields[dash + 2]), _unescape(fields[3])))
        except (ValueError, IndexError):
            continue
    return entries



def tgid(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return pid
