"""S3 access: range GETs, HEADs and multipart uploads, with errors mapped to errno.

botocore does the retries (standard mode, with backoff) and the timeouts. A body that
breaks off in the middle is resumed here from the byte where it stopped, since botocore
retries only up to the moment the response headers arrive.
"""

from __future__ import annotations

import errno
import logging
import threading

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig

from bpfs.config import Config
from bpfs.errors import AccessDenied, BpfsError, NotFound, RemoteError
from bpfs.stats import Stats

log = logging.getLogger("bpfs.s3")

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20  # per socket read; a stalled server costs at most this per attempt
MAX_ATTEMPTS = 3  # botocore's count includes the first try: a stalled GET costs at most 3 * (5 s + READ_TIMEOUT)
BODY_RESUMES = 3  # a body cut off mid-stream is re-requested from where it stopped this many times
ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})
_BODY_ERRORS = (
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ConnectionClosedError,
    ConnectionError,
    TimeoutError,
)


class ObjectClient:
    """The only place that talks to S3; one instance is shared by all handles (boto3 clients are thread-safe)."""

    def __init__(self, config: Config, stats: Stats | None = None, max_connections: int = 32,
                 read_timeout: float = READ_TIMEOUT) -> None:
        self.stats = stats or Stats()
        boto_config = BotoConfig(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            max_pool_connections=max_connections,
            # S3-compatible servers (MinIO, Ceph, proxies) often reject the aws-chunked CRC uploads
            # that botocore sends by default; real AWS accepts plain bodies too.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if config.endpoint_url else None,
        )
        kwargs = {}
        if config.aws_id and config.aws_secret:
            kwargs = {"aws_access_key_id": config.aws_id, "aws_secret_access_key": config.aws_secret}
        self.client = boto3.session.Session().client(
            "s3",
            region_name=config.region or "us-east-1",
            endpoint_url=config.endpoint_url or None,
            config=boto_config,
            **kwargs,
        )
        self.default_bucket = config.bucket
        self._sizes: dict[tuple[str, str], int] = {}
        self._sizes_lock = threading.Lock()

    def _bucket(self, bucket: str | None) -> str:
        bucket = bucket or self.default_bucket
        if not bucket:
            raise RemoteError("no S3 bucket configured (aws.s3.bucket or storage.user.settings.bucket)")
        return bucket

    def get_range(self, bucket: str | None, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object, resuming a body that breaks off."""
        bucket = self._bucket(bucket)
        if end <= start:
            return b""
        chunks: list[bytes] = []
        position = start
        resumes = 0
        while position < end:
            self.stats.add("s3_requests")
            log.debug("GET s3://%s/%s bytes=%d-%d", bucket, key, position, end - 1)
            try:
                response = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={position}-{end - 1}")
            except botocore.exceptions.ClientError as exc:
                raise self._error(exc, "GET", bucket, key) from None
            except botocore.exceptions.BotoCoreError as exc:
                self.stats.add("s3_errors")
                raise RemoteError(f"GET s3://{bucket}/{key}: {exc}") from None
            body = response["Body"]
            try:
                while position < end:
                    chunk = body.read(min(1 << 20, end - position))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    position += len(chunk)
                    self.stats.add("s3_bytes_fetched", len(chunk))
            except _BODY_ERRORS as exc:
                resumes += 1
                self.stats.add("s3_errors")
                if resumes > BODY_RESUMES:
                    raise RemoteError(f"GET s3://{bucket}/{key}: body broke off {resumes} times ({exc})") from None
                log.warning("GET s3://%s/%s broke off at byte %d (%s); resuming", bucket, key, position, exc)
                continue
            finally:
                body.close()
            if position < end:  # the object is shorter than we were told: stop at its end
                break
        return b"".join(chunks)

    def size(self, bucket: str | None, key: str) -> int:
        """The object's length from a HEAD, cached: objects bpfs reads are immutable."""
        bucket = self._bucket(bucket)
        with self._sizes_lock:
            if (bucket, key) in self._sizes:
                return self._sizes[(bucket, key)]
        self.stats.add("s3_requests")
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise self._error(exc, "HEAD", bucket, key) from None
        except botocore.exceptions.BotoCoreError as exc:
            self.stats.add("s3_errors")
            raise RemoteError(f"HEAD s3://{bucket}/{key}: {exc}") from None
        size = int(response["ContentLength"])
        with self._sizes_lock:
            self._sizes[(bucket, key)] = size
        return size

    def _error(self, exc: botocore.exceptions.ClientError, op: str, bucket: str, key: str) -> BpfsError:
        self.stats.add("s3_errors")
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        where = f"{op} s3://{bucket}/{key}"
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
        with self._sizes_lock:
            self._sizes.pop((bucket, key), None)

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
        return str(response["ETag"])

    def complete_multipart_upload(self, bucket: str | None, key: str, upload_id: str,
                                  parts: list[tuple[int, str]]) -> None:
        bucket = self._bucket(bucket)
        layout = {"Parts": [{"PartNumber": number, "ETag": etag} for number, etag in sorted(parts)]}
        self._write_call("CompleteMultipartUpload", bucket, key, self.client.complete_multipart_upload,
                         UploadId=upload_id, MultipartUpload=layout)
        with self._sizes_lock:
            self._sizes.pop((bucket, key), None)

    def abort_multipart_upload(self, bucket: str | None, key: str, upload_id: str) -> None:
        bucket = self._bucket(bucket)
        self._write_call("AbortMultipartUpload", bucket, key, self.client.abort_multipart_upload, UploadId=upload_id)

    def copy_object(self, bucket: str | None, source_key: str, key: str) -> None:
        """A server-side copy inside one bucket (objects up to 5 GiB)."""
        bucket = self._bucket(bucket)
        self._write_call("COPY", bucket, key, self.client.copy_object,
                         CopySource={"Bucket": bucket, "Key": source_key}, **self.upload_args())
        with self._sizes_lock:
            self._sizes.pop((bucket, key), None)

    def delete_object(self, bucket: str | None, key: str) -> None:
        bucket = self._bucket(bucket)
        self._write_call("DELETE", bucket, key, self.client.delete_object)
        with self._sizes_lock:
            self._sizes.pop((bucket, key), None)
