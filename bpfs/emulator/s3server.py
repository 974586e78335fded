"""A small, fast S3-compatible HTTP server for bpfs tests and demos, backed by plain files.

Why not moto: moto's server mode reads the whole object for every ranged GET, so reading a 256 MiB object in
8 MiB parts crawls at ~32 MB/s, and bpfs reads big files exactly that way.  Here every object is one file on
disk and response bodies leave through sendfile(2) from the requested offset, so a range GET costs time
proportional to the range and a plain GET runs at several hundred MB/s.

Beyond speed the server gives tests what a real S3 can't: injected faults (`faults.py`: errors, stalls,
connections dropped mid-body), traffic counters (`S3Server.stats`), visible multipart state, archived storage
classes (GLACIER GET -> 403 InvalidObjectState), and a switch (`accept_aws_chunked=False`) that behaves like the
S3-compatible servers that reject botocore's flexible checksums and aws-chunked uploads, so the project's
workaround can be tested.

Scope is what bpfs and boto3's transfer manager use: path-style addressing (botocore's choice for an IP
endpoint), no authentication (any credentials are accepted, signatures are ignored), no versioning.
It binds to loopback only.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import hashlib
import io
import ipaddress
import logging
import os
import pathlib
import re
import select
import shutil
import socket
import socketserver
import threading
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from bpfs.emulator.faults import Fault, Faults

log = logging.getLogger(__name__)

BLOCK = 1 << 20  # request bodies are read and hashed in blocks of this size
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum size of every multipart part but the last
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
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

# Legacy us-east-1 bucket names (uppercase and '_' allowed); never '.'-leading, so <root>/.tmp etc. are safe.
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# Characters kept as-is in on-disk object names; everything else (notably '/', '%', NUL) is %-encoded.
_FILENAME_SAFE = "-_.~ !$&'()+,;=@[]^{}#"
_MAX_FILENAME = 200
_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
_DEFAULT_ERROR_CODES = {
    400: "InvalidRequest",
    403: "AccessDenied",
    404: "NoSuchKey",
    405: "MethodNotAllowed",
    409: "OperationAborted",
    412: "PreconditionFailed",
    416: "InvalidRange",
    500: "InternalError",
    501: "NotImplemented",
    503: "SlowDown",
}


# --------------------------------------------------------------------------------------------------- store


@dataclass
class ObjectInfo:
    """What S3 keeps about an object besides its bytes."""

    size: int
    etag: str  # md5 hex (or md5-of-md5s-N) in double quotes, as S3 sends it
    last_modified: float
    storage_class: str = "STANDARD"
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix


def _key_filename(key: str) -> str:
    """One safe, unique file name per key: keys are flat in S3, so '/' is encoded rather than made a directory
    (no file/directory clashes between 'a' and 'a/b', no '..' escapes); over-long names end in a hash."""
    name = quote(key, safe=_FILENAME_SAFE)
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    if len(name) > _MAX_FILENAME:  # '%%' never occurs in quote() output, so hashed names can't collide
        name = name[:130] + "%%" + hashlib.sha256(key.encode()).hexdigest()
    return name


def _check_bucket_name(bucket: str) -> None:
    if not _BUCKET_RE.fullmatch(bucket):
        raise ValueError(f"invalid bucket name {bucket!r}")


def _check_key(key: str) -> None:
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"invalid key {key!r}: must be 1..{MAX_KEY_BYTES} UTF-8 bytes")


def _file_md5(path: str | os.PathLike) -> tuple[str, int]:
    md5 = hashlib.md5()
    size = 0
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            md5.update(view[:n])
            size += n
    return md5.hexdigest(), size


def _copy_fd(src_fd: int, dst_fd: int, offset: int, count: int) -> None:
    """Append `count` bytes of src (from `offset`) to dst without going through Python buffers where the OS
    allows it (copy_file_range, then sendfile, then plain reads)."""
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
        chunk = os.pread(src_fd, min(BLOCK, count - done), offset + done)
        if not chunk:
            raise OSError(f"source ended {count - done} bytes early")
        os.write(dst_fd, chunk)
        done += len(chunk)


class ObjectStore:
    """Disk-backed buckets for the emulator: each object is the file <root>/<bucket>/<encoded key>, replaced
    atomically (os.replace) so a reader that already opened it keeps a consistent body; metadata (etag,
    storage class, last-modified, content type) lives in memory.  Thread-safe.

    Objects already under `root` (a reused data dir) are loaded back as STANDARD objects with their md5 as
    ETag; keys long enough to have been stored under a hashed name can't be recovered and are skipped."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.root / ".tmp"  # uploads are spooled here, then renamed into place
        self.uploads_dir = self.root / ".mpu"  # multipart parts, one directory per upload
        for scratch in (self.tmp_dir, self.uploads_dir):  # leftovers of an earlier run are garbage
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
        self._lock = threading.RLock()
        self._objects: dict[str, dict[str, ObjectInfo]] = {}
        self._created: dict[str, float] = {}
        self._sorted: dict[str, list[str] | None] = {}  # sorted keys per bucket, rebuilt lazily
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
                md5, size = _file_md5(entry.path)
                objects[key] = ObjectInfo(size, f'"{md5}"', entry.stat().st_mtime)
            self._objects[bucket_dir.name] = objects
            self._created[bucket_dir.name] = bucket_dir.stat().st_mtime
            self._sorted[bucket_dir.name] = None

    # ---- buckets

    def create_bucket(self, bucket: str) -> None:
        """Idempotent, like CreateBucket in us-east-1."""
        _check_bucket_name(bucket)
        with self._lock:
            if bucket not in self._objects:
                (self.root / bucket).mkdir(exist_ok=True)
                self._objects[bucket] = {}
                self._created[bucket] = time.time()
                self._sorted[bucket] = None

    def delete_bucket(self, bucket: str) -> None:
        """KeyError if there is no such bucket, ValueError if it still holds objects."""
        with self._lock:
            if self._bucket(bucket):
                raise ValueError(f"bucket {bucket!r} is not empty")
            del self._objects[bucket], self._created[bucket], self._sorted[bucket]
            shutil.rmtree(self.root / bucket, ignore_errors=True)

    def buckets(self) -> list[tuple[str, float]]:
        """(name, creation time) of every bucket, sorted by name."""
        with self._lock:
            return sorted(self._created.items())

    def bucket_exists(self, bucket: str) -> bool:
        with self._lock:
            return bucket in self._objects

    def _bucket(self, bucket: str) -> dict[str, ObjectInfo]:
        try:
            return self._objects[bucket]
        except KeyError:
            raise KeyError(f"no such bucket {bucket!r}") from None

    # ---- objects

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | os.PathLike,
        storage_class: str = "STANDARD",
        *,
        content_type: str = "binary/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Store an object, creating the bucket if needed.  A path is moved in (renamed when on the same
        filesystem, else copied and removed), so seeding a big object costs no copy; bytes are written out."""
        _check_key(key)
        if storage_class not in STORAGE_CLASSES:
            raise ValueError(f"unknown storage class {storage_class!r}")
        self.create_bucket(bucket)
        tmp = self.new_temp_path()
        if isinstance(data, (bytes, bytearray, memoryview)):
            tmp.write_bytes(data)
            md5, size = hashlib.md5(data).hexdigest(), len(data)
        elif isinstance(data, os.PathLike):
            shutil.move(os.fspath(data), tmp)
            md5, size = _file_md5(tmp)
        else:
            raise TypeError(f"data must be bytes or a path, not {type(data).__name__}")
        info = ObjectInfo(size, f'"{md5}"', time.time(), storage_class, content_type, dict(metadata or {}))
        self.install(bucket, key, tmp, info)

    def new_temp_path(self) -> pathlib.Path:
        """A fresh path on the store's filesystem, for spooling a body before `install`."""
        return self.tmp_dir / uuid.uuid4().hex

    def install(self, bucket: str, key: str, tmp: pathlib.Path, info: ObjectInfo) -> None:
        """Atomically make the file `tmp` the body of bucket/key (the file is consumed)."""
        try:
            with self._lock:
                objects = self._bucket(bucket)
                os.replace(tmp, self.root / bucket / _key_filename(key))
                if key not in objects:
                    self._sorted[bucket] = None
                objects[key] = info
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def info(self, bucket: str, key: str) -> ObjectInfo:
        """A copy of the object's metadata (KeyError if none)."""
        with self._lock:
            return dataclasses.replace(self._bucket(bucket)[key])

    def open(self, bucket: str, key: str) -> tuple[BinaryIO, ObjectInfo]:
        """The object's open file and metadata, taken together so they match even if a PUT replaces the
        object meanwhile (the old file stays readable through this handle)."""
        with self._lock:
            info = self._bucket(bucket)[key]
            return open(self.root / bucket / _key_filename(key), "rb", buffering=0), dataclasses.replace(info)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        f, _ = self.open(bucket, key)
        with f:
            return f.read()

    def path(self, bucket: str, key: str) -> pathlib.Path:
        """The file holding the object (KeyError if none).  Don't modify it in place: replace via `put`."""
        with self._lock:
            self._bucket(bucket)[key]
            return self.root / bucket / _key_filename(key)

    def size(self, bucket: str, key: str) -> int:
        with self._lock:
            return self._bucket(bucket)[key].size

    def exists(self, bucket: str, key: str) -> bool:
        with self._lock:
            return key in self._objects.get(bucket, ())

    def delete(self, bucket: str, key: str) -> None:
        """Idempotent like DeleteObject: a missing key is no error (a missing bucket is a KeyError)."""
        with self._lock:
            objects = self._bucket(bucket)
            if objects.pop(key, None) is not None:
                self._sorted[bucket] = None
                (self.root / bucket / _key_filename(key)).unlink(missing_ok=True)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, in S3's order (UTF-8 binary order = code point order)."""
        with self._lock:
            ordered = self._sorted_keys(bucket)
            start = bisect.bisect_left(ordered, prefix)
            end = start
            while end < len(ordered) and ordered[end].startswith(prefix):
                end += 1
            return ordered[start:end]

    def _sorted_keys(self, bucket: str) -> list[str]:
        self._bucket(bucket)
        ordered = self._sorted[bucket]
        if ordered is None:
            ordered = self._sorted[bucket] = sorted(self._objects[bucket])
        return ordered

    def set_storage_class(self, bucket: str, key: str, storage_class: str) -> None:
        """Move an object between storage classes in place (e.g. to GLACIER, to test archived files)."""
        if storage_class not in STORAGE_CLASSES:
            raise ValueError(f"unknown storage class {storage_class!r}")
        with self._lock:
            self._bucket(bucket)[key].storage_class = storage_class


