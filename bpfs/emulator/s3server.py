"""A small, fast S3-compatible HTTP server for bpfs tests, the demo and the benchmark, over an `ObjectStore`.

Why not moto: moto's server mode reads the whole object for every ranged GET, so reading a 256 MiB object in
8 MiB parts crawls at ~32 MB/s, and bpfs reads big files exactly that way.  Here every object is one file on
disk (`s3store.py`) and response bodies leave through sendfile(2) from the requested offset, so a range GET
costs time proportional to the range and a plain GET runs at several hundred MB/s.

Beyond speed the server gives tests what a real S3 can't: injected faults (`faults.py`: errors, stalls,
connections dropped mid-body, a Range ignored, a HEAD's headers replaced), traffic counters (`S3Server.stats`),
visible multipart state, the shape of a real S3 link for the benchmark (a first-byte `latency` on every
request and a per-connection `bandwidth` cap on object bodies, downloads and PUT/UploadPart uploads alike),
archived storage classes (GLACIER GET -> 403 InvalidObjectState), and a switch (`accept_aws_chunked=False`)
that behaves like the S3-compatible servers that reject botocore's flexible checksums and aws-chunked uploads,
so the project's workaround can be tested.

Scope is what bpfs, boto3's upload_file/download_file and the emulator's presigned URLs use, on objects only:
GetObject (Range, If-Match), HeadObject, PutObject, CopyObject, DeleteObject and multipart uploads (create,
upload part, complete, abort).  Anything else answers 501 NotImplemented; buckets are made with
`ObjectStore.create_bucket`.  Path-style addressing (botocore's choice for an IP endpoint), no authentication
(signatures are ignored), no versioning.  It binds to loopback only.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import pathlib
import shutil
import socket
import socketserver
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO
from urllib.parse import parse_qs, quote, unquote

from bpfs.emulator.faults import Fault, Faults, SlowHeaders
from bpfs.emulator.s3protocol import (
    BLOCK,
    FramingError,
    Pace,
    Received,
    S3Error,
    body_reader,
    error_doc,
    etag_matches,
    flexible_checksum_marker,
    http_date,
    iso_time,
    parse_range,
    parse_xml,
    receive_body,
    user_metadata,
    xml_doc,
    xml_el,
)
from bpfs.emulator.s3store import (
    ARCHIVED_STORAGE_CLASSES,
    MAX_KEY_BYTES,
    STORAGE_CLASSES,
    MultipartUpload,
    ObjectInfo,
    ObjectStore,
    PartInfo,
    file_md5,
    multipart_etag,
)

__all__ = ["MIN_PART_SIZE", "ObjectStore", "S3Error", "S3Server"]

log = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum size of every multipart part but the last
MAX_PARTS = 10_000
_DEFAULT_ERROR_CODES = {  # the S3 error code of an injected fault that names only a status
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

    The link shape, for behaving like a real S3 link (both off by default):
    `latency` (seconds, 0 = none) is waited by every request after its headers arrive: before a GET's or any
    other answer starts (the first-byte latency), and before a PutObject/UploadPart body is read (before its
    100 Continue, if it asked for one).
    `bandwidth` (bytes/s per request, None = unlimited) paces object bodies in both directions: a GET's body
    is sent, and a PutObject/UploadPart body read, no faster than that.  Small XML bodies are not paced.
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
        self.bandwidth: float | None = None
        self.latency: float = 0.0
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

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset_stats(self) -> None:
        with self._lock:
            for name in self.stats:
                self.stats[name] = 0

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                self.stats[name] = self.stats.get(name, 0) + n


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


def _ignored_param(name: str) -> bool:
    """Query parameters that don't select an operation: presigned-URL auth, SigV4 or boto3's default SigV2
    (never checked), and botocore's x-id."""
    lname = name.lower()
    return lname.startswith("x-amz-") or lname in ("x-id", "awsaccesskeyid", "signature", "expires")


def _no_such_upload(upload_id: str) -> S3Error:
    return S3Error(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
        "aborted or completed.",
        {"UploadId": upload_id},
    )


