"""The S3 emulator's storage: buckets as directories, each object one plain file, metadata in memory.

Why one file per object: the HTTP side (`s3server.py`) can then answer a range GET with sendfile(2) from the
requested offset, so it costs time proportional to the range, and seeding a big object is a rename, not a copy.
No HTTP here: tests and the demo account (`account.py`) fill and inspect the store directly.
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import quote, unquote

MAX_KEY_BYTES = 1024
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "OUTPOSTS",
        "SNOW",
        "EXPRESS_ONEZONE",
    }
)
ARCHIVED_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})  # GET needs a restore first

_BLOCK = 1 << 20  # files are hashed and copied in blocks of this size
# Legacy us-east-1 bucket names (uppercase and '_' allowed); never '.'-leading, so <root>/.tmp etc. are safe.
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# Characters kept as-is in on-disk object names; everything else (notably '/', '%', NUL) is %-encoded.
_FILENAME_SAFE = "-_.~ !$&'()+,;=@[]^{}#"
_MAX_FILENAME = 200


@dataclass
class ObjectInfo:
    """What S3 keeps about an object besides its bytes."""

    size: int
    etag: str  # md5 hex (or md5-of-md5s-N) in double quotes, as S3 sends it
    last_modified: float
    storage_class: str = "STANDARD"
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix


@dataclass
class PartInfo:
    """One uploaded part of a multipart upload, spooled as its own file until the upload completes."""

    number: int
    path: pathlib.Path
    size: int
    etag: str  # quoted md5 hex


@dataclass
class MultipartUpload:
    """An in-progress multipart upload; its parts are spooled as files in `directory` (under the store's
    `uploads_dir`).  What the object will be (class, type, metadata) is fixed when the upload is created."""

    upload_id: str
    bucket: str
    key: str
    directory: pathlib.Path
    storage_class: str = "STANDARD"
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    parts: dict[int, PartInfo] = field(default_factory=dict)


def multipart_etag(parts: list[PartInfo]) -> str:
    """S3's ETag of a completed multipart object: the md5 of the parts' binary md5s, then '-<part count>'."""
    digest = hashlib.md5(b"".join(binascii.unhexlify(p.etag.strip('"')) for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def file_md5(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(md5 hex, size) of a file, read in blocks."""
    md5 = hashlib.md5()
    size = 0
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            md5.update(view[:n])
            size += n
    return md5.hexdigest(), size


def _copy_fd(src_fd: int, dst_fd: int, offset: int, count: int) -> None:
    """Append `count` bytes of src (from `offset`) to dst without going through Python buffers where the OS
    allows it (copy_file_range, else plain reads)."""
    done = 0
    if hasattr(os, "copy_file_range"):
        try:
            while done < count:
                n = os.copy_file_range(src_fd, dst_fd, count - done, offset + done)
                if n == 0:
                    break
                done += n
        except OSError:
            pass
    while done < count:
        os.lseek(dst_fd, 0, os.SEEK_END)
        chunk = os.pread(src_fd, min(_BLOCK, count - done), offset + done)
        if not chunk:
            raise OSError(f"source ended {count - done} bytes early")
        os.write(dst_fd, chunk)
        done += len(chunk)


def _key_filename(key: str) -> str:
    """One safe, unique file name per key: keys are flat in S3, so '/' is encoded rather than made a directory
    (no file/directory clashes between 'a' and 'a/b', no '..' escapes); over-long names end in a hash."""
    name = quote(key, safe=_FILENAME_SAFE)
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    if len(name) > _MAX_FILENAME:  # '%%' never occurs in quote() output, so hashed names can't collide
        name = name[:130] + "%%" + hashlib.sha256(key.encode()).hexdigest()
    return name


