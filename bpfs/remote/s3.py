"""S3 access: range GETs, HEADs and multipart uploads, with errors mapped to errno.

A range GET a reader waits for is bounded in time as the user sees it: bpfs makes its own
attempts (a refused or stalled connection, a 5xx, a body that breaks off is resumed from the
byte where it stopped) until `get_budget` is spent, and a watchdog cuts a body that trickles
past that deadline. The last attempt may start just before the deadline and wait one more
connect + read timeout, so a read gives up within 3 × (5 s + s3_timeout). Other requests
(HEAD, uploads) keep botocore's standard retries, which have the same bound.
"""

from __future__ import annotations

import errno
import logging
import mmap
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig
from cachetools import LRUCache

from bpfs.errors import AccessDenied, BpfsError, NotFound, RemoteError
from bpfs.memory import BufferPool
from bpfs.remote.config import Config
from bpfs.remote.watchdog import Watchdog, bounded_replies, cut
from bpfs.stats import Stats

log = logging.getLogger("bpfs.s3")

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20  # per socket read; a stalled server costs at most this per attempt
MAX_ATTEMPTS = 3  # botocore's count includes the first try: a stalled request costs at most 3 * (5 s + READ_TIMEOUT)
GET_ATTEMPTS = 8  # bpfs's own attempts of one range GET (retries and resumes), all within get_budget
RETRY_STATUSES = frozenset({500, 502, 503, 504})  # and SlowDown / RequestTimeout by code
BODY_CHUNK = 1 << 20  # the most one read of a body asks the socket for
# A body must bring this much within one stall bound (5 s + s3_timeout), or it counts as stalled: a
# trickle of a few bytes a second is no progress (a floor of about 3 KB/s at the default s3_timeout).
PROGRESS_BYTES = 64 << 10
LATENCY_SAMPLES = 16  # the last GETs whose answers tell the link's latency (their median: see ObjectClient.latency)
SIZE_CACHE = 65_536  # object sizes learned by HEAD (objects bpfs reads never change); ~100 bytes each
ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})
_BODY_ERRORS = (
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ConnectionClosedError,
    ConnectionError,
    TimeoutError,
    OSError,
)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)", re.IGNORECASE)  # the unit is case-insensitive (RFC 9110)
_CONNECT_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)


def _reader(body: object, response: dict) -> Callable[[memoryview], int]:
    """How to read a body into our buffer. Plain bodies go from the socket straight into it (http.client's
    readinto, under urllib3, which would read into a temporary and copy); anything else through botocore."""
    raw = getattr(getattr(body, "_raw_stream", None), "_fp", None)
    if raw is not None and not response.get("ContentEncoding") and hasattr(raw, "readinto"):
        return raw.readinto

    def copy(view: memoryview) -> int:
        chunk = body.read(len(view))  # type: ignore[attr-defined]
        view[:len(chunk)] = chunk
        return len(chunk)

    return copy


def _finish(body: object, complete: bool) -> None:
    """A body read to its end gives its connection back to the pool (keep-alive: no new TCP or TLS
    handshake for the next part); one left unread is closed, since its connection is unusable."""
    raw = getattr(body, "_raw_stream", None)
    if complete and raw is not None and hasattr(raw, "release_conn"):
        try:
            raw.release_conn()
            return
        except Exception:  # noqa: BLE001 - fall back to closing
            pass
    body.close()  # type: ignore[attr-defined]


class GetCancelled(RemoteError):
    """A GET its caller gave up (its file was closed): whoever still wants the bytes fetches them again."""


class ObjectChanged(RemoteError):
    """The object was replaced on the server while a file of it was open (412 to If-Match, or another ETag):
    the bytes read so far are of the old object, so nothing more of the new one may follow them."""


@dataclass(frozen=True)
class Tag:
    """What tells one version of an object from another in one answer: its ETag's opaque value (weak or strong
    alike: a proxy may weaken it), whether it was strong (only then can it go in If-Match), and Last-Modified,
    which stands in only where no ETag is sent (some servers stamp every answer with the time)."""

    etag: str = ""
    strong: bool = False
    modified: str = ""

    @property
    def key(self) -> str:
        """What disk blocks are keyed by; "" when the answer carries nothing that tells versions apart."""
        return self.etag or (f"LM:{self.modified}" if self.modified else "")