# ----------------------------------------------------------------------------------------- multipart state


@dataclass
class PartInfo:
    number: int
    path: pathlib.Path
    size: int
    etag: str  # quoted md5 hex
    last_modified: float


@dataclass
class MultipartUpload:
    """An in-progress multipart upload; its parts are spooled as files in `directory`."""

    upload_id: str
    bucket: str
    key: str
    directory: pathlib.Path
    storage_class: str = "STANDARD"
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    initiated: float = field(default_factory=time.time)
    parts: dict[int, PartInfo] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- http plumbing


class S3Error(Exception):
    """An S3 error response: status, Code and Message of the XML body, plus extra elements and headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str = "",
        extra: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message or HTTPStatus(status).phrase
        self.extra = extra or {}
        self.headers = headers or {}


def _incomplete(message: str) -> S3Error:
    return S3Error(400, "IncompleteBody", message)


class _LengthReader(io.RawIOBase):
    """A body delimited by Content-Length."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        view = memoryview(b)[: min(len(b), self._left)]
        n = self._f.readinto(view)
        if not n:
            raise _incomplete(f"request body ended {self._left} bytes early")
        self._left -= n
        self.consumed += n
        return n


def _read_chunk_size(f: BinaryIO) -> int:
    line = f.readline(4096)
    if not line.endswith(b"\n"):
        raise _incomplete("truncated chunk header")
    try:
        return int(line.split(b";", 1)[0].strip(), 16)  # ';chunk-signature=...' extensions are ignored
    except ValueError:
        raise _incomplete(f"bad chunk header {line[:80]!r}") from None


def _read_trailers(f: BinaryIO, into: dict[str, str]) -> None:
    while True:
        line = f.readline(8192)
        if line in (b"\r\n", b"\n", b""):
            return
        name, _, value = line.decode("latin-1").partition(":")
        into[name.strip().lower()] = value.strip()


