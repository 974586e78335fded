"""What bpfs learns about the processes using the mount, from /proc: who still holds a file open, and
whether the process closing one is dying.

A file in the drop box is finished at its *last* close: `{ cat a; cat b; } > f` and a `subprocess`
writing to its parent's file close the file several times, and only the last close ends it. FUSE
says who closes (flush) but not whether others still hold the file, so bpfs looks: at flush time
the closing descriptor is already gone from /proc/PID/fd, and any other descriptor on the file,
in any process, means this is not the last close. Only `readlink` is used: it never enters the
mount, so the daemon never calls into itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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

    def still_open(self, path: str) -> bool | None:
        """Whether any process still has `path` (below the mount point) open; None when we cannot tell."""
        if self.mountpoint is None:
            return None
        target = self.mountpoint + "/" + path.strip("/")
        for _pid, link in open_files(target, skip=os.getpid()):
            if link == target:
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


def tgid(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return pid