class ObjectStore:
    """Disk-backed buckets: each object is the file <root>/<bucket>/<encoded key>, replaced atomically
    (os.replace) so a reader that already opened it keeps a consistent body; metadata (etag, storage class,
    last-modified, content type) lives in memory.  Thread-safe.

    Objects already under `root` (a reused data dir) are loaded back as STANDARD objects with their md5 as
    ETag; keys long enough to have been stored under a hashed name can't be recovered and are skipped."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.root / ".tmp"  # uploads are spooled here, then renamed into place
        self.uploads_dir = self.root / ".mpu"  # multipart parts, one directory per upload
        for scratch in (self.tmp_dir, self.uploads_dir):  # leftovers of an earlier run are garbage
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
        self._lock = threading.RLock()
        self._objects: dict[str, dict[str, ObjectInfo]] = {}
        self._load_existing()

    def _load_existing(self) -> None:
        for bucket_dir in sorted(self.root.iterdir()):
            if not bucket_dir.is_dir() or not _BUCKET_RE.fullmatch(bucket_dir.name):
                continue
            objects: dict[str, ObjectInfo] = {}
            for entry in os.scandir(bucket_dir):
                if not entry.is_file(follow_symlinks=False) or "%%" in entry.name:
                    continue
                try:
                    key = unquote(entry.name, errors="strict")
                except UnicodeDecodeError:
                    continue
                if _key_filename(key) != entry.name:  # not a name this store wrote
                    continue
                md5, size = file_md5(entry.path)
                objects[key] = ObjectInfo(size, f'"{md5}"', entry.stat().st_mtime)
            self._objects[bucket_dir.name] = objects

    def _bucket(self, bucket: str) -> dict[str, ObjectInfo]:
        try:
            return self._objects[bucket]
        except KeyError:
            raise KeyError(f"no such bucket {bucket!r}") from None

    def create_bucket(self, bucket: str) -> None:
        """Idempotent, like CreateBucket in us-east-1."""
        if not _BUCKET_RE.fullmatch(bucket):
            raise ValueError(f"invalid bucket name {bucket!r}")
        with self._lock:
            if bucket not in self._objects:
                (self.root / bucket).mkdir(exist_ok=True)
                self._objects[bucket] = {}

    def bucket_exists(self, bucket: str) -> bool:
        with self._lock:
            return bucket in self._objects

    # ---- writing

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | os.PathLike[str],
        storage_class: str = "STANDARD",
        *,
        content_type: str = "binary/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Store an object, creating the bucket if needed.  A path is moved in (renamed when on the same
        filesystem, else copied and removed), so seeding a big object costs no copy; bytes are written out."""
        if not key or len(key.encode()) > MAX_KEY_BYTES:
            raise ValueError(f"invalid key {key!r}: must be 1..{MAX_KEY_BYTES} UTF-8 bytes")
        if storage_class not in STORAGE_CLASSES:
            raise ValueError(f"unknown storage class {storage_class!r}")
        self.create_bucket(bucket)
        tmp = self.new_temp_path()
        if isinstance(data, (bytes, bytearray, memoryview)):
            tmp.write_bytes(data)
            md5, size = hashlib.md5(data).hexdigest(), len(data)
        elif isinstance(data, os.PathLike):
            shutil.move(os.fspath(data), tmp)
            md5, size = file_md5(tmp)
        else:
            raise TypeError(f"data must be bytes or a path, not {type(data).__name__}")
        info = ObjectInfo(size, f'"{md5}"', time.time(), storage_class, content_type, dict(metadata or {}))
        self.install(bucket, key, tmp, info)

    def new_temp_path(self) -> pathlib.Path:
        """A fresh path on the store's filesystem, for spooling a body before `install`."""
        return self.tmp_dir / uuid.uuid4().hex

    def clone(self, f: BinaryIO, size: int) -> pathlib.Path:
        """A temp copy of the first `size` bytes of an open object file (for CopyObject), ready to `install`."""
        tmp = self.new_temp_path()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _copy_fd(f.fileno(), fd, 0, size)
            finally:
                os.close(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def join_parts(self, parts: list[PartInfo]) -> pathlib.Path:
        """Concatenate multipart parts into one file, ready to `install`: the first part's file grows into the
        object (one copy less); the others are left for the caller to remove with the upload's directory."""
        body = parts[0].path
        with open(body, "r+b") as out:  # not "ab": copy_file_range refuses O_APPEND targets
            out.seek(0, os.SEEK_END)
            for part in parts[1:]:
                with open(part.path, "rb") as src:
                    _copy_fd(src.fileno(), out.fileno(), 0, part.size)
        return body

    def install(self, bucket: str, key: str, tmp: pathlib.Path, info: ObjectInfo) -> None:
        """Atomically make the file `tmp` the body of bucket/key (the file is consumed, even on error)."""
        try:
            with self._lock:
                self._bucket(bucket)
                os.replace(tmp, self.root / bucket / _key_filename(key))
                self._objects[bucket][key] = info
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete(self, bucket: str, key: str) -> None:
        """Idempotent like DeleteObject: a missing key is no error (a missing bucket is a KeyError)."""
        with self._lock:
            if self._bucket(bucket).pop(key, None) is not None:
                (self.root / bucket / _key_filename(key)).unlink(missing_ok=True)

    def set_storage_class(self, bucket: str, key: str, storage_class: str) -> None:
        """Move an object between storage classes in place (e.g. to GLACIER, to test archived files)."""
        if storage_class not in STORAGE_CLASSES:
            raise ValueError(f"unknown storage class {storage_class!r}")
        with self._lock:
            self._bucket(bucket)[key].storage_class = storage_class

    # ---- reading (KeyError for a missing bucket or key)

    def open(self, bucket: str, key: str) -> tuple[BinaryIO, ObjectInfo]:
        """The object's open file and metadata, taken together so they match even if a PUT replaces the
        object meanwhile (the old file stays readable through this handle)."""
        with self._lock:
            info = self._bucket(bucket)[key]
            return open(self.root / bucket / _key_filename(key), "rb", buffering=0), dataclasses.replace(info)

    def info(self, bucket: str, key: str) -> ObjectInfo:
        """A copy of the object's metadata."""
        with self._lock:
            return dataclasses.replace(self._bucket(bucket)[key])

    def get_bytes(self, bucket: str, key: str) -> bytes:
        f, _ = self.open(bucket, key)
        with f:
            return f.read()

    def path(self, bucket: str, key: str) -> pathlib.Path:
        """The file holding the object.  Don't modify it in place: replace it via `put`."""
        with self._lock:
            self._bucket(bucket)[key]
            return self.root / bucket / _key_filename(key)

    def size(self, bucket: str, key: str) -> int:
        with self._lock:
            return self._bucket(bucket)[key].size

    def exists(self, bucket: str, key: str) -> bool:
        with self._lock:
            return key in self._objects.get(bucket, ())

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, in S3's order (UTF-8 binary order = code point order)."""
        with self._lock:
            return sorted(k for k in self._bucket(bucket) if k.startswith(prefix))