class _ChunkedReader(io.RawIOBase):
    """A body sent with HTTP Transfer-Encoding: chunked; trailers land in `trailers`."""

    def __init__(self, f: BinaryIO, trailers: dict[str, str]) -> None:
        self._f = f
        self._left = 0
        self._done = False
        self.trailers = trailers
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._done:
            return 0
        if self._left == 0:
            self._left = _read_chunk_size(self._f)
            if self._left == 0:
                _read_trailers(self._f, self.trailers)
                self._done = True
                return 0
        view = memoryview(b)[: min(len(b), self._left)]
        n = self._f.readinto(view)
        if not n:
            raise _incomplete("request body ended inside a chunk")
        self._left -= n
        self.consumed += n
        if self._left == 0 and self._f.readline(3) not in (b"\r\n", b"\n"):
            raise _incomplete("chunk not followed by CRLF")
        return n


def _iter_aws_chunked(src: io.BufferedReader, trailers: dict[str, str]) -> Iterator[memoryview]:
    """Decode Content-Encoding: aws-chunked (hex size[;chunk-signature=..] CRLF data CRLF ... 0 CRLF trailers),
    botocore's framing for streamed uploads with a trailing checksum."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    while True:
        left = _read_chunk_size(src)
        if left == 0:
            _read_trailers(src, trailers)
            return
        while left:
            n = src.readinto(view[: min(left, BLOCK)])
            if not n:
                raise _incomplete("aws-chunked body ended inside a chunk")
            left -= n
            yield view[:n]
        if src.readline(3) not in (b"\r\n", b"\n"):
            raise _incomplete("aws-chunked chunk not followed by CRLF")


class _Crc32:
    """hashlib-like CRC32 so the flexible checksum x-amz-checksum-crc32 can be verified."""

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


# Verifiable flexible-checksum algorithms; crc32c/crc64nvme need non-stdlib code and are accepted unchecked.
_CHECKSUMS: dict[str, Callable[[], object]] = {"crc32": _Crc32, "sha1": hashlib.sha1, "sha256": hashlib.sha256}


_CHECKSUM_NON_VALUES = ("x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-checksum-mode")


@dataclass
class _Received:
    size: int
    md5: str  # hex
    checksum: tuple[str, str] | None  # (header name, base64 value) to echo back


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _http_date(t: float) -> str:
    return formatdate(t, usegmt=True)


def _x(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _xml_doc(root: str, inner: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NS}">{inner}</{root}>'.encode()


def _parse_xml(body: bytes) -> ET.Element:
    """Parse a request document with namespaces stripped from the tags."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed") from None
    for el in root.iter():
        el.tag = el.tag.rsplit("}", 1)[-1]
    return root


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None when the header is to be ignored (as RFC 9110 says
    for syntactically invalid or multi-range headers); S3Error 416 when nothing of the object is in range."""
    m = _RANGE_RE.fullmatch(header)
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.groups()
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            raise _invalid_range(header, size)
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise _invalid_range(header, size)
    return start, min(end, size - 1)


def _invalid_range(header: str, size: int) -> S3Error:
    return S3Error(
        416,
        "InvalidRange",
        "The requested range is not satisfiable",
        extra={"RangeRequested": header, "ActualObjectSize": str(size)},
        headers={"Content-Range": f"bytes */{size}"},
    )


def _etag_list_matches(header: str, etag: str) -> bool:
    wanted = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return "*" in wanted or etag.strip('"') in wanted


def _header_time(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _flexible_checksum_marker(headers) -> str | None:
    """Why a strict S3-compatible server would refuse this upload: aws-chunked framing or botocore's
    flexible-checksum headers (sent by default since botocore 1.36).  None if it's a classic upload."""
    if "aws-chunked" in headers.get("Content-Encoding", "").lower():
        return "Content-Encoding: aws-chunked"
    sha = headers.get("x-amz-content-sha256", "")
    if sha.upper().startswith("STREAMING-"):
        return f"x-amz-content-sha256: {sha}"
    for name in headers.keys():
        lname = name.lower()
        if lname.startswith("x-amz-checksum-") or lname in ("x-amz-sdk-checksum-algorithm", "x-amz-trailer"):
            return name
    return None


def _ignored_param(name: str) -> bool:
    """Query parameters that don't select an operation: presigned-URL auth (never checked) and botocore's x-id."""
    lname = name.lower()
    return lname.startswith("x-amz-") or lname in ("x-id", "awsaccesskeyid", "signature", "expires")


_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
    "response-content-language": "Content-Language",
    "response-cache-control": "Cache-Control",
    "response-expires": "Expires",
}
_OBJECT_SUBRESOURCES = ("acl", "tagging", "attributes", "torrent", "retention", "legal-hold", "restore", "select")


