"""The drop box `samples/new/`: creating samples by copying files in.

A directory under `samples/new/` is a *draft*: a sample being created, named after the
directory. A file created straight in `samples/new/` is a draft of its own (a single-end
sample named after the file). The sample record is created lazily, with the first data file,
so an empty `mkdir` leaves nothing on the server. Each data file follows the official
client's flow (basepair-api.md §8): POST the upload record (`in_progress`) when the file is
created, stream the bytes to S3 while they are written (`bpfs.upload`), and at the *last*
close of the file finish the object and PUT the record `completed`. The last close is the one
after which no process holds the file (`bpfs.processes`): `{ cat a; cat b; } > f` and a child
writing to its parent's file finish once, whole; `cp`'s own close is the last, so `cp` sees
any failure. `fsync` finishes nothing. Any failure of any step fails that file: the multipart
upload is aborted, the record marked `failed`, and the sample deleted again if none of its
files completed. `rm` of an uploaded file is the way back from a partial copy: it deletes the
upload's record and object while the sample has no analysis. A journal (`bpfs.journal`) lets
the next mount clean up after a daemon that died mid-upload. The records themselves (names,
sample.json, request bodies) are `bpfs.samples`.

Locks: `SampleWriter._lock` guards the registry of drafts, `Draft.lock` a draft's state,
`Draft.create_lock` serialises creating/deleting/renaming its sample record, `DraftFile.lock`
one file. Order when nested: file → create_lock → registry → draft lock. None is global across
the mount while a request is on the wire, except a draft's create_lock (that draft only).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass

from bpfs.errors import AccessDenied, BpfsError, NotFound, RemoteError
from bpfs.nodes import Entry, Handle, Subtree, directory
from bpfs.processes import Processes, tgid
from bpfs.remote.api import ApiClient
from bpfs.remote.s3 import ObjectClient
from bpfs.stats import Stats
from bpfs.tree.catalog import Catalog
from bpfs.writing.journal import UploadJournal
from bpfs.writing.samples import (
    META_NAME,
    SampleRecords,
    SampleSettings,
    check_name,
    is_read2,
    logged_error,
    sample_name,
    upload_name,
)
from bpfs.writing.upload import ObjectStream, UploadConfig, UploadPool

log = logging.getLogger("bpfs.writer")

META_LIMIT = 1 << 20  # sample.json is kept in memory while it is written
# Finished drafts stay listed so `ls samples/new/` shows recent work, but a mount taking uploads for
# weeks must not grow without bound: past this many drafts, those idle this long with nothing in
# flight are forgotten (a few KB each; their samples live on under samples/<id>/).
KEEP_DRAFTS = 1024
DRAFT_IDLE_SECONDS = 3600.0
# A hole (a truncate that grows a file, a write past its end) is uploaded as zeros, ZERO_CHUNK at a time.
# One larger than MAX_HOLE is refused: a FASTQ has none, and a stray offset must not hold a write for hours.
ZERO_CHUNK = 1 << 20
MAX_HOLE = 256 << 20


@dataclass(frozen=True)
class DraftEntry(Entry):
    """A file in the drop box: writable (0644) while it is written, read-only once uploaded."""

    writing: bool = False

    @property
    def mode(self) -> int:
        return stat.S_IFREG | (0o644 if self.writing else 0o444)


class DraftFile:
    def __init__(self, draft: Draft, name: str) -> None:
        self.draft, self.name = draft, name
        self.basename = upload_name(name)
        self.lock = threading.Lock()
        self.state = "starting"  # starting → writing → done | failed
        self.error: BpfsError | None = None
        self.stream: ObjectStream | None = None
        self.key = ""
        self.upload_id = 0
        self.size = 0
        self.started = time.monotonic()
        self.mtime = time.time()
        self.kept_mtime: float | None = None  # set by utimens (cp -p, rsync -a): shown, so a re-run rsync skips it
        self.opener: int | None = None  # the thread that created it (FUSE reports threads)
        self.writers: set[int] = set()  # the threads that wrote to it: one that dies mid-file fails it
        self.broken: BpfsError | None = None  # a write failed or was out of order: the file can only fail now
        self.removed = False  # rm took it back: a reader that still has it open gets ESTALE, not a missing object

    @property
    def path(self) -> str:
        return self.draft.path(self.name)

    @property
    def current_size(self) -> int:
        return self.stream.size if self.state in ("starting", "writing") and self.stream else self.size

    def entry(self) -> DraftEntry:
        mtime = self.kept_mtime if self.kept_mtime is not None else self.mtime
        return DraftEntry(False, size=self.current_size, mtime=mtime, writing=self.state != "done")


class Draft:
    def __init__(self, entry_name: str, is_dir: bool) -> None:
        self.entry_name, self.is_dir = entry_name, is_dir
        self.name = entry_name if is_dir else sample_name(upload_name(entry_name))
        self.lock = threading.Lock()
        self.create_lock = threading.Lock()
        self.sample_id: int | None = None
        self.files: dict[str, DraftFile] = {}
        self.meta_text: bytes | None = None  # sample.json as written (listed while not None)
        self.meta_mtime: float | None = None  # the time cp -p or rsync -a gave it (a re-run rsync skips it)
        self.meta_alias: str | None = None  # rsync's .sample.json.XXXXXX it is being written under
        self.settings: dict = {}  # sample.json, validated
        self.meta_error: str | None = None  # an invalid sample.json blocks data files until fixed
        self.next_order = 0
        self.active = 0  # uploads started and not finished
        self.completed = 0  # uploads completed into the current sample
        self.mtime = time.time()

    def path(self, name: str) -> str:
        """The mount path of one of its files (a single-file draft is its one file)."""
        return f"samples/new/{self.entry_name}/{name}" if self.is_dir else f"samples/new/{name}"

    def paired(self, basename: str) -> bool:
        """Read 2 of a paired-end sample: only a directory can hold both reads."""
        return self.is_dir and is_read2(basename)

    def single_file(self) -> DraftFile | None:
        with self.lock:
            return next(iter(self.files.values()), None)

    def listing(self) -> dict[str, Entry]:
        with self.lock:
            out: dict[str, Entry] = {name: f.entry() for name, f in self.files.items()}
            if self.meta_text is not None:
                out[META_NAME] = DraftEntry(False, size=len(self.meta_text), mtime=self.meta_mtime or self.mtime,
                                            writing=True)
        return out

    def is_meta(self, name: str) -> bool:
        """sample.json, or the one rsync temporary name it is being written under now (any other is free:
        a second `rsync -a` creates its temporary file exclusively)."""
        return name == META_NAME or (name == self.meta_alias and upload_name(name) == META_NAME)


class DataHandle(Handle):
    """A data file being written: bytes stream to S3; the last close finishes the upload."""

    direct_io = True  # writes stream straight through: no page cache to keep coherent

    def __init__(self, box: SampleDropBox, file: DraftFile) -> None:
        super().__init__(file.path)
        self.box, self.file = box, file

    def write(self, data: bytes, offset: int, caller: int | None = None) -> int:
        return self.box.write_data(self.file, data, offset, caller)

    def read(self, size: int, offset: int) -> bytes:
        raise BpfsError(f"{self.path}: a file being uploaded cannot be read", errno.EBADF)

    def flush(self, caller: int | None) -> None:
        self.box.close_data(self.file, caller)

    def fsync(self) -> None:
        self.box.sync_data(self.file)

    def release(self) -> None:
        self.box.release_data(self.file)


class UploadedHandle(Handle):
    """An uploaded file, read back from S3."""

    def __init__(self, box: SampleDropBox, file: DraftFile) -> None:
        super().__init__(file.path)
        self.box, self.file = box, file

    def read(self, size: int, offset: int) -> bytes:
        if self.file.removed:
            raise BpfsError(f"{self.path}: removed (rm) while open; its upload and object are deleted",
                            errno.ESTALE)
        end = min(offset + size, self.file.size)
        return self.box.objects.get_range(self.box.bucket, self.file.key, offset, end) if end > offset else b""


class MetaHandle(Handle):
    """sample.json: held in memory while written, applied (validated, sent) at close."""

    direct_io = True

    def __init__(self, box: SampleDropBox, draft: Draft, text: bytes, writable: bool) -> None:
        super().__init__("/" + draft.path(META_NAME))
        self.box, self.draft = box, draft
        self.buffer = bytearray(text)
        self.writable = writable
        self.dirty = False
        self.settled = False
        self.result: BpfsError | None = None

    def read(self, size: int, offset: int) -> bytes:
        return bytes(self.buffer[offset:offset + size])

    def write(self, data: bytes, offset: int, caller: int | None = None) -> int:
        if not self.writable:
            return super().write(data, offset, caller)
        return self.box.write_meta(self, data, offset)

    def flush(self, caller: int | None) -> None:
        if self.result is not None:
            raise self.result
        if self.writable and self.dirty:
            try:
                self.box.apply_meta(self)
            except BpfsError as exc:
                self.result = exc
                raise

    def release(self) -> None:
        if self.writable and not self.settled:
            try:
                self.box.apply_meta(self)
            except BpfsError as exc:
                log.error("%s: %s", self.path, exc)


class SampleDropBox(Subtree):
    """Every path below `samples/new/`."""

    writable_hint = "samples/new/ takes sample directories and the files in them"

    def __init__(self, api: ApiClient, objects: ObjectClient, catalog: Catalog, stats: Stats,
                 settings: SampleSettings, journal: UploadJournal, processes: Processes,
                 uploads: UploadConfig | None = None, ro: bool = False, owner: tuple[int, int] = (-1, -1)) -> None:
        super().__init__(ro)
        self.api, self.objects, self.stats = api, objects, stats
        self.journal, self.processes = journal, processes
        self.owner = owner  # (uid, gid) the mount shows for every file
        self.records = SampleRecords(api, catalog, settings)
        self.pool = UploadPool(objects, stats, uploads)
        self.bucket = objects.default_bucket
        self._lock = threading.Lock()
        self._drafts: dict[str, Draft] = {}
        self.started = time.time()
        stats.section("uploads", self.progress)

    def progress(self) -> list[dict]:
        """Each upload in flight: how far the writer got, what S3 has taken, and at what rate."""
        with self._lock:
            drafts = list(self._drafts.values())
        out = []
        for draft in drafts:
            with draft.lock:
                files = [f for f in draft.files.values() if f.state == "writing" and f.stream is not None]
            for f in files:
                seconds = max(time.monotonic() - f.started, 1e-6)
                out.append({"path": f.path, "bytes_written": f.stream.size, "bytes_uploaded": f.stream.uploaded,
                            "seconds": round(seconds, 1), "bytes_per_second": int(f.stream.uploaded / seconds)})
        return out

    # -- paths and lookups -------------------------------------------------------------------------
    @staticmethod
    def _split(path: str) -> list[str] | None:
        """The parts below samples/new/ ([] for samples/new itself); None for any other path."""
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != "samples" or parts[1] != "new":
            return None
        return parts[2:]

    def _lookup(self, name: str) -> Draft | None:
        with self._lock:
            return self._drafts.get(name)

    def _draft(self, name: str) -> Draft:
        draft = self._lookup(name)
        if draft is None:
            raise NotFound(f"samples/new/{name}: no such file or directory")
        return draft

    def _draft_dir(self, name: str) -> Draft:
        draft = self._draft(name)
        if not draft.is_dir:
            raise BpfsError(f"samples/new/{name}: not a directory", errno.ENOTDIR)
        return draft

    def _resolve(self, path: str) -> tuple[Draft, DraftFile | None, bool]:
        """(draft, file, is_meta) for a file path below samples/new/."""
        parts = self._split(path) or []
        if len(parts) == 1:
            draft = self._draft(parts[0])
            if draft.is_dir:
                raise BpfsError(f"{path}: is a directory", errno.EISDIR)
            found = draft.single_file()
            if found is None:
                raise NotFound(f"{path}: no such file")
            return draft, found, False
        if len(parts) != 2:
            raise NotFound(f"{path}: no such file")
        draft = self._draft_dir(parts[0])
        with draft.lock:
            if draft.is_meta(parts[1]) and draft.meta_text is not None:
                return draft, None, True
            found = draft.files.get(parts[1])
        if found is None:
            raise NotFound(f"{path}: no such file")
        return draft, found, False

    def getattr(self, path: str) -> Entry:
        parts = self._split(path)
        if parts == []:  # samples/new itself
            return directory(self.started, writable=True)
        if parts is None or len(parts) > 2:
            raise NotFound(f"{path}: no such file or directory")
        draft = self._lookup(parts[0])
        found: Entry | None = None
        if draft is not None and len(parts) == 1:
            if draft.is_dir:
                return directory(draft.mtime, writable=True)
            single = draft.single_file()
            found = single.entry() if single is not None else None
        elif draft is not None and draft.is_dir:
            found = draft.listing().get(META_NAME if draft.is_meta(parts[1]) else parts[1])
        if found is None:
            raise NotFound(f"{path}: no such file or directory")
        return found

    def readdir(self, path: str) -> dict[str, Entry]:
        parts = self._split(path)
        if parts == []:
            with self._lock:
                drafts = list(self._drafts.values())
            out: dict[str, Entry] = {}
            for draft in drafts:
                try:
                    out[draft.entry_name] = self.getattr(f"/samples/new/{draft.entry_name}")
                except NotFound:
                    continue  # a single-file draft between its creation and its file
            return out
        if parts is not None and len(parts) == 1:
            draft = self._lookup(parts[0])
            if draft is not None and draft.is_dir:
                return draft.listing()
        raise NotFound(f"{path}: no such directory")

    def _writing(self, path: str, what: str) -> None:
        if self.ro:
            raise self.refuse(path, what)

    # -- directories -------------------------------------------------------------------------------
    def mkdir(self, path: str) -> None:
        self._writing(path, "mkdir")
        parts = self._split(path) or []
        if len(parts) != 1:
            raise AccessDenied(f"{path}: a sample directory holds files only, no subdirectories")
        check_name(path, parts[0])
        with self._lock:
            if parts[0] in self._drafts:
                raise BpfsError(f"{path}: exists", errno.EEXIST)
            self._prune()
            self._drafts[parts[0]] = Draft(parts[0], is_dir=True)

    def rmdir(self, path: str) -> None:
        self._writing(path, "rmdir")
        parts = self._split(path) or []
        if len(parts) != 1:
            raise self.refuse(path, "rmdir") if not parts else NotFound(f"{path}: no such directory")
        draft = self._draft_dir(parts[0])
        with self._lock, draft.lock:
            if draft.active:
                raise BpfsError(f"{path}: files are being uploaded into it", errno.EBUSY)
            if draft.files or draft.meta_text is not None:
                raise BpfsError(f"{path}: not empty", errno.ENOTEMPTY)
            if self._drafts.get(parts[0]) is draft:
                del self._drafts[parts[0]]

    # -- files: create, open -----------------------------------------------------------------------
    def create(self, path: str, mode: int, caller: int | None) -> Handle:
        self._writing(path, "create")
        parts = self._split(path) or []
        if not parts or len(parts) > 2:
            raise AccessDenied(f"{path}: a sample directory holds files only, no subdirectories")
        check_name(path, upload_name(parts[-1]))
        if len(parts) == 1:
            check_name(path, sample_name(upload_name(parts[0])))
        if len(parts) == 2:
            draft = self._draft_dir(parts[0])
            if upload_name(parts[1]) == META_NAME:  # sample.json, or rsync's .sample.json.XXXXXX for it
                draft.meta_alias = parts[1] if parts[1] != META_NAME else None
                return self._open_meta(draft, truncate=True)
            return self._create_file(draft, parts[1], caller)
        name = parts[0]
        if name == META_NAME:
            raise logged_error(f"{path}: sample.json belongs in a sample directory "
                               "(samples/new/<name>/sample.json)", errno.EINVAL)
        with self._lock:
            if name in self._drafts:
                raise BpfsError(f"{path}: exists", errno.EEXIST)
            self._prune()
            draft = self._drafts[name] = Draft(name, is_dir=False)
        try:
            return self._create_file(draft, name, caller)
        except BaseException:
            self._forget_if_empty(draft)
            raise

    def open(self, path: str, flags: int, caller: int | None) -> Handle:
        parts = self._split(path)
        if not parts or (len(parts) == 1 and self._lookup(parts[0]) is not None and self._lookup(parts[0]).is_dir):
            raise BpfsError(f"{path}: is a directory", errno.EISDIR)
        draft, found, is_meta = self._resolve(path)
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing:
            self._writing(path, "open for writing")
        if is_meta:
            return self._open_meta(draft, truncate=bool(flags & os.O_TRUNC)) if writing else \
                MetaHandle(self, draft, draft.meta_text or b"", writable=False)
        assert found is not None
        if found.state != "done":
            raise BpfsError(f"{path}: is being uploaded", errno.EBUSY)
        if writing:
            raise logged_error(f"{path}: already uploaded; files of a sample cannot be changed", errno.EPERM)
        return UploadedHandle(self, found)

    def _create_file(self, draft: Draft, name: str, caller: int | None = None) -> Handle:
        """Register the file, create the sample if it is the first, and POST its upload record."""
        f = DraftFile(draft, name)
        f.opener = caller
        path = f.path
        with draft.lock:
            if name in draft.files:
                raise BpfsError(f"{path}: exists", errno.EEXIST)
            if any(other.basename == f.basename for other in draft.files.values()):
                raise logged_error(f"{path}: {f.basename} is already in this sample", errno.EPERM)
            if draft.meta_error:
                raise logged_error(f"{path}: refused: {draft.meta_error}; fix or remove sample.json first",
                                   errno.EINVAL)
            draft.files[name] = f
            draft.active += 1
        self.stats.add("uploads_in_flight")
        try:
            with draft.create_lock:
                sample_id = self._ensure_sample(draft)
                with draft.lock:
                    order = draft.next_order
                    draft.next_order += 1
                f.key = self.records.upload_key(sample_id, f.basename)
                paired = draft.paired(f.basename)
                f.upload_id = self.records.start_upload(sample_id, f.key, order, paired)
                self.journal.upload_started(f.upload_id, sample_id, self.bucket, f.key)
        except BaseException:
            self._drop_failed(f)
            raise
        upload_id = f.upload_id
        f.stream = ObjectStream(self.pool, self.bucket, f.key,
                                on_multipart=lambda mpu: self.journal.multipart_started(upload_id, mpu))
        f.state = "writing"
        log.info("uploading %s to s3://%s/%s (sample %d, upload %d, order %d%s)", path, self.bucket, f.key,
                 sample_id, f.upload_id, order, ", read 2" if paired else "")
        return DataHandle(self, f)

    # -- data --------------------------------------------------------------------------------------
    def write_data(self, f: DraftFile, data: bytes, offset: int, caller: int | None = None) -> int:
        with f.lock:
            if caller:
                f.writers.add(caller)
            if f.state != "writing":
                raise BpfsError(f"{f.path}: the upload was already finished", errno.EBADF)
            if f.broken is not None:
                raise BpfsError(f"{f.path}: an earlier write failed; the upload will fail at close",
                                f.broken.errno)
            if offset != f.stream.size and not f.stream.size < offset <= f.stream.size + MAX_HOLE:
                f.broken = logged_error(f"{f.path}: write at offset {offset} while the file has "
                                        f"{f.stream.size} bytes: bpfs accepts sequential writes only (cp, cat, "
                                        "rsync write that way); the upload will fail at close", errno.ESPIPE)
                raise f.broken
            self._zeros(f, offset)  # a hole skipped (cp of a sparse file): zeros, as S3 holds no holes
            self._append(f, data)
            f.mtime = time.time()
        return len(data)

    def resize_data(self, f: DraftFile, length: int) -> None:
        """(f)truncate of a data file. Growing a file being written (up to MAX_HOLE) appends zeros, as a
        sequential writer would (cp --sparse ends a file with a hole that way). Anything else cannot be
        uploaded: a file being written is marked broken, so its close fails and nothing is recorded; a caller
        that ignores the failed truncate (cp only warns after writing) must not get a short file recorded."""
        with f.lock:
            size = f.current_size
            if size == length:
                return  # O_TRUNC on a new file, or cp setting the size it already has
            if f.state == "writing" and f.broken is None and size < length <= size + MAX_HOLE:
                self._zeros(f, length)
                f.mtime = time.time()
                return
            error = logged_error(f"{f.path}: cannot change the size of a file being or already uploaded (from "
                                 f"{size} to {length}): bpfs accepts sequential writes only", errno.EPERM)
            if f.state == "writing" and f.broken is None:
                f.broken = BpfsError(f"{error}; the upload will fail at close", errno.EIO)
            raise error

    def _zeros(self, f: DraftFile, until: int) -> None:
        if f.stream.size < until:
            zeros = memoryview(bytes(min(until - f.stream.size, ZERO_CHUNK)))
            while f.stream.size < until:
                self._append(f, zeros[:until - f.stream.size])

    def _append(self, f: DraftFile, data: bytes | memoryview) -> None:
        try:
            f.stream.append(data)
        except BpfsError as exc:
            f.broken = RemoteError(f"{f.path}: upload failed: {exc}")
            raise f.broken from None

    def close_data(self, f: DraftFile, caller: int | None) -> None:
        """A close(). The last close of a data file finishes its upload, and reports the outcome to the
        closer (cp checks it); an earlier one (a child's, or a dup'ed descriptor's) finishes nothing.
        A last close by a process that is dying (Ctrl-C on cp, a crash) aborts: its file is incomplete."""
        with f.lock:
            if f.state != "writing":
                if f.state == "failed" and f.error is not None:
                    raise f.error
                return
            last = self._last_close(f, caller)
            death = self.processes.dying(caller)
            # a process that wrote to the file and is dying (killed, or exiting with an error) left it cut
            # short, even when another holder (the shell of `{ a; b; } > f`) closes it later
            if death is not None and f.broken is None and (last or self._wrote(f, caller)):
                f.broken = BpfsError(f"{f.path}: the writing process (pid {caller}) {death} before "
                                     "closing the file; the upload is aborted, not recorded as complete", errno.EIO)
            if last:
                self._finish(f)

    def _wrote(self, f: DraftFile, caller: int | None) -> bool:
        if not caller:
            return False
        mine = tgid(caller)
        return any(tgid(writer) == mine for writer in f.writers)

    def _last_close(self, f: DraftFile, caller: int | None) -> bool:
        still_open = self.processes.still_open(f.path)
        if still_open is not None:
            return not still_open
        # no /proc view of the mount (in-process use): the opener's own close with data is the last, as
        # mountpoint-s3 decides; anything else waits for release
        return f.stream.size > 0 and self.processes.same_process(caller, f.opener)

    def sync_data(self, f: DraftFile) -> None:
        """fsync(): every full part is in S3 (or the failure is reported); nothing is finished."""
        with f.lock:
            if f.state == "failed" and f.error is not None:
                raise f.error
            if f.state == "writing":
                try:
                    f.stream.sync()
                except BpfsError as exc:
                    f.broken = f.broken or RemoteError(f"{f.path}: upload failed: {exc}")
                    raise f.broken from None

    def release_data(self, f: DraftFile) -> None:
        with f.lock:
            if f.state == "writing":  # no close was seen as the last (two closed at once, or no /proc view)
                try:
                    self._finish(f)
                except BpfsError as exc:
                    log.error("%s", exc)

    # -- the upload lifecycle ----------------------------------------------------------------------
    def _finish(self, f: DraftFile) -> None:
        """Complete (first call) or repeat the outcome (later calls). Holds f.lock."""
        if f.state == "done":
            return
        if f.state == "failed":
            raise f.error
        path = f.path
        made = False
        try:
            if f.broken is not None:
                raise f.broken
            size = f.stream.finish()
            made = True
            self.records.end_upload(f.upload_id, f.key, "completed", size, time.monotonic() - f.started)
        except Exception as exc:  # a bug too must fail the file, never leave it half-done
            if not isinstance(exc, BpfsError):
                log.exception("%s: completing the upload", path)
            error = RemoteError(f"{path}: upload failed, nothing recorded: {exc}")
            self._fail(f, error, made)
            raise error from None
        f.size, f.state, f.mtime = size, "done", time.time()
        self.journal.upload_ended(f.upload_id)
        draft = f.draft
        with draft.lock:
            draft.active -= 1
            draft.completed += 1
            first = draft.completed == 1
        if first and draft.sample_id is not None:
            self.journal.sample_settled(draft.sample_id)
        self.stats.add("uploads_in_flight", -1)
        self.stats.add("uploads_completed")
        log.info("uploaded %s (%d bytes) as s3://%s/%s", path, size, self.bucket, f.key)

    def _fail(self, f: DraftFile, error: BpfsError, made: bool = False) -> None:
        """Abort the object, mark the record failed, forget the file; delete a sample left with no file.

        When the object was made but its record could not be completed, the record's state is unknown (the
        server may have applied a PUT whose answer was lost): the object is deleted only once the record
        is marked failed; otherwise it stays, and the journal keeps the upload for the next mount to check."""
        log.error("%s", error)
        f.stream.abort()
        marked = False
        try:
            self.records.end_upload(f.upload_id, f.key, "failed", f.stream.size, time.monotonic() - f.started)
            marked = True
        except BpfsError as exc:
            log.error("could not mark upload %d failed: %s (the next mount checks it again)", f.upload_id, exc)
        if made and marked:  # the record says failed: the object is garbage
            try:
                self.objects.delete_object(self.bucket, f.key)
            except BpfsError as exc:
                log.error("could not delete s3://%s/%s: %s", self.bucket, f.key, exc)
        if marked:
            self.journal.upload_ended(f.upload_id)
        f.state, f.error = "failed", error
        self._drop_failed(f)

    def _drop_failed(self, f: DraftFile) -> None:
        """Forget a file whose upload failed (or never started), and settle its draft."""
        draft = f.draft
        with draft.lock:
            if draft.files.get(f.name) is f:
                del draft.files[f.name]
            draft.active -= 1
        self.stats.add("uploads_in_flight", -1)
        self.stats.add("uploads_failed")
        self._settle(draft)

    def _ensure_sample(self, draft: Draft) -> int:
        """The draft's sample id, creating the record on first use. Holds draft.create_lock."""
        if draft.sample_id is None:
            draft.sample_id = self.records.create_sample(draft.name, draft.settings)
            self.journal.sample_created(draft.sample_id)
        return draft.sample_id

    def _settle(self, draft: Draft) -> None:
        """After a failure: a sample none of whose files completed is deleted again."""
        with draft.create_lock:
            with draft.lock:
                doomed = draft.sample_id if not draft.active and not draft.completed else None
                if doomed is not None:
                    draft.sample_id, draft.next_order = None, 0
            if doomed is not None:
                try:
                    self.records.delete_sample(doomed)
                    self.journal.sample_settled(doomed)
                    log.info("deleted sample %d (%s): none of its files was uploaded", doomed, draft.name)
                except BpfsError as exc:
                    log.error("sample %d (%s) has no file but could not be deleted: %s", doomed, draft.name, exc)
        self._forget_if_empty(draft)

    def _prune(self, now: float | None = None) -> None:
        """Forget the oldest idle drafts beyond KEEP_DRAFTS. Holds the registry lock."""
        if len(self._drafts) < KEEP_DRAFTS:
            return
        now = time.time() if now is None else now
        idle = []
        for name, draft in self._drafts.items():
            with draft.lock:
                if draft.active or any(f.state in ("starting", "writing") for f in draft.files.values()):
                    continue
                last = max([draft.mtime, *(f.mtime for f in draft.files.values())])
            if now - last >= DRAFT_IDLE_SECONDS:
                idle.append((last, name))
        idle.sort()
        doomed = idle[:len(self._drafts) - KEEP_DRAFTS + 1]
        for _, name in doomed:
            del self._drafts[name]
        if doomed:
            log.debug("forgot %d idle drafts in samples/new/", len(doomed))

    def _forget_if_empty(self, draft: Draft) -> None:
        """A single-file draft lives as long as its file; a directory until rmdir."""
        if draft.is_dir:
            return
        with self._lock, draft.lock:
            if not draft.files and not draft.active and self._drafts.get(draft.entry_name) is draft:
                del self._drafts[draft.entry_name]

    # -- sample.json -------------------------------------------------------------------------------
    def _open_meta(self, draft: Draft, truncate: bool) -> MetaHandle:
        with draft.lock:
            start = b"" if truncate or draft.meta_text is None else draft.meta_text
            draft.meta_text = start
        return MetaHandle(self, draft, start, writable=True)

    def write_meta(self, handle: MetaHandle, data: bytes, offset: int) -> int:
        if offset + len(data) > META_LIMIT:
            raise logged_error(f"{handle.path}: sample.json is limited to {META_LIMIT} bytes", errno.EFBIG)
        buffer = handle.buffer
        if offset > len(buffer):
            buffer.extend(b"\0" * (offset - len(buffer)))
        buffer[offset:offset + len(data)] = data
        handle.dirty, handle.settled = True, False
        with handle.draft.lock:
            handle.draft.meta_text, handle.draft.meta_mtime = bytes(buffer), None
        return len(data)

    def apply_meta(self, handle: MetaHandle) -> None:
        """Validate sample.json; set the draft's settings, or update its sample if it exists already."""
        draft, text = handle.draft, bytes(handle.buffer)
        handle.settled, handle.dirty = True, False
        try:
            settings = self.records.parse_meta(text)
        except BpfsError as exc:
            with draft.lock:
                draft.meta_error = str(exc)
            raise
        with draft.create_lock:
            if draft.sample_id is not None:
                self.records.update_sample(draft.sample_id, settings)
            with draft.lock:
                draft.settings, draft.meta_error = settings, None

    # -- unlink, truncate, rename, delete ----------------------------------------------------------
    def unlink(self, path: str) -> None:
        """`rm` in the drop box. sample.json is forgotten; an uploaded file is deleted from the sample (its
        upload record and its object), the way back from a copy that broke off, while the sample has no
        analysis; a sample left with no file is deleted again, as after a failed upload."""
        self._writing(path, "unlink")
        draft, found, is_meta = self._resolve(path)
        if is_meta:
            with draft.lock:
                draft.meta_text, draft.meta_error = None, None
                if draft.sample_id is None:
                    draft.settings = {}
            return
        with found.lock:
            if found.state in ("starting", "writing"):
                raise BpfsError(f"{path}: is being uploaded", errno.EBUSY)
            if found.state == "done":
                found.removed = True
                self.records.remove_upload(draft.sample_id, found.upload_id, found.key, path)
                self._forget_object(found.key)
                log.info("removed %s: upload %d and s3://%s/%s deleted", path, found.upload_id, self.bucket,
                         found.key)
                with draft.lock:
                    draft.completed -= 1
                    emptied = draft.completed == 0 and draft.sample_id is not None
                if emptied:  # no complete file left: a crash now must not leave the sample behind
                    self.journal.sample_created(draft.sample_id)
            with draft.lock:
                if draft.files.get(found.name) is found:
                    del draft.files[found.name]
        self._settle(draft)

    def _forget_object(self, key: str) -> None:
        try:
            self.objects.delete_object(self.bucket, key)
        except BpfsError as exc:
            log.error("the upload record is gone, but s3://%s/%s stays: %s", self.bucket, key, exc)

    def utimens(self, path: str, mtime: float | None) -> None:
        """cp -p and rsync -a set the source's mtime: kept and shown, so a second `rsync -a` sees the file as
        up to date and skips it."""
        self._writing(path, "utimens")
        parts = self._split(path) or []
        if not parts:
            return
        if len(parts) == 1 and (draft := self._lookup(parts[0])) is not None and draft.is_dir:
            return  # a sample directory: nothing to keep
        draft, found, is_meta = self._resolve(path)
        if found is not None and mtime is not None:
            found.kept_mtime = mtime
        elif is_meta and mtime is not None:
            draft.meta_mtime = mtime

    def chmod(self, path: str) -> None:
        """rsync -a and mkstemp's fchmod: accepted, S3 keeps no modes."""
        self._writing(path, "chmod")
        self.getattr(path)

    def chown(self, path: str, uid: int, gid: int) -> None:
        """Accepted when it changes nothing (cp -a or rsync -a as root keep the owner they see)."""
        self._writing(path, "chown")
        self.getattr(path)
        keep = (-1, 0xFFFFFFFF)
        if uid not in (*keep, self.owner[0]) or gid not in (*keep, self.owner[1]):
            raise BpfsError(f"{path}: chown refused: every file of the mount belongs to "
                            f"{self.owner[0]}:{self.owner[1]}", errno.EPERM)

    def truncate(self, path: str, length: int) -> None:
        self._writing(path, "truncate")
        draft, found, is_meta = self._resolve(path)
        if is_meta and length > META_LIMIT:
            raise logged_error(f"{path}: sample.json is limited to {META_LIMIT} bytes", errno.EFBIG)
        if is_meta:
            with draft.lock:
                text = draft.meta_text or b""
                draft.meta_text = text[:length] + b"\0" * max(0, length - len(text))
            return
        self.resize_data(found, length)

    def rename(self, old: str, new: str) -> None:
        self._writing(old, "rename")
        po, pn = self._split(old) or [], self._split(new) or []
        if not po or not pn:
            raise self.refuse(old, "rename")
        if len(po) != len(pn) or (len(po) == 2 and po[0] != pn[0]):
            raise logged_error(f"{old} -> {new}: files can be renamed only within one sample directory",
                               errno.EPERM)
        check_name(new, upload_name(pn[-1]))
        if len(pn) == 1:
            check_name(new, sample_name(upload_name(pn[0])))
        if len(po) == 1:
            draft = self._draft(po[0])
            with self._lock:
                if pn[0] in self._drafts and pn[0] != po[0]:
                    raise BpfsError(f"{new}: exists", errno.EEXIST)
            if draft.is_dir:
                self._rename_sample(draft, pn[0])
            else:
                _, found, _ = self._resolve(old)
                self._rename_file(draft, found, pn[0])
            with self._lock:
                self._drafts.pop(po[0], None)
                draft.entry_name = pn[0]
                self._drafts[pn[0]] = draft
            return
        draft = self._draft_dir(po[0])
        if draft.is_meta(po[1]) and pn[1] == META_NAME:
            draft.meta_alias = None
            return  # rsync's temporary sample.json was sample.json all along
        if META_NAME in (po[1], pn[1]):
            raise logged_error(f"{old} -> {new}: sample.json cannot be renamed", errno.EPERM)
        _, found, _ = self._resolve(old)
        with draft.lock:
            if pn[1] in draft.files and pn[1] != po[1]:
                raise BpfsError(f"{new}: exists", errno.EEXIST)
        self._rename_file(draft, found, pn[1])

    def _rename_sample(self, draft: Draft, name: str) -> None:
        with draft.create_lock:
            if draft.sample_id is not None:
                self.records.rename_sample(draft.sample_id, name)
            draft.name = name

    def _rename_file(self, draft: Draft, f: DraftFile, new_name: str) -> None:
        """rsync's temporary files were uploaded under their final name already; any other rename of an
        uploaded file is a server-side copy to the new key, and the record follows."""
        with f.lock:
            if f.state != "done":
                raise BpfsError(f"{f.path}: rename it after close()", errno.EBUSY)
            base = upload_name(new_name)
            if base != f.basename:
                with draft.lock:
                    if any(o is not f and o.basename == base for o in draft.files.values()):
                        raise BpfsError(f"{new_name}: already in this sample", errno.EEXIST)
                if f.size > self.objects.MAX_COPY_SIZE:
                    raise logged_error(f"{f.path}: files over 5 GiB cannot be renamed once uploaded", errno.EPERM)
                key = f.key.rsplit("/", 1)[0] + "/" + base
                self.objects.copy_object(self.bucket, f.key, key)
                self.records.move_upload(f.upload_id, key, draft.paired(base))
                try:
                    self.objects.delete_object(self.bucket, f.key)
                except BpfsError as exc:
                    log.error("renamed, but the old object s3://%s/%s stays: %s", self.bucket, f.key, exc)
                f.key, f.basename = key, base
            if not draft.is_dir and sample_name(base) != draft.name:
                self._rename_sample(draft, sample_name(base))
            with draft.lock:
                if draft.files.get(f.name) is f:
                    del draft.files[f.name]
                f.name = new_name
                draft.files[new_name] = f

    def delete_sample(self, sample_id: int) -> None:
        """rmdir samples/<id> under -o allow_delete; refused while a file is being uploaded into it. Each
        draft of that sample is held (its create_lock) so no upload can start into it meanwhile."""
        with self._lock:
            drafts = [d for d in self._drafts.values() if d.sample_id == sample_id]
        with contextlib.ExitStack() as held:
            for draft in drafts:
                held.enter_context(draft.create_lock)
            for draft in drafts:
                with draft.lock:
                    if draft.active:
                        raise BpfsError(f"samples/{sample_id}: files are being uploaded into it", errno.EBUSY)
            self.records.delete_sample(sample_id)
            log.info("deleted sample %d", sample_id)
            for draft in drafts:
                with draft.lock:
                    draft.sample_id, draft.next_order, draft.completed = None, 0, 0
                    draft.files = {n: f for n, f in draft.files.items() if f.state != "done"}
        for draft in drafts:
            self._forget_if_empty(draft)

    def shutdown(self) -> None:
        """At unmount: uploads still open are aborted and marked failed, never left in progress."""
        with self._lock:
            drafts = list(self._drafts.values())
        for draft in drafts:
            with draft.lock:
                files = [f for f in draft.files.values() if f.state == "writing"]
            for f in files:
                with f.lock:
                    if f.state == "writing":
                        self._fail(f, RemoteError(f"{f.path}: unmounted before the file was closed"))
        self.pool.shutdown()
