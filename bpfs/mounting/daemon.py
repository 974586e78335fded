"""Going to the background the safe way: fork first, before any thread or connection exists.

The child does all the work (API check, mount) and reports over a pipe; the parent waits
for "ready" or an error line, so `bpfs mount` exits 0 only once the mount is live.
"""

from __future__ import annotations

import os
import sys


class Readiness:
    """The child's end of the pipe: tell the waiting parent once, then forget it."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def _send(self, line: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (line.replace("\r", "\\r").replace("\n", "\\n") + "\n").encode())
        finally:
            os.close(self.fd)
            self.fd = None

    def ready(self) -> None:
        self._send("ready")

    def failed(self, message: str) -> None:
        self._send("error " + message)


def daemonize() -> Readiness:
    """Fork; the parent waits for the child's verdict and exits with it. Returns in the child only."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        chunks = []
        while True:
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        line = b"".join(chunks).decode(errors="replace").strip()
        if line == "ready":
            os._exit(0)
        message = line[len("error "):] if line.startswith("error ") else "the daemon exited before the mount was live"
        print(f"bpfs: {message}", file=sys.stderr)
        os._exit(1)
    os.close(read_fd)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.chdir("/")
    return Readiness(write_fd)