def _user_metadata(headers) -> dict[str, str]:
    return {
        name.lower().removeprefix("x-amz-meta-"): value
        for name, value in headers.items()
        if name.lower().startswith("x-amz-meta-")
    }


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers open connections, so stop() can end idle keep-alive ones too."""

    daemon_threads = True
    request_queue_size = 128  # many parallel range GETs connect at once

    def __init__(self, address: tuple[str, int], s3: S3Server) -> None:
        self.s3 = s3
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's getfqdn(): a DNS lookup per server
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes the handler thread blocked on the next request
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """One connection; S3 operations are dispatched from `_handle`."""

    protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses pooled connections
    server_version = "bpfs-s3-emulator"
    sys_version = ""
    disable_nagle_algorithm = True  # TCP_NODELAY: small XML answers and headers go out at once
    rbufsize = 64 * 1024
    server: _HTTPServer

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args) -> None:
        pass  # one stderr line per request would cost more than serving many of them

    def handle_expect_100(self) -> bool:
        # Defer "100 Continue" until the body is wanted: an error answered first tells botocore not to send it.
        return True

    # ---- request plumbing

    def _handle(self) -> None:
        s3 = self.server.s3
        self._request_id = uuid.uuid4().hex[:16].upper()
        self._headers_sent = False
        self._body_done = False
        self._continue_pending = (
            self.headers.get("Expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1"
        )
        s3._count(requests=1, **{f"{self.command.lower()}_requests": 1})
        if self.path.startswith("/"):
            raw_path, _, query = self.path.partition("?")
        else:  # absolute-form request target
            parts = urlsplit(self.path)
            raw_path, query = parts.path or "/", parts.query
        self._path = unquote(raw_path)
        try:
            fault = s3.faults.take(self.command, self._path, query) if s3.faults is not None else None
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status:
                    code = fault.code or _DEFAULT_ERROR_CODES.get(fault.status, "InternalError")
                    raise S3Error(fault.status, code, "Injected fault")
            params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items() if not _ignored_param(k)}
            self._route(raw_path, params, fault)
        except S3Error as err:
            if self._headers_sent:
                self.close_connection = True
            else:
                self._send_error(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            log.exception("S3 emulator failed on %s %s", self.command, self.path)
            self.close_connection = True  # a body may be half read: the connection can't be trusted
            if not self._headers_sent:
                self._send_error(S3Error(500, "InternalError", f"{type(exc).__name__}: {exc}"))

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

    def _send_continue(self) -> None:
        if self._continue_pending:
            self._continue_pending = False
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _dispose_body(self) -> None:
        """Before answering without having read the body: skip a small one, else give up the connection (and
        if 100 Continue was never sent, botocore won't send the body at all)."""
        if self._body_done:
            return
        self._body_done = True
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = self.headers.get("Content-Length", "0").strip()
        if not chunked and length in ("", "0"):
            return
        if self._continue_pending or chunked or not length.isdigit() or int(length) > BLOCK:
            self.close_connection = True
            return
        self.rfile.read(int(length))

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self._dispose_body()
        self.send_response(status)
        self.send_header("x-amz-request-id", self._request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._headers_sent = True

    def _respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if body:
            headers.setdefault("Content-Type", "application/xml")
        if status != 304:
            headers["Content-Length"] = str(len(body))
        self._start(status, headers)
        if body and self.command != "HEAD":
            self.wfile.write(body)
            self.server.s3._count(bytes_sent=len(body))

    def _send_error(self, err: S3Error) -> None:
        extra = "".join(_x(k, v) for k, v in err.extra.items())
        resource = escape(self._path)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(err.code)}</Code>'
            f"<Message>{escape(err.message)}</Message>{extra}<Resource>{resource}</Resource>"
            f"<RequestId>{self._request_id}</RequestId></Error>"
        ).encode()
        headers = {"Content-Type": "application/xml", **err.headers}
        if self.command == "HEAD":  # HEAD errors carry no body; botocore reads the status alone
            self._respond(err.status, b"", headers)
        else:
            self._respond(err.status, body, headers)

    def _receive_body(self, dest: BinaryIO, require_length: bool = True) -> _Received:
        """Stream the request body into `dest`: HTTP chunked and aws-chunked framing removed, MD5 computed,
        Content-MD5 and flexible checksums (header or trailer) verified."""
        self._body_done = True
        headers = self.headers
        trailers: dict[str, str] = {}
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            raw: _LengthReader | _ChunkedReader = _ChunkedReader(self.rfile, trailers)
        else:
            length = headers.get("Content-Length")
            if length is None and not require_length:
                length = "0"
            if length is None or not length.strip().isdigit():
                self.close_connection = True
                raise S3Error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
            raw = _LengthReader(self.rfile, int(length))
        aws_chunked = (
            "aws-chunked" in headers.get("Content-Encoding", "").lower()
            or headers.get("x-amz-content-sha256", "").upper().startswith("STREAMING-")
        )
        algorithm = (headers.get("x-amz-sdk-checksum-algorithm") or "").lower()
        if not algorithm:
            names = [headers.get("x-amz-trailer", "")] + list(headers.keys())
            for name in names:
                if name.lower().startswith("x-amz-checksum-") and name.lower() not in _CHECKSUM_NON_VALUES:
                    algorithm = name.lower().removeprefix("x-amz-checksum-")
                    break
        checker = _CHECKSUMS.get(algorithm, lambda: None)()
        md5 = hashlib.md5()
        size = 0
        self._send_continue()
        try:
            if aws_chunked:
                blocks: Iterator[memoryview] = _iter_aws_chunked(io.BufferedReader(raw, BLOCK), trailers)
            else:
                blocks = self._iter_plain(raw)
            for block in blocks:
                md5.update(block)
                if checker is not None:
                    checker.update(block)  # type: ignore[attr-defined]
                dest.write(block)
                size += len(block)
            if aws_chunked:  # the terminating HTTP chunk and its trailers, if any
                while raw.readinto(bytearray(4096)):
                    pass
        except S3Error:
            self.close_connection = True
            raise
        finally:
            self.server.s3._count(bytes_received=raw.consumed)
        decoded_length = headers.get("x-amz-decoded-content-length")
        if aws_chunked and decoded_length and decoded_length.strip() != str(size):
            raise _incomplete(f"decoded length {size} != x-amz-decoded-content-length {decoded_length}")
        content_md5 = headers.get("Content-MD5")
        if content_md5 is not None:
            try:
                wanted = base64.b64decode(content_md5, validate=True)
            except binascii.Error:
                wanted = b""
            if len(wanted) != 16:
                raise S3Error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
            if wanted != md5.digest():
                raise S3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
        echo = None
        if algorithm:
            name = f"x-amz-checksum-{algorithm}"
            claimed = trailers.get(name) or headers.get(name)
            if checker is not None and claimed is not None:
                actual = base64.b64encode(checker.digest()).decode()  # type: ignore[attr-defined]
                if actual != claimed.strip():
                    raise S3Error(
                        400,
                        "BadDigest",
                        f"The {algorithm.upper()} you specified did not match the calculated checksum.",
                    )
            if claimed is not None:
                echo = (name, claimed.strip())
        return _Received(size, md5.hexdigest(), echo)

    @staticmethod
    def _iter_plain(raw: _LengthReader | _ChunkedReader) -> Iterator[memoryview]:
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        while n := raw.readinto(view):
            yield view[:n]

    def _read_small_body(self, limit: int = 16 * BLOCK) -> bytes:
        sink = io.BytesIO()
        received = self._receive_body(sink, require_length=False)
        if received.size > limit:
            raise S3Error(400, "MaxMessageLengthExceeded", "Your request was too big.")
        return sink.getvalue()

    def _sendfile(self, f: BinaryIO, offset: int, count: int) -> int:
        """Zero-copy body: sendfile(2) straight from the object file, counting what actually went out."""
        sock = self.connection
        sent = 0
        pace = self.server.s3.bandwidth
        try:
            if pace:  # an S3-like link: one connection gets `bandwidth` bytes/s, as real S3 does (~100 MB/s)
                started = time.monotonic()
                while sent < count:
                    n = os.sendfile(sock.fileno(), f.fileno(), offset + sent, min(count - sent, 256 * 1024))
                    if n == 0:
                        raise OSError("object file shorter than its recorded size")
                    sent += n
                    ahead = sent / pace - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                return sent
            if not hasattr(os, "sendfile"):
                sent = sock.sendfile(f, offset, count)
                return sent
            out_fd, in_fd = sock.fileno(), f.fileno()
            while sent < count:
                try:
                    n = os.sendfile(out_fd, in_fd, offset + sent, min(count - sent, 1 << 30))
                except BlockingIOError:
                    select.select([], [sock], [])
                    continue
                if n == 0:
                    raise OSError("object file shorter than its recorded size")
                sent += n
            return sent
        finally:
            self.server.s3._count(bytes_sent=sent)

    # ---- routing

    def _route(self, raw_path: str, q: dict[str, str], fault: Fault | None) -> None:
        s3 = self.server.s3
        store = s3.store
        method = self.command
        bucket_raw, _, key_raw = raw_path.lstrip("/").partition("/")
        bucket, key = unquote(bucket_raw), unquote(key_raw)
        if not bucket:
            if method in ("GET", "HEAD"):
                return self._list_buckets()
            raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        if not _BUCKET_RE.fullmatch(bucket):
            raise S3Error(400, "InvalidBucketName", "The specified bucket is not valid.", {"BucketName": bucket})
        if not key:
            return self._bucket_op(bucket, q)
        if len(key.encode()) > MAX_KEY_BYTES:
            raise S3Error(400, "KeyTooLongError", "Your key is too long")
        if not store.bucket_exists(bucket):
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", {"BucketName": bucket})
        unsupported = [name for name in _OBJECT_SUBRESOURCES if name in q]
        if unsupported:
            raise S3Error(501, "NotImplemented", f"{method} object ?{unsupported[0]} is not implemented")
        if method in ("GET", "HEAD"):
            if "uploadId" in q and method == "GET":
                return self._list_parts(bucket, key, q)
            return self._get_object(bucket, key, q, fault)
        if method == "PUT":
            if "uploadId" in q or "partNumber" in q:
                if "x-amz-copy-source" in self.headers:
                    raise S3Error(501, "NotImplemented", "UploadPartCopy is not implemented")
                return self._upload_part(bucket, key, q)
            if "x-amz-copy-source" in self.headers:
                return self._copy_object(bucket, key)
            if q:
                raise S3Error(501, "NotImplemented", f"PUT ?{'&'.join(q)} is not implemented")
            return self._put_object(bucket, key)
        if method == "POST":
            if "uploads" in q:
                return self._create_multipart(bucket, key)
            if "uploadId" in q:
                return self._complete_multipart(bucket, key, q)
            raise S3Error(501, "NotImplemented", f"POST ?{'&'.join(q)} is not implemented")
        if method == "DELETE":
            if "uploadId" in q:
                return self._abort_multipart(bucket, key, q)
            store.delete(bucket, key)
            return self._respond(204)
        raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    def _bucket_op(self, bucket: str, q: dict[str, str]) -> None:
        store = self.server.s3.store
        method = self.command
        if method == "PUT":
            if q:
                raise S3Error(501, "NotImplemented", f"PUT bucket ?{'&'.join(q)} is not implemented")
            self._read_small_body()  # optional CreateBucketConfiguration; the region is ignored
            store.create_bucket(bucket)
            return self._respond(200, headers={"Location": f"/{bucket}"})
        if not store.bucket_exists(bucket):
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", {"BucketName": bucket})
        if method == "HEAD":
            return self._respond(200, headers={"x-amz-bucket-region": "us-east-1"})
        if method == "DELETE":
            if any(u.bucket == bucket for u in list(self.server.s3.multipart_uploads.values())) or store.keys(
                bucket
            ):
                raise S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty")
            store.delete_bucket(bucket)
            return self._respond(204)
        if method == "POST" and "delete" in q:
            return self._delete_objects(bucket)
        if method == "GET":
            if "location" in q:
                return self._respond(200, _xml_doc("LocationConstraint", ""))
            if "uploads" in q:
                return self._list_uploads(bucket)
            if q.get("list-type") == "2":
                return self._list_objects(bucket, q, v2=True)
            unsupported = set(q) - {"prefix", "delimiter", "marker", "max-keys", "encoding-type"}
            if unsupported:
                raise S3Error(501, "NotImplemented", f"GET bucket ?{'&'.join(sorted(unsupported))}")
            return self._list_objects(bucket, q, v2=False)
        raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    # ---- bucket operations

    def _list_buckets(self) -> None:
        items = "".join(
            f"<Bucket>{_x('Name', name)}{_x('CreationDate', _iso(created))}</Bucket>"
            for name, created in self.server.s3.store.buckets()
        )
        owner = f"<Owner>{_x('ID', OWNER_ID)}{_x('DisplayName', 'bpfs')}</Owner>"
        self._respond(200, _xml_doc("ListAllMyBucketsResult", f"{owner}<Buckets>{items}</Buckets>"))

    def _list_objects(self, bucket: str, q: dict[str, str], v2: bool) -> None:
        """ListObjectsV2 (and V1): prefix, delimiter grouping into CommonPrefixes, max-keys pagination."""
        store = self.server.s3.store
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        try:
            max_keys = max(0, min(1000, int(q.get("max-keys", "1000"))))
        except ValueError:
            raise S3Error(400, "InvalidArgument", "Provided max-keys not an integer or within integer range") from None
        if q.get("encoding-type") not in (None, "url"):
            raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
        url = q.get("encoding-type") == "url"  # botocore asks for it and decodes keys itself
        token = q.get("continuation-token")
        if v2 and token is not None:
            try:
                marker = base64.urlsafe_b64decode(token.encode()).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect") from None
            marker = max(marker, q.get("start-after", ""))
        else:
            marker = q.get("start-after", "") if v2 else q.get("marker", "")

        def enc(value: str) -> str:
            return escape(quote(value, safe="/") if url else value)

        contents: list[str] = []
        prefixes: list[str] = []
        last = None
        truncated = False
        keys = store.keys(bucket, prefix)
        for key in keys[bisect.bisect_right(keys, marker) :]:  # keys <= marker were listed on earlier pages
            common = None
            if delimiter:
                i = key.find(delimiter, len(prefix))
                if i >= 0:
                    common = key[: i + len(delimiter)]
            item = common or key  # what a page lists for this key; a group sorts before all its members
            if item <= marker or item == last:
                continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = max_keys > 0
                break
            last = item
            if common is not None:
                prefixes.append(f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>")
                continue
            try:
                info = store.info(bucket, key)
            except KeyError:  # deleted meanwhile
                continue
            owner = (
                f"<Owner>{_x('ID', OWNER_ID)}{_x('DisplayName', 'bpfs')}</Owner>"
                if (not v2 or q.get("fetch-owner") == "true")
                else ""
            )
            contents.append(
                f"<Contents><Key>{enc(key)}</Key>{_x('LastModified', _iso(info.last_modified))}"
                f"{_x('ETag', info.etag)}{_x('Size', info.size)}{owner}"
                f"{_x('StorageClass', info.storage_class)}</Contents>"
            )
        parts = [_x("Name", bucket), f"<Prefix>{enc(prefix)}</Prefix>"]
        if delimiter:
            parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        parts.append(_x("MaxKeys", max_keys))
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(_x("IsTruncated", "true" if truncated else "false"))
        if v2:
            parts.append(_x("KeyCount", len(contents) + len(prefixes)))
            if token is not None:
                parts.append(_x("ContinuationToken", token))
            if "start-after" in q:
                parts.append(f"<StartAfter>{enc(q['start-after'])}</StartAfter>")
            if truncated and last is not None:
                parts.append(_x("NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode()))
        else:
            parts.append(f"<Marker>{enc(q.get('marker', ''))}</Marker>")
            if truncated and last is not None:
                parts.append(f"<NextMarker>{enc(last)}</NextMarker>")
        self._respond(200, _xml_doc("ListBucketResult", "".join(parts + contents + prefixes)))

    def _delete_objects(self, bucket: str) -> None:
        store = self.server.s3.store
        root = _parse_xml(self._read_small_body())
        quiet = (root.findtext("Quiet") or "").strip().lower() == "true"
        results = []
        for obj in root.findall("Object"):
            key = obj.findtext("Key")
            if not key:
                raise S3Error(400, "MalformedXML", "An Object element has no Key")
            store.delete(bucket, key)
            if not quiet:
                results.append(f"<Deleted>{_x('Key', key)}</Deleted>")
        self._respond(200, _xml_doc("DeleteResult", "".join(results)))

    def _list_uploads(self, bucket: str) -> None:
        uploads = sorted(
            (u for u in list(self.server.s3.multipart_uploads.values()) if u.bucket == bucket),
            key=lambda u: (u.key, u.initiated),
        )
        items = "".join(
            f"<Upload>{_x('Key', u.key)}{_x('UploadId', u.upload_id)}{_x('StorageClass', u.storage_class)}"
            f"{_x('Initiated', _iso(u.initiated))}</Upload>"
            for u in uploads
        )
        inner = f"{_x('Bucket', bucket)}<KeyMarker/><UploadIdMarker/>{_x('MaxUploads', 1000)}"
        self._respond(200, _xml_doc("ListMultipartUploadsResult", f"{inner}<IsTruncated>false</IsTruncated>{items}"))

    # ---- object operations

    def _object_headers(self, info: ObjectInfo) -> dict[str, str]:
        headers = {
            "Content-Type": info.content_type,
            "ETag": info.etag,
            "Last-Modified": _http_date(info.last_modified),
            "Accept-Ranges": "bytes",
        }
        if info.storage_class != "STANDARD":
            headers["x-amz-storage-class"] = info.storage_class
        for name, value in info.metadata.items():
            headers[f"x-amz-meta-{name}"] = value
        return headers

    def _check_preconditions(self, info: ObjectInfo) -> bool:
        """RFC 9110 conditional GET as S3 does it; False means answer 304 Not Modified."""
        h = self.headers
        if_match, if_none_match = h.get("If-Match"), h.get("If-None-Match")
        mtime = int(info.last_modified)
        failed = S3Error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
        if if_match is not None:
            if not _etag_list_matches(if_match, info.etag):
                raise failed
        elif (t := _header_time(h.get("If-Unmodified-Since", ""))) is not None and mtime > t:
            raise failed
        if if_none_match is not None:
            return not _etag_list_matches(if_none_match, info.etag)
        if (t := _header_time(h.get("If-Modified-Since", ""))) is not None and mtime <= t:
            return False
        return True

    def _get_object(self, bucket: str, key: str, q: dict[str, str], fault: Fault | None) -> None:
        s3 = self.server.s3
        head = self.command == "HEAD"
        try:
            f, info = s3.store.open(bucket, key)
        except (KeyError, FileNotFoundError):
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", {"Key": key}) from None
        with f:
            if not head and info.storage_class in ARCHIVED_STORAGE_CLASSES:
                raise S3Error(
                    403,
                    "InvalidObjectState",
                    "The operation is not valid for the object's storage class",
                    {"StorageClass": info.storage_class},
                )
            headers = self._object_headers(info)
            for param, header in _RESPONSE_OVERRIDES.items():
                if param in q:
                    headers[header] = q[param]
            if not self._check_preconditions(info):
                return self._respond(304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
            start, count, status = 0, info.size, 200
            range_header = self.headers.get("Range")
            if range_header:
                span = _parse_range(range_header, info.size)
                if span is not None:
                    start, count, status = span[0], span[1] - span[0] + 1, 206
                    headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{info.size}"
            headers["Content-Length"] = str(count)
            self._start(status, headers)
            if head or count == 0:
                return
            drop_after = fault.drop_after if fault is not None else None
            if drop_after is not None and drop_after < count:
                self._sendfile(f, start, drop_after)
                self.close_connection = True
                try:  # FIN mid-body: the client sees fewer bytes than Content-Length promised
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self._sendfile(f, start, count)

    def _storage_class_header(self) -> str:
        storage_class = self.headers.get("x-amz-storage-class", "STANDARD").strip().upper()
        if storage_class not in STORAGE_CLASSES:
            raise S3Error(400, "InvalidStorageClass", "The storage class you specified is not valid")
        return storage_class

    def _check_upload_headers(self) -> None:
        if not self.server.s3.accept_aws_chunked:
            marker = _flexible_checksum_marker(self.headers)
            if marker is not None:
                raise S3Error(400, "InvalidArgument", f"Unsupported upload encoding or checksum header: {marker}")

    def _spool_body(self, tmp: pathlib.Path) -> _Received:
        try:
            with open(tmp, "wb", buffering=0) as dest:
                return self._receive_body(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _put_object(self, bucket: str, key: str) -> None:
        s3 = self.server.s3
        self._check_upload_headers()
        storage_class = self._storage_class_header()
        tmp = s3.store.new_temp_path()
        received = self._spool_body(tmp)
        info = ObjectInfo(
            received.size,
            f'"{received.md5}"',
            time.time(),
            storage_class,
            self.headers.get("Content-Type") or "binary/octet-stream",
            _user_metadata(self.headers),
        )
        try:
            s3.store.install(bucket, key, tmp, info)
        except KeyError:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist") from None
        headers = {"ETag": info.etag}
        if received.checksum:
            headers[received.checksum[0]] = received.checksum[1]
        self._respond(200, headers=headers)

    def _copy_object(self, bucket: str, key: str) -> None:
        store = self.server.s3.store
        source = unquote(self.headers["x-amz-copy-source"].split("?", 1)[0]).lstrip("/")
        src_bucket, _, src_key = source.partition("/")
        try:
            f, src = store.open(src_bucket, src_key)
        except KeyError:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", {"Key": src_key}) from None
        with f:
            if src.storage_class in ARCHIVED_STORAGE_CLASSES:
                raise S3Error(
                    403, "InvalidObjectState", "The source object is archived", {"StorageClass": src.storage_class}
                )
            tmp = store.new_temp_path()
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    _copy_fd(f.fileno(), fd, 0, src.size)
                finally:
                    os.close(fd)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        etag = src.etag if "-" not in src.etag else f'"{_file_md5(tmp)[0]}"'
        replace = self.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
        info = ObjectInfo(
            src.size,
            etag,
            time.time(),
            self._storage_class_header(),
            (self.headers.get("Content-Type") or "binary/octet-stream") if replace else src.content_type,
            _user_metadata(self.headers) if replace else dict(src.metadata),
        )
        store.install(bucket, key, tmp, info)
        self._respond(
            200, _xml_doc("CopyObjectResult", _x("LastModified", _iso(info.last_modified)) + _x("ETag", info.etag))
        )

    # ---- multipart

    def _upload(self, bucket: str, key: str, q: dict[str, str]) -> MultipartUpload:
        upload = self.server.s3.multipart_uploads.get(q.get("uploadId", ""))
        if upload is None or upload.bucket != bucket or upload.key != key:
            raise S3Error(
                404,
                "NoSuchUpload",
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
                "aborted or completed.",
                {"UploadId": q.get("uploadId", "")},
            )
        return upload

    def _create_multipart(self, bucket: str, key: str) -> None:
        s3 = self.server.s3
        self._check_upload_headers()
        upload_id = uuid.uuid4().hex
        directory = s3.store.uploads_dir / upload_id
        directory.mkdir()
        upload = MultipartUpload(
            upload_id,
            bucket,
            key,
            directory,
            self._storage_class_header(),
            self.headers.get("Content-Type") or "binary/octet-stream",
            _user_metadata(self.headers),
        )
        with s3._lock:
            s3.multipart_uploads[upload_id] = upload
        headers = {}
        if algorithm := self.headers.get("x-amz-checksum-algorithm"):
            headers["x-amz-checksum-algorithm"] = algorithm
        inner = _x("Bucket", bucket) + _x("Key", key) + _x("UploadId", upload_id)
        self._respond(200, _xml_doc("InitiateMultipartUploadResult", inner), headers)

    def _upload_part(self, bucket: str, key: str, q: dict[str, str]) -> None:
        s3 = self.server.s3
        self._check_upload_headers()
        try:
            number = int(q.get("partNumber", ""))
        except ValueError:
            number = 0
        if not 1 <= number <= MAX_PARTS:
            raise S3Error(400, "InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}")
        upload = self._upload(bucket, key, q)
        tmp = upload.directory / f"{number}.{uuid.uuid4().hex}"
        try:
            received = self._spool_body(tmp)
        except FileNotFoundError:  # aborted or completed while the part was arriving
            raise S3Error(404, "NoSuchUpload", "The specified upload does not exist.") from None
        part = PartInfo(number, tmp, received.size, f'"{received.md5}"', time.time())
        with s3._lock:
            if s3.multipart_uploads.get(upload.upload_id) is not upload:
                tmp.unlink(missing_ok=True)
                raise S3Error(404, "NoSuchUpload", "The specified upload does not exist.")
            old = upload.parts.get(number)
            upload.parts[number] = part
        if old is not None:
            old.path.unlink(missing_ok=True)
        headers = {"ETag": part.etag}
        if received.checksum:
            headers[received.checksum[0]] = received.checksum[1]
        self._respond(200, headers=headers)

    def _complete_multipart(self, bucket: str, key: str, q: dict[str, str]) -> None:
        """Validate the part list like S3 (order, ETags, 5 MiB minimum), then concatenate the part files."""
        s3 = self.server.s3
        upload = self._upload(bucket, key, q)
        root = _parse_xml(self._read_small_body())
        wanted: list[tuple[int, str]] = []
        for el in root.findall("Part"):
            try:
                wanted.append((int(el.findtext("PartNumber") or ""), (el.findtext("ETag") or "").strip().strip('"')))
            except ValueError:
                raise S3Error(400, "MalformedXML", "PartNumber is not an integer") from None
        if not wanted:
            raise S3Error(400, "MalformedXML", "You must specify at least one part")
        if any(a[0] >= b[0] for a, b in zip(wanted, wanted[1:], strict=False)):
            raise S3Error(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        with s3._lock:
            if s3.multipart_uploads.get(upload.upload_id) is not upload:
                raise S3Error(404, "NoSuchUpload", "The specified upload does not exist.")
            parts = []
            for number, etag in wanted:
                part = upload.parts.get(number)
                if part is None or part.etag.strip('"') != etag:
                    raise S3Error(
                        400,
                        "InvalidPart",
                        "One or more of the specified parts could not be found. The part may not have been "
                        "uploaded, or the specified entity tag may not match the part's entity tag.",
                        {"PartNumber": str(number), "ETag": etag},
                    )
                parts.append(part)
            for part in parts[:-1]:
                if part.size < MIN_PART_SIZE:
                    raise S3Error(
                        400,
                        "EntityTooSmall",
                        "Your proposed upload is smaller than the minimum allowed object size.",
                        {"ProposedSize": str(part.size), "MinSizeAllowed": str(MIN_PART_SIZE),
                         "PartNumber": str(part.number), "ETag": part.etag.strip('"')},
                    )
            del s3.multipart_uploads[upload.upload_id]  # from here on the upload is ours alone
        try:
            body = parts[0].path  # the first part grows into the object: one copy less
            with open(body, "r+b") as out:  # not "ab": copy_file_range refuses O_APPEND targets
                out.seek(0, os.SEEK_END)
                for part in parts[1:]:
                    with open(part.path, "rb") as src:
                        _copy_fd(src.fileno(), out.fileno(), 0, part.size)
            digest = hashlib.md5(b"".join(binascii.unhexlify(p.etag.strip('"')) for p in parts)).hexdigest()
            etag = f'"{digest}-{len(parts)}"'
            info = ObjectInfo(
                sum(p.size for p in parts),
                etag,
                time.time(),
                upload.storage_class,
                upload.content_type,
                upload.metadata,
            )
            try:
                s3.store.install(bucket, key, body, info)
            except KeyError:
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist") from None
        finally:
            shutil.rmtree(upload.directory, ignore_errors=True)
        inner = (
            _x("Location", f"{s3.url}/{quote(bucket)}/{quote(key)}") + _x("Bucket", bucket) + _x("Key", key)
            + _x("ETag", etag)
        )
        self._respond(200, _xml_doc("CompleteMultipartUploadResult", inner))

    def _abort_multipart(self, bucket: str, key: str, q: dict[str, str]) -> None:
        s3 = self.server.s3
        upload = self._upload(bucket, key, q)
        with s3._lock:
            s3.multipart_uploads.pop(upload.upload_id, None)
        shutil.rmtree(upload.directory, ignore_errors=True)
        self._respond(204)

    def _list_parts(self, bucket: str, key: str, q: dict[str, str]) -> None:
        upload = self._upload(bucket, key, q)
        try:
            marker = int(q.get("part-number-marker", "0") or 0)
            max_parts = max(0, min(1000, int(q.get("max-parts", "1000"))))
        except ValueError:
            raise S3Error(400, "InvalidArgument", "part-number-marker and max-parts must be integers") from None
        parts = sorted(p for p in list(upload.parts) if p > marker)
        page, truncated = parts[:max_parts], len(parts) > max_parts
        items = "".join(
            f"<Part>{_x('PartNumber', p.number)}{_x('LastModified', _iso(p.last_modified))}"
            f"{_x('ETag', p.etag)}{_x('Size', p.size)}</Part>"
            for n in page
            if (p := upload.parts.get(n)) is not None
        )
        inner = (
            _x("Bucket", bucket) + _x("Key", key) + _x("UploadId", upload.upload_id)
            + _x("StorageClass", upload.storage_class) + _x("PartNumberMarker", marker)
            + _x("NextPartNumberMarker", page[-1] if page else marker) + _x("MaxParts", max_parts)
            + _x("IsTruncated", "true" if truncated else "false") + items
        )
        self._respond(200, _xml_doc("ListPartsResult", inner))


# ------------------------------------------------------------------------------------------------- server


_STAT_NAMES = (
    "requests",
    "get_requests",
    "head_requests",
    "put_requests",
    "post_requests",
    "delete_requests",
    "bytes_sent",
    "bytes_received",
)


class S3Server:
    """The emulator's S3 endpoint: serves `store` on 127.0.0.1 (a free port by default) from a daemon thread.

    Use as `with S3Server(store) as s3:` or `start()` ... `stop()`; boto3 clients take `endpoint_url=s3.url`.

    `stats` counts requests (in total and per method) and body bytes: `bytes_sent` is what actually left
    (object data and XML; a dropped connection counts only what was sent), `bytes_received` is request
    bodies as read off the socket (HTTP chunk framing excluded, aws-chunked framing included).
    `multipart_uploads` maps upload id -> MultipartUpload for uploads neither completed nor aborted.
    """

    def __init__(
        self,
        store: ObjectStore,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        accept_aws_chunked: bool = True,
    ) -> None:
        if host == "localhost":
            host = "127.0.0.1"
        try:
            loopback = ipaddress.ip_address(host).is_loopback and ipaddress.ip_address(host).version == 4
        except ValueError:
            loopback = False
        if not loopback:  # an emulator without auth must never be reachable from another machine
            raise ValueError(f"S3Server binds to an IPv4 loopback address only, not {host!r}")
        self.store = store
        self.faults = faults
        self.accept_aws_chunked = accept_aws_chunked
        self.bandwidth: float | None = None  # bytes/s per response body; None = as fast as loopback goes
        self.multipart_uploads: dict[str, MultipartUpload] = {}
        self.stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        self._lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), self)
        self.host, self.port = self._httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> S3Server:
        """Serve in a background daemon thread; returns self."""
        if self._stopped:
            raise RuntimeError("a stopped S3Server can't be restarted; make a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"s3-emulator:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and any open connections; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
        self._httpd.close_connections()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def reset_stats(self) -> None:
        with self._lock:
            for name in self.stats:
                self.stats[name] = 0

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                self.stats[name] = self.stats.get(name, 0) + n