class Version:
    """What the readers of one object expect it to be: `size`, the size bpfs lists (every GET's Content-Range
    total must be that: an object shorter or longer than listed gives EIO, never a file cut short, padded or
    truncated), and its Tag, pinned by the first answer (later GETs send If-Match, so one file never gets
    a mix of an old and a new object's bytes). `changed` once the server said it is another object now."""

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.etag: str | None = None
        self.strong = False
        self.modified: str | None = None
        self.changed = False
        self.open_files = 0  # files reading it now, and when the last one closed (see Prefetcher.open)
        self.idle_since = time.monotonic()
        self._lock = threading.Lock()

    def pin(self, tag: Tag, where: str) -> None:
        """Take an answer's Tag: the first pins it; a different one means the object was replaced (a server
        that does not honour If-Match, or one without ETags). Two answers are compared by ETag when both
        carry one, else by Last-Modified when neither does; one with an ETag and one without (a proxy that
        drops it now and then) cannot be told apart and pass."""
        with self._lock:
            if self.etag is None and tag.etag:
                self.etag, self.strong = tag.etag, tag.strong
            if self.modified is None and tag.modified:
                self.modified = tag.modified
            if tag.etag:
                same = tag.etag == self.etag
            else:
                same = not tag.modified or self.etag is not None or tag.modified == self.modified
            if same:
                return
            self.changed = True
        raise ObjectChanged(f"{where}: changed on the server while being read (was {self.etag or self.modified}, "
                            f"now {tag.etag or tag.modified}); open the file again")

    def if_match(self) -> dict[str, str]:
        """If-Match for a strong ETag; a weak one never matches under If-Match's strong comparison: those,
        and Last-Modified, are compared on each answer instead (see pin)."""
        return {"IfMatch": f'"{self.etag}"'} if self.etag and self.strong else {}


def _tag(response: dict) -> Tag:
    """An answer's Tag: the ETag without its quotes or weak marker, and Last-Modified."""
    etag = str(response.get("ETag") or "").strip()
    weak = etag.startswith("W/")
    modified = response.get("LastModified")
    return Tag(etag.removeprefix("W/").strip('"'), bool(etag) and not weak,
               (modified.isoformat() if hasattr(modified, "isoformat") else str(modified)) if modified else "")


def _bound_replies(client: object, bound: float) -> None:
    """A reply's status line and headers must come within `bound` seconds: botocore's read timeout is per
    socket read, and a server that trickled them a byte every 2 s held `head -c 100` for 7 minutes. botocore
    offers no setting for the connection classes, so they are set on its session's pool manager, as botocore
    itself sets them (httpsession.URLLib3Session), before the client has made a connection."""
    try:
        http = client._endpoint.http_session  # type: ignore[attr-defined]
        pools = bounded_replies(http._pool_classes_by_scheme, bound)
        http._pool_classes_by_scheme = pools  # for the proxy managers it makes later
        http._manager.pool_classes_by_scheme = pools
    except AttributeError:  # a botocore laid out otherwise: reads still work, with only per-read timeouts
        log.warning("this botocore does not let bpfs bound the wait for an S3 reply's headers")


