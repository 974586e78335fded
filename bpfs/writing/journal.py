"""A small on-disk journal of uploads in flight, so a daemon that dies (SIGKILL, power loss) leaves
nothing half-done for long: the next mount of the same account cleans up after it.

Each daemon appends JSON lines to its own file, `<state dir>/uploads/<account>/<pid>-<start>.jsonl`,
and holds an exclusive `flock` on it while it lives. A file whose lock can be taken belongs to a
daemon that is gone. Recovery replays it: an upload that was started and never ended is looked up;
unless the server has it `completed`, its multipart upload is aborted, its object deleted and its
record marked `failed`; a sample the dead daemon created that has no completed upload is deleted.
A recovery that cannot finish (the API is down) leaves the file for the next mount.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bpfs.errors import BpfsError, NotFound

log = logging.getLogger("bpfs.journal")


def default_directory() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "bpfs" / "uploads"


def account_key(base_url: str, username: str) -> str:
    """One account whichever dialect reaches it: the host and the user, not the API version's prefix."""
    parts = urlsplit(base_url)
    return hashlib.sha256(f"{parts.hostname}:{parts.port}\0{username}".encode()).hexdigest()[:16]


@dataclass
class Leftovers:
    """What a journal says was in flight when its daemon stopped."""

    uploads: dict[int, dict] = field(default_factory=dict)  # upload id -> {sample, bucket, key, mpu}
    samples: set[int] = field(default_factory=set)  # created, and not yet known to keep a file

    def apply(self, event: dict) -> None:
        kind = event.get("e")
        if kind == "sample":
            self.samples.add(int(event["sample"]))
        elif kind == "settled":
            self.samples.discard(int(event["sample"]))
        elif kind == "upload":
            self.uploads[int(event["upload"])] = {k: event.get(k) for k in ("sample", "bucket", "key")}
        elif kind == "mpu" and int(event["upload"]) in self.uploads:
            self.uploads[int(event["upload"])]["mpu"] = event.get("mpu")
        elif kind == "ended":
            self.uploads.pop(int(event["upload"]), None)

    @property
    def empty(self) -> bool:
        return not self.uploads and not self.samples

    @classmethod
    def read(cls, path: Path) -> Leftovers:
        state = cls()
        with open(path, "rb") as lines:
            for line in lines:
                try:
                    state.apply(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by the crash: what it would say is redone by recovery anyway
        return state


class UploadJournal:
    """This daemon's journal. Every event is one fsync'ed line; the file is emptied whenever nothing
    is in flight, so it stays a few lines long."""

    def __init__(self, directory: Path, account: str) -> None:
        self.directory = directory / account
        self.path = self.directory / f"{os.getpid()}-{time.time_ns()}.jsonl"
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._state = Leftovers()

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd = fd
        return self._fd

    def _record(self, event: dict) -> None:
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                fd = self._open()
                self._state.apply(event)
                if self._state.empty:
                    os.ftruncate(fd, 0)  # nothing in flight: nothing to recover
                else:
                    os.write(fd, line)
                os.fsync(fd)
            except OSError as exc:  # a full or read-only disk must not fail the upload itself
                log.warning("upload journal %s: %s (a crash now would leave this upload to clean by hand)",
                            self.path, exc.strerror or exc)

    # -- events ------------------------------------------------------------------------------------
    def sample_created(self, sample_id: int) -> None:
        self._record({"e": "sample", "sample": sample_id})

    def sample_settled(self, sample_id: int) -> None:
        """The sample keeps a completed file, or was deleted again: nothing to undo."""
        self._record({"e": "settled", "sample": sample_id})

    def upload_started(self, upload_id: int, sample_id: int, bucket: str | None, key: str) -> None:
        self._record({"e": "upload", "upload": upload_id, "sample": sample_id, "bucket": bucket, "key": key})

    def multipart_started(self, upload_id: int, mpu_id: str) -> None:
        self._record({"e": "mpu", "upload": upload_id, "mpu": mpu_id})

    def upload_ended(self, upload_id: int) -> None:
        """Completed, or failed and cleaned up."""
        self._record({"e": "ended", "upload": upload_id})

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if self._state.empty:
                    with contextlib.suppress(OSError):
                        self.path.unlink()

    # -- recovery ----------------------------------------------------------------------------------
    def recover(self, api, objects) -> None:  # noqa: ANN001 - ApiClient, ObjectClient (no import cycle)
        """Clean up after every dead daemon of this account (journal files whose lock is free)."""
        try:
            candidates = sorted(self.directory.glob("*.jsonl"))
        except OSError:
            return
        for path in candidates:
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live daemon's journal
                leftovers = Leftovers.read(path)
                if not leftovers.empty:
                    _undo(leftovers, api, objects, path)
                path.unlink()
            except BpfsError as exc:
                log.error("could not clean up after a stopped mount (%s): %s; the next mount tries again",
                          path.name, exc)
            except OSError as exc:
                log.error("upload journal %s: %s", path, exc.strerror or exc)
            finally:
                os.close(fd)


def _undo(leftovers: Leftovers, api, objects, path: Path) -> None:  # noqa: ANN001
    failed = deleted = 0
    for upload_id, upload in sorted(leftovers.uploads.items()):
        try:
            record = api.get_json(f"uploads/{upload_id}")
        except NotFound:
            record = None
        if isinstance(record, dict) and record.get("status") == "completed":
            continue  # it was recorded complete just before the daemon stopped: it is whole
        bucket, key = upload.get("bucket"), upload.get("key")
        if upload.get("mpu") and key:
            with contextlib.suppress(NotFound):
                objects.abort_multipart_upload(bucket, key, upload["mpu"])
        if key:
            with contextlib.suppress(NotFound):
                objects.delete_object(bucket, key)
        if record is not None:
            body = {"status": "failed", "filesize": 0}
            body.update(api.dialect.upload_end_extra(key or ""))
            api.update("uploads", upload_id, body)
        failed += 1
        log.warning("upload %d (%s) was in flight when an earlier mount stopped: aborted and marked failed",
                    upload_id, key)
    for sample_id in sorted(leftovers.samples):
        try:
            sample = api.get_json(f"samples/{sample_id}")
        except NotFound:
            continue
        uploads = sample.get("uploads") if isinstance(sample, dict) else None
        if any(isinstance(u, dict) and u.get("status") == "completed" for u in uploads or ()):
            continue
        api.delete("samples", sample_id)
        deleted += 1
        log.warning("sample %d was created by an earlier mount that stopped before any of its files was "
                    "complete: deleted", sample_id)
    log.info("recovered after a stopped mount (%s): %d upload(s) marked failed, %d empty sample(s) deleted",
             path.name, failed, deleted)