class _Handler(SlowHeaders, BaseHTTPRequestHandler):
    """One connection; each request goes through `_handle` (faults, errors) and `_route` (the operation)."""

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
        raw_path, _, query = self.path.partition("?")
        self._path = unquote(raw_path)
        try:
            fault = s3.faults.take(self.command, self._path, query) if s3.faults is not None else None
            self.slow_headers = fault.trickle_headers if fault is not None else None
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status:
                    code = fault.code or _DEFAULT_ERROR_CODES.get(fault.status, "InternalError")
                    raise S3Error(fault.status, code, "Injected fault")
            if s3.latency:
                time.sleep(s3.latency)  # the body of a PUT is read after it: _receive_body sends 100 Continue
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
        headers["Content-Length"] = str(len(body))
        self._start(status, headers)
        if body and self.command != "HEAD":
            self.wfile.write(body)
            self.server.s3._count(bytes_sent=len(body))

    def _send_error(self, err: S3Error) -> None:
        headers = {"Content-Type": "application/xml", **err.headers}
        # HEAD errors carry no body; botocore reads the status alone
        body = b"" if self.command == "HEAD" else error_doc(err, self._path, self._request_id)
        self._respond(err.status, body, headers)

    def _receive_body(self, dest: BinaryIO, require_length: bool = True, paced: bool = False) -> Received:
        """Read the whole request body into `dest` (see `receive_body`), sending 100 Continue first if asked;
        `paced`: no faster than `bandwidth` (object bodies)."""
        self._body_done = True
        raw = None
        try:
            bandwidth = self.server.s3.bandwidth if paced else None
            raw = body_reader(self.rfile, self.headers, require_length, bandwidth)
            self._send_continue()
            return receive_body(raw, self.headers, dest)
        except FramingError:
            self.close_connection = True
            raise
        finally:
            if raw is not None:
                self.server.s3._count(bytes_received=raw.consumed)

    def _read_small_body(self, limit: int = 16 * BLOCK) -> bytes:
        sink = io.BytesIO()
        received = self._receive_body(sink, require_length=False)
        if received.size > limit:
            raise S3Error(400, "MaxMessageLengthExceeded", "Your request was too big.")
        return sink.getvalue()

    def _spool_body(self, tmp: pathlib.Path) -> Received:
        """An object body (PutObject, UploadPart) into the file `tmp`, paced to `bandwidth`."""
        try:
            with open(tmp, "wb", buffering=0) as dest:
                return self._receive_body(dest, paced=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _sendfile(self, f: BinaryIO, offset: int, count: int) -> int:
        """Zero-copy body: sendfile(2) straight from the object file, paced to `bandwidth` if set (small
        slices, then sleep until the schedule allows more), counting what actually went out."""
        pace = Pace(self.server.s3.bandwidth)
        out_fd, in_fd = self.connection.fileno(), f.fileno()
        sent = 0
        try:
            while sent < count:
                n = os.sendfile(out_fd, in_fd, offset + sent, pace.slice(min(count - sent, 1 << 30)))
                if n == 0:
                    raise OSError("object file shorter than its recorded size")
                sent += n
                pace.step(n)
            return sent
        finally:
            self.server.s3._count(bytes_sent=sent)

    # ---- routing

    def _route(self, raw_path: str, q: dict[str, str], fault: Fault | None) -> None:
        bucket_raw, _, key_raw = raw_path.lstrip("/").partition("/")
        bucket, key = unquote(bucket_raw), unquote(key_raw)
        method, params = self.command, set(q)
        if not key:
            raise S3Error(501, "NotImplemented", f"{method} on a bucket is not implemented (objects only)")
        if len(key.encode()) > MAX_KEY_BYTES:
            raise S3Error(400, "KeyTooLongError", "Your key is too long")
        if not self.server.s3.store.bucket_exists(bucket):
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", {"BucketName": bucket})
        copy = "x-amz-copy-source" in self.headers
        if method in ("GET", "HEAD") and not params:
            return self._get_object(bucket, key, fault)
        if method == "PUT" and not params:
            return self._copy_object(bucket, key) if copy else self._put_object(bucket, key)
        if method == "PUT" and params == {"uploadId", "partNumber"} and not copy:
            return self._upload_part(bucket, key, q)
        if method == "POST" and params == {"uploads"}:
            return self._create_multipart(bucket, key)
        if method == "POST" and params == {"uploadId"}:
            return self._complete_multipart(bucket, key, q)
        if method == "DELETE" and params == {"uploadId"}:
            return self._abort_multipart(bucket, key, q)
        if method == "DELETE" and not params:
            self.server.s3.store.delete(bucket, key)
            return self._respond(204)
        query = f" ?{'&'.join(sorted(params))}" if params else ""
        raise S3Error(501, "NotImplemented", f"{method}{query} {'(a copy) ' if copy else ''}is not implemented")

    # ---- reading

    def _get_object(self, bucket: str, key: str, fault: Fault | None) -> None:
        """GetObject/HeadObject: one range at most, If-Match (boto3's download_file pins the ETag with it)."""
        head = self.command == "HEAD"
        try:
            f, info = self.server.s3.store.open(bucket, key)
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
            if_match = self.headers.get("If-Match")
            if if_match is not None and not etag_matches(if_match, info.etag):
                raise S3Error(
                    412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"
                )
            headers = {
                "Content-Type": info.content_type,
                "ETag": info.etag,
                "Last-Modified": http_date(info.last_modified),
                "Accept-Ranges": "bytes",
            }
            if info.storage_class != "STANDARD":
                headers["x-amz-storage-class"] = info.storage_class
            headers.update({f"x-amz-meta-{name}": value for name, value in info.metadata.items()})
            start, count, status = 0, info.size, 200
            range_header = None if fault is not None and fault.ignore_range else self.headers.get("Range")
            span = parse_range(range_header, info.size) if range_header else None
            if span is not None:
                start, count, status = span[0], span[1] - span[0] + 1, 206
                headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{info.size}"
            headers["Content-Length"] = str(count)
            if fault is not None and fault.headers and not fault.status:
                headers.update(fault.headers)
                headers = {name: value for name, value in headers.items() if value is not None}
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

    # ---- writing

    def _storage_class_header(self) -> str:
        storage_class = self.headers.get("x-amz-storage-class", "STANDARD").strip().upper()
        if storage_class not in STORAGE_CLASSES:
            raise S3Error(400, "InvalidStorageClass", "The storage class you specified is not valid")
        return storage_class

    def _content_type_header(self) -> str:
        return self.headers.get("Content-Type") or "binary/octet-stream"

    def _check_upload_headers(self) -> None:
        if not self.server.s3.accept_aws_chunked:
            marker = flexible_checksum_marker(self.headers)
            if marker is not None:
                raise S3Error(400, "InvalidArgument", f"Unsupported upload encoding or checksum header: {marker}")

    def _put_object(self, bucket: str, key: str) -> None:
        store = self.server.s3.store
        self._check_upload_headers()
        storage_class = self._storage_class_header()
        tmp = store.new_temp_path()
        received = self._spool_body(tmp)
        info = ObjectInfo(
            received.size,
            f'"{received.md5}"',
            time.time(),
            storage_class,
            self._content_type_header(),
            user_metadata(self.headers),
        )
        try:
            store.install(bucket, key, tmp, info)
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
            tmp = store.clone(f, src.size)
        etag = src.etag if "-" not in src.etag else f'"{file_md5(tmp)[0]}"'  # a copy is one part
        replace = self.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
        info = ObjectInfo(
            src.size,
            etag,
            time.time(),
            self._storage_class_header(),
            self._content_type_header() if replace else src.content_type,
            user_metadata(self.headers) if replace else dict(src.metadata),
        )
        store.install(bucket, key, tmp, info)
        inner = xml_el("LastModified", iso_time(info.last_modified)) + xml_el("ETag", info.etag)
        self._respond(200, xml_doc("CopyObjectResult", inner))

    # ---- multipart uploads: parts are spooled in the store, the bookkeeping is S3Server.multipart_uploads

    def _upload(self, bucket: str, key: str, q: dict[str, str]) -> MultipartUpload:
        upload = self.server.s3.multipart_uploads.get(q["uploadId"])
        if upload is None or upload.bucket != bucket or upload.key != key:
            raise _no_such_upload(q["uploadId"])
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
            self._content_type_header(),
            user_metadata(self.headers),
        )
        with s3._lock:
            s3.multipart_uploads[upload_id] = upload
        headers = {}
        if algorithm := self.headers.get("x-amz-checksum-algorithm"):
            headers["x-amz-checksum-algorithm"] = algorithm
        inner = xml_el("Bucket", bucket) + xml_el("Key", key) + xml_el("UploadId", upload_id)
        self._respond(200, xml_doc("InitiateMultipartUploadResult", inner), headers)

    def _upload_part(self, bucket: str, key: str, q: dict[str, str]) -> None:
        s3 = self.server.s3
        self._check_upload_headers()
        try:
            number = int(q["partNumber"])
        except ValueError:
            number = 0
        if not 1 <= number <= MAX_PARTS:
            raise S3Error(400, "InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}")
        upload = self._upload(bucket, key, q)
        tmp = upload.directory / f"{number}.{uuid.uuid4().hex}"
        try:
            received = self._spool_body(tmp)
        except FileNotFoundError:  # aborted or completed while the part was arriving
            raise _no_such_upload(upload.upload_id) from None
        part = PartInfo(number, tmp, received.size, f'"{received.md5}"')
        with s3._lock:
            if s3.multipart_uploads.get(upload.upload_id) is not upload:
                tmp.unlink(missing_ok=True)
                raise _no_such_upload(upload.upload_id)
            old = upload.parts.get(number)
            upload.parts[number] = part
        if old is not None:
            old.path.unlink(missing_ok=True)
        headers = {"ETag": part.etag}
        if received.checksum:
            headers[received.checksum[0]] = received.checksum[1]
        self._respond(200, headers=headers)

    def _complete_multipart(self, bucket: str, key: str, q: dict[str, str]) -> None:
        """Validate the part list like S3 (order, ETags, 5 MiB minimum), then join the part files."""
        s3 = self.server.s3
        upload = self._upload(bucket, key, q)
        wanted = self._completed_parts()
        with s3._lock:
            if s3.multipart_uploads.get(upload.upload_id) is not upload:
                raise _no_such_upload(upload.upload_id)
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
            body = s3.store.join_parts(parts)
            etag = multipart_etag(parts)
            info = ObjectInfo(
                sum(p.size for p in parts), etag, time.time(), upload.storage_class, upload.content_type,
                upload.metadata,
            )
            try:
                s3.store.install(bucket, key, body, info)
            except KeyError:
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist") from None
        finally:
            shutil.rmtree(upload.directory, ignore_errors=True)
        inner = (
            xml_el("Location", f"{s3.url}/{quote(bucket)}/{quote(key)}") + xml_el("Bucket", bucket)
            + xml_el("Key", key) + xml_el("ETag", etag)
        )
        self._respond(200, xml_doc("CompleteMultipartUploadResult", inner))

    def _completed_parts(self) -> list[tuple[int, str]]:
        """(part number, unquoted ETag) of the CompleteMultipartUpload document, checked for ascending order."""
        wanted: list[tuple[int, str]] = []
        for el in parse_xml(self._read_small_body()).findall("Part"):
            try:
                wanted.append((int(el.findtext("PartNumber") or ""), (el.findtext("ETag") or "").strip().strip('"')))
            except ValueError:
                raise S3Error(400, "MalformedXML", "PartNumber is not an integer") from None
        if not wanted:
            raise S3Error(400, "MalformedXML", "You must specify at least one part")
        if any(a[0] >= b[0] for a, b in zip(wanted, wanted[1:], strict=False)):
            raise S3Error(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        return wanted

    def _abort_multipart(self, bucket: str, key: str, q: dict[str, str]) -> None:
        s3 = self.server.s3
        upload = self._upload(bucket, key, q)
        with s3._lock:
            s3.multipart_uploads.pop(upload.upload_id, None)
        shutil.rmtree(upload.directory, ignore_errors=True)
        self._respond(204)