class ObjectClient:
    """The only place that talks to S3; one instance is shared by all handles (boto3 clients are thread-safe)."""

    def __init__(self, config: Config, stats: Stats | None = None, max_connections: int = 32,
                 read_timeout: float = READ_TIMEOUT, other_connections: int = 32) -> None:
        """`max_connections`: GETs that may run at once (read-ahead workers plus reads fetched inline);
        `other_connections`: HEADs and upload requests. Each pool holds all of its own, so none is dropped
        ("Connection pool is full") and opened again."""
        self.stats = stats or Stats()
        self.buffers = BufferPool()  # where fetched bytes land; the cache gives them back for reuse

        def boto_config(attempts: int, connections: int) -> BotoConfig:
            return BotoConfig(
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=read_timeout,
                retries={"mode": "standard", "max_attempts": attempts},
                max_pool_connections=connections,
                # S3-compatible servers (MinIO, Ceph, proxies) often reject the aws-chunked CRC uploads
                # that botocore sends by default; real AWS accepts plain bodies too.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"} if config.endpoint_url else None,
            )

        kwargs = {}
        if config.aws_id and config.aws_secret:
            kwargs = {"aws_access_key_id": config.aws_id, "aws_secret_access_key": config.aws_secret}
        session = boto3.session.Session()
        where = {"region_name": config.region or "us-east-1", "endpoint_url": config.endpoint_url or None}
        self.client = session.client("s3", config=boto_config(MAX_ATTEMPTS, other_connections), **where, **kwargs)
        self.get_client = session.client("s3", config=boto_config(1, max_connections), **where,  # retried here
                                         **kwargs)
        for client in (self.client, self.get_client):
            _bound_replies(client, CONNECT_TIMEOUT + read_timeout)
        self.read_timeout = read_timeout
        self.get_budget = 2 * (CONNECT_TIMEOUT + read_timeout)  # new attempts start only this long after progress
        self.read_bound = self.get_budget + CONNECT_TIMEOUT + read_timeout  # the longest a read waits without data
        self.watchdog = Watchdog()
        self._first_bytes: deque[float] = deque(maxlen=LATENCY_SAMPLES)  # seconds to each GET's answer
        self._first_bytes_lock = threading.Lock()  # GETs run on many threads
        self.default_bucket = config.bucket
        self._sizes: LRUCache = LRUCache(SIZE_CACHE)
        self._sizes_lock = threading.Lock()
        # told (bucket, key) whenever bpfs itself writes or deletes an object: caches of its bytes must go
        self.on_change: list[Callable[[str, str], None]] = []

    @property
    def latency(self) -> float:
        """Seconds from a GET to its answer on this link, the median of the last GETs (0: none yet). Not the
        quickest: a remote link taken for a near one would get two parts in flight where it needs ten (see
        PrefetchConfig.near_part_size), so a link counts as near only when most of its GETs say so."""
        with self._first_bytes_lock:
            samples = sorted(self._first_bytes)
        return samples[len(samples) // 2] if samples else 0.0

    def _bucket(self, bucket: str | None) -> str:
        bucket = bucket or self.default_bucket
        if not bucket:
            raise RemoteError("no S3 bucket configured (aws.s3.bucket or storage.user.settings.bucket)")
        return bucket

    def get_range(self, bucket: str | None, key: str, start: int, end: int,
                  cancelled: Callable[[], bool] | None = None,
                  arrived: Callable[[object, int], None] | None = None,
                  version: Version | None = None) -> bytearray | mmap.mmap | bytes:
        """Bytes [start, end) of an object, read straight into one buffer (no chunks to join): retried,
        resumed where a body broke off, and given up once S3 made no progress for `read_bound` seconds
        (a slow link that progresses is never cut). Shorter when the object ends sooner. `cancelled` is
        asked between chunks of the body: once it says so, the connection is closed (S3 sends no more
        bytes, and bills none) and GetCancelled raised. `arrived(buffer, n)` is told after each chunk that
        the buffer's first n bytes are final (a retry resumes after them). `version`: the object's size and
        ETag this read must find (see Version): ObjectChanged or RemoteError when it does not, never a short
        result."""
        bucket = self._bucket(bucket)
        if end <= start:
            return bytearray()
        where = f"GET s3://{bucket}/{key}"
        progress = time.monotonic()  # the last time S3 gave us a byte (or the start)
        buffer = self.buffers.take(end - start)
        view = memoryview(buffer)
        position = start
        last: BaseException | str | None = None
        tries = 0
        for attempt in range(GET_ATTEMPTS):
            if position >= end:
                break
            if cancelled is not None and cancelled():  # given up while it was being retried
                raise GetCancelled(f"{where}: nobody wants bytes {position}-{end - 1} any more")
            if attempt:
                left = progress + self.get_budget - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(0.25 * 2 ** (attempt - 1), left, 4.0))  # backoff: 0.25, 0.5, 1, 2, 4 s
            self.stats.add("s3_requests")
            tries += 1
            log.debug("GET s3://%s/%s bytes=%d-%d", bucket, key, position, end - 1)
            asked = time.monotonic()
            try:
                pinned = version.if_match() if version is not None else {}
                response = self.get_client.get_object(Bucket=bucket, Key=key, Range=f"bytes={position}-{end - 1}",
                                                      **pinned)
                with self._first_bytes_lock:
                    self._first_bytes.append(time.monotonic() - asked)
            except botocore.exceptions.ClientError as exc:
                error = self._error(exc, "GET", bucket, key)
                if isinstance(error, ObjectChanged) and version is not None:
                    version.changed = True
                    raise ObjectChanged(f"{where}: changed on the server while being read (no longer ETag "
                                        f"{version.etag}); open the file again") from None
                if isinstance(error, NotFound):
                    raise RemoteError(f"{where}: the object is missing from S3 (listed by the API, but S3 "
                                      "answers NoSuchKey)") from None
                if not self._retryable(exc):
                    raise error from None
                last = error
                continue
            except (*_CONNECT_ERRORS, botocore.exceptions.BotoCoreError) as exc:
                self.stats.add("s3_errors")
                last = exc
                continue
            except ValueError:  # botocore could not parse the answer's headers (a Content-Length that is no number)
                self.stats.add("s3_errors")
                raise RemoteError(f"{where}: S3's answer has headers that are not valid; nothing of it is served") \
                    from None
            body = response["Body"]
            try:
                promised, total = self._answered(where, response, position, end)  # where this answer ends
                if version is not None:
                    if version.size is not None and total != version.size:
                        raise RemoteError(f"{where}: S3 holds {total} bytes, {version.size} are listed: the object "
                                          f"is {'shorter' if total < version.size else 'longer'} than its listing "
                                          "says; nothing of it is served")
                    version.pin(_tag(response), where)
            except RemoteError:
                _finish(body, complete=False)  # not one byte of it is read: a 200 may be the whole object
                raise
            read_into = _reader(body, response)
            mark = position  # progress counts in PROGRESS_BYTES steps: a trickle of bytes is a stall
            stalled = lambda body=body: cut(getattr(body, "_raw_stream", None))  # noqa: E731
            token = self.watchdog.arm(progress + CONNECT_TIMEOUT + self.read_timeout, stalled)
            began, first, ask = time.monotonic(), position, 0
            try:
                while position < end:
                    if cancelled is not None and cancelled():
                        body.close()  # its buffer is freed, not pooled: nobody streams this any more
                        raise GetCancelled(f"{where}: nobody wants bytes {position}-{end - 1} any more")
                    ask = self._ask(began, first, position, ask)
                    got = read_into(view[position - start:min(end, position + ask) - start])
                    if not got:
                        if position < min(end, promised):
                            raise ConnectionError(f"the body ended at {position} of {promised}")
                        break
                    position += got
                    self.stats.add("s3_bytes_fetched", got)
                    if arrived is not None:
                        arrived(buffer, position - start)
                    if position - mark >= PROGRESS_BYTES or position >= end:
                        # enough arrived in time: a new stall bound starts now
                        mark, progress = position, time.monotonic()
                        token.extend(progress + CONNECT_TIMEOUT + self.read_timeout)
            except _BODY_ERRORS as exc:
                self.stats.add("s3_errors")
                last = exc
                log.warning("%s broke off at byte %d (%s); resuming", where, position, exc)
                body.close()
                continue
            finally:
                self.watchdog.disarm(token)
            _finish(body, complete=position >= end)
            if position < end:  # the object is shorter than we were told: stop at its end
                break
        if position < end and last is not None:
            raise RemoteError(f"{where}: S3 made no progress in {time.monotonic() - progress:.0f} s and "
                              f"{tries} attempts (at byte {position} of {start}-{end}): {last}")
        view.release()
        if position < end:  # the object ended first: the bytes it had
            return bytes(memoryview(buffer)[:position - start])
        return buffer

    @staticmethod
    def _answered(where: str, response: dict, start: int, end: int) -> tuple[int, int]:
        """(where the answer's bytes end, the object's size) of a GET of [start, end), checked: a server or proxy
        that ignored the Range (200 and the whole object) or sent another range would have its bytes served at
        the wrong offsets. A 200 is right only where the whole object was asked for (its first byte up to at
        least its end)."""
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        length = int(response.get("ContentLength") or 0)
        content_range = str(response.get("ContentRange") or "").strip()
        match = _CONTENT_RANGE.fullmatch(content_range)
        if status == 206 and match:
            first, last, total = int(match[1]), int(match[2]), int(match[3])
        elif status == 200 and start == 0 and length <= end:
            first, last, total = 0, length - 1, length
        else:
            why = " (the server or a proxy ignores Range)" if status == 200 else ""
            raise RemoteError(f"{where}: S3 answered {status} {content_range or 'without a Content-Range'} to a "
                              f"GET of bytes {start}-{end - 1}: not the range asked for{why}; nothing of it is "
                              "served")
        if first != start or last != min(end, total) - 1 or length != last + 1 - first:
            raise RemoteError(f"{where}: asked for bytes {start}-{end - 1}, S3 answered bytes {first}-{last}/{total} "
                              f"in {length} bytes; nothing of it is served")
        return last + 1, total

    def _ask(self, began: float, first: int, position: int, previous: int) -> int:
        """How much one read of a body asks for. A read returns only when its buffer is full, and progress
        counts only then: on a slow link that keeps sending, a read must fill within a quarter of the stall
        bound at the rate seen so far, or the watchdog would cut a body that is not stalled. It at most
        doubles from one read to the next (a burst is not a rate). Fast links soon ask BODY_CHUNK."""
        elapsed = time.monotonic() - began
        if not previous or elapsed <= 0:
            return PROGRESS_BYTES
        rate = (position - first) / elapsed
        return int(min(BODY_CHUNK, 2 * previous, max(PROGRESS_BYTES, rate * self.read_timeout / 4)))

    @staticmethod
    def _retryable(exc: botocore.exceptions.ClientError) -> bool:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in RETRY_STATUSES or code in ("SlowDown", "RequestTimeout", "InternalError",
                                                    "ServiceUnavailable")

    def size(self, bucket: str | None, key: str) -> int:
        """The object's length from a HEAD, cached: objects bpfs reads are immutable."""
        bucket = self._bucket(bucket)
        with self._sizes_lock:
            if (bucket, key) in self._sizes:
                return self._sizes[(bucket, key)]
        return self.head(bucket, key)[0]

    def head(self, bucket: str | None, key: str) -> tuple[int, Tag]:
        bucket = self._bucket(bucket)
        self.stats.add("s3_requests")
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise self._error(exc, "HEAD", bucket, key) from None
        except botocore.exceptions.BotoCoreError as exc:
            self.stats.add("s3_errors")
            raise RemoteError(f"HEAD s3://{bucket}/{key}: {exc}") from None
        except ValueError:  # botocore could not parse the answer's headers (a Content-Length that is no number)
            self.stats.add("s3_errors")
            raise RemoteError(f"HEAD s3://{bucket}/{key}: S3's answer has headers that are not valid") from None
        size = response.get("ContentLength")
        if not isinstance(size, int) or size < 0:
            self.stats.add("s3_errors")
            raise RemoteError(f"HEAD s3://{bucket}/{key}: S3's answer has no valid Content-Length: the size is "
                              "unknown")
        with self._sizes_lock:
            self._sizes[(bucket, key)] = size
        return size, _tag(response)

    def _error(self, exc: botocore.exceptions.ClientError, op: str, bucket: str, key: str) -> BpfsError:
        self.stats.add("s3_errors")
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        where = f"{op} s3://{bucket}/{key}"
        if code == "PreconditionFailed" or status == 412:
            return ObjectChanged(f"{where}: changed on the server (If-Match failed)")
        if code == "InvalidObjectState":
            return RemoteError(
                f"{where}: the object is in an archive storage class (GLACIER/DEEP_ARCHIVE) and must be "
                "restored before it can be read",
                errno.EIO,
            )
        if code in ("NoSuchKey", "NoSuchBucket", "404") or status == 404:
            return NotFound(f"{where}: no such object")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            return AccessDenied(f"{where}: access denied ({code})")
        return RemoteError(f"{where}: {code or status} {error.get('Message', '')}".strip())

    # -- writing (samples/new/) ----------------------------------------------------------------------
    # Uploads send no flexible checksums (request_checksum_calculation="when_required" above), so the
    # bodies are plain and S3-compatible servers that refuse aws-chunked uploads accept them.
    MAX_COPY_SIZE = 5 << 30  # CopyObject's limit for one request

    def _changed(self, bucket: str, key: str) -> None:
        with self._sizes_lock:
            self._sizes.pop((bucket, key), None)
        for listener in list(self.on_change):
            listener(bucket, key)

    def upload_args(self) -> dict:
        """Extra arguments for new objects: SSE-S3 (what the official client's `aws s3 cp --sse` asks for)
        on AWS; S3-compatible endpoints get none, since several refuse the header without a KMS set up."""
        endpoint = str(getattr(self.client.meta, "endpoint_url", "") or "")
        return {"ServerSideEncryption": "AES256"} if endpoint.endswith("amazonaws.com") else {}

    def _write_call(self, op: str, bucket: str, key: str, call, **kwargs) -> dict:
        self.stats.add("s3_requests")
        try:
            return call(Bucket=bucket, Key=key, **kwargs)
        except botocore.exceptions.ClientError as exc:
            raise self._error(exc, op, bucket, key) from None
        except botocore.exceptions.BotoCoreError as exc:
            self.stats.add("s3_errors")
            raise RemoteError(f"{op} s3://{bucket}/{key}: {exc}") from None

    def put_object(self, bucket: str | None, key: str, body: bytes | bytearray) -> None:
        """One whole object in one request (files smaller than a part, and empty ones)."""
        bucket = self._bucket(bucket)
        self._write_call("PUT", bucket, key, self.client.put_object, Body=body, **self.upload_args())
        self._changed(bucket, key)

    def create_multipart_upload(self, bucket: str | None, key: str) -> str:
        bucket = self._bucket(bucket)
        response = self._write_call("CreateMultipartUpload", bucket, key, self.client.create_multipart_upload,
                                    **self.upload_args())
        return str(response["UploadId"])

    def upload_part(self, bucket: str | None, key: str, upload_id: str, number: int, body: bytes | bytearray) -> str:
        """One part; returns its ETag (needed to complete the upload)."""
        bucket = self._bucket(bucket)
        response = self._write_call(f"UploadPart {number}", bucket, key, self.client.upload_part,
                                    UploadId=upload_id, PartNumber=number, Body=body)
        if not response.get("ETag"):  # an answer cut off in its headers (see watchdog.bounded_replies)
            self.stats.add("s3_errors")
            raise RemoteError(f"UploadPart {number} s3://{bucket}/{key}: S3's answer has no ETag (cut off?); the "
                              "part is not known to be stored")
        return str(response["ETag"])

    def complete_multipart_upload(self, bucket: str | None, key: str, upload_id: str,
                                  parts: list[tuple[int, str]]) -> None:
        bucket = self._bucket(bucket)
        layout = {"Parts": [{"PartNumber": number, "ETag": etag} for number, etag in sorted(parts)]}
        self._write_call("CompleteMultipartUpload", bucket, key, self.client.complete_multipart_upload,
                         UploadId=upload_id, MultipartUpload=layout)
        self._changed(bucket, key)

    def abort_multipart_upload(self, bucket: str | None, key: str, upload_id: str) -> None:
        bucket = self._bucket(bucket)
        self._write_call("AbortMultipartUpload", bucket, key, self.client.abort_multipart_upload, UploadId=upload_id)

    def copy_object(self, bucket: str | None, source_key: str, key: str) -> None:
        """A server-side copy inside one bucket (objects up to 5 GiB)."""
        bucket = self._bucket(bucket)
        self._write_call("COPY", bucket, key, self.client.copy_object,
                         CopySource={"Bucket": bucket, "Key": source_key}, **self.upload_args())
        self._changed(bucket, key)

    def delete_object(self, bucket: str | None, key: str) -> None:
        bucket = self._bucket(bucket)
        self._write_call("DELETE", bucket, key, self.client.delete_object)
        self._changed(bucket, key)
