"""Clients for in-process tests: the real `ApiClient` and `ObjectClient`, with only their transport
replaced, so every line of bpfs above the socket runs as in a mount.

- `InProcessApi` sends each request straight into the emulator's API server (`ApiServer.respond`, no
  socket): the same records, faults and reply transforms as over HTTP.
- `FakeBoto` stands in for boto3's S3 client over the emulator's object store.

Both count calls per operation (`calls`) and fail on command with a countdown (`fail(...)`), as
mountpoint-s3's mock and failure clients do.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import botocore.exceptions
from requests.structures import CaseInsensitiveDict

from bpfs.remote.api import ApiClient, Reply
from bpfs.remote.config import Config
from bpfs.remote.s3 import ObjectClient
from bpfs.stats import Stats


@dataclass
class Countdown:
    """Fail the next `times` calls that match (None: until cleared)."""

    operation: str  # an API method ("GET") or an S3 operation ("upload_part"); "*" for any
    pattern: str  # regex searched in the resource (API) or the key (S3)
    times: int | None
    status: int
    code: str

    def take(self, operation: str, target: str) -> bool:
        if self.operation not in ("*", operation) or not re.search(self.pattern, target):
            return False
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


class _Failures:
    def __init__(self) -> None:
        self._rules: list[Countdown] = []
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def fail(self, operation: str, pattern: str = "", times: int | None = 1, status: int = 500,
             code: str = "InternalError") -> Countdown:
        rule = Countdown(operation, pattern, times, status, code)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def check(self, operation: str, target: str) -> Countdown | None:
        with self._lock:
            self.calls[operation] += 1
            for rule in self._rules:
                if rule.take(operation, target):
                    return rule
        return None


class InProcessApi(ApiClient):
    def __init__(self, config: Config, server: Any, stats: Stats | None = None) -> None:
        super().__init__(config, stats)
        self.server = server  # the emulator's ApiServer
        self.failures = _Failures()
        self.calls = self.failures.calls  # "GET samples", "POST uploads", ...

    def fail(self, method: str, pattern: str = "", times: int | None = 1, status: int = 500) -> Countdown:
        return self.failures.fail(method, pattern, times, status, "injected")

    def exchange(self, method: str, resource: str, url: str, query: dict, body: Any) -> tuple[Reply, bytes]:
        kind = resource.strip("/").split("/")[0]
        rule = self.failures.check(method, resource)
        self.calls[f"{method} {kind}"] += 1
        if rule is not None:
            payload = {"errors": [{"detail": f"injected failure {rule.status}"}]}
            return Reply(rule.status, CaseInsensitiveDict()), json.dumps(payload).encode()
        raw = b"" if body is None else json.dumps(body).encode()
        status, payload, headers, drop_after = self.server.respond(method, urlsplit(url).path, urlencode(query), raw)
        content = payload if isinstance(payload, bytes) else \
            b"" if payload is None or status == 204 else json.dumps(payload).encode()
        if drop_after is not None:
            content = content[:drop_after]
        headers = CaseInsensitiveDict(headers)
        return Reply(status, headers, status in (301, 302, 303, 307, 308) and "Location" in headers), content


class _Body:
    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, amount: int | None = None) -> bytes:
        return self._stream.read(amount)

    def close(self) -> None:
        self._stream.close()


class FakeBoto:
    """The few S3 calls bpfs makes, over the emulator's ObjectStore, with boto3's errors."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.failures = _Failures()
        self.calls = self.failures.calls
        self.multipart: dict[str, tuple[str, str, dict[int, bytes]]] = {}
        self.ranges: list[tuple[str, int, int]] = []  # (key, start, end) of every range GET
        self.put_arguments: list[dict] = []  # the extra arguments of every object written (SSE...)
        self.meta = type("Meta", (), {"endpoint_url": "http://in-process.invalid"})()
        self._lock = threading.Lock()

    def fail(self, operation: str, pattern: str = "", times: int | None = 1, status: int = 500,
             code: str = "InternalError") -> Countdown:
        return self.failures.fail(operation, pattern, times, status, code)

    @staticmethod
    def _error(operation: str, status: int, code: str) -> botocore.exceptions.ClientError:
        return botocore.exceptions.ClientError(
            {"Error": {"Code": code, "Message": "injected" if code == "InternalError" else code},
             "ResponseMetadata": {"HTTPStatusCode": status}}, operation)

    def _check(self, operation: str, key: str) -> None:
        rule = self.failures.check(operation, key)
        if rule is not None:
            raise self._error(operation, rule.status, rule.code)

    def _info(self, operation: str, bucket: str, key: str) -> Any:
        try:
            return self.store.info(bucket, key)
        except (KeyError, FileNotFoundError, LookupError):
            raise self._error(operation, 404, "NoSuchKey") from None

    def get_object(self, Bucket: str, Key: str, Range: str | None = None,  # noqa: N803 - boto3's names
                   IfMatch: str | None = None) -> dict:  # noqa: N803
        self._check("get_object", Key)
        info = self._info("GetObject", Bucket, Key)
        if getattr(info, "storage_class", "STANDARD") in ("GLACIER", "DEEP_ARCHIVE"):
            raise self._error("GetObject", 403, "InvalidObjectState")
        if IfMatch is not None and IfMatch.strip('"') != info.etag.strip('"'):
            raise self._error("GetObject", 412, "PreconditionFailed")
        data = self.store.get_bytes(Bucket, Key)
        answer: dict[str, Any] = {"ResponseMetadata": {"HTTPStatusCode": 200}, "ETag": info.etag}
        if Range:  # as S3: 206 and a Content-Range; 416 when the range starts past the end
            first, _, last = Range.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) + 1 if last else len(data), len(data))
            with self._lock:
                self.ranges.append((Key, start, int(last) + 1 if last else len(data)))
            if start >= len(data):
                raise self._error("GetObject", 416, "InvalidRange")
            answer = {**answer, "ResponseMetadata": {"HTTPStatusCode": 206},
                      "ContentRange": f"bytes {start}-{end - 1}/{len(data)}"}
            data = data[start:end]
        return {**answer, "Body": _Body(data), "ContentLength": len(data)}

    def head_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        self._check("head_object", Key)
        info = self._info("HeadObject", Bucket, Key)
        return {"ContentLength": info.size, "ETag": info.etag}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **extra: Any) -> dict:  # noqa: N803
        self._check("put_object", Key)
        self.put_arguments.append(extra)
        body = _bytes(Body)
        self.store.put(Bucket, Key, body)
        return {"ETag": hashlib.md5(body).hexdigest()}

    def create_multipart_upload(self, Bucket: str, Key: str, **extra: Any) -> dict:  # noqa: N803
        self._check("create_multipart_upload", Key)
        self.put_arguments.append(extra)
        upload_id = uuid.uuid4().hex
        with self._lock:
            self.multipart[upload_id] = (Bucket, Key, {})
        return {"UploadId": upload_id}

    def upload_part(self, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: bytes) -> dict:  # noqa: N803
        self._check("upload_part", Key)
        with self._lock:
            if UploadId not in self.multipart:
                raise self._error("UploadPart", 404, "NoSuchUpload")
            part = self.multipart[UploadId][2][PartNumber] = _bytes(Body)
        return {"ETag": hashlib.md5(part).hexdigest()}

    def complete_multipart_upload(self, Bucket: str, Key: str, UploadId: str, MultipartUpload: dict) -> dict:  # noqa: N803
        self._check("complete_multipart_upload", Key)
        with self._lock:
            if UploadId not in self.multipart:
                raise self._error("CompleteMultipartUpload", 404, "NoSuchUpload")
            _, _, parts = self.multipart.pop(UploadId)
        numbers = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        self.store.put(Bucket, Key, b"".join(parts[n] for n in numbers))
        return {}

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str) -> dict:  # noqa: N803
        self._check("abort_multipart_upload", Key)
        with self._lock:
            if self.multipart.pop(UploadId, None) is None:
                raise self._error("AbortMultipartUpload", 404, "NoSuchUpload")
        return {}

    def copy_object(self, Bucket: str, Key: str, CopySource: dict, **_: Any) -> dict:  # noqa: N803
        self._check("copy_object", Key)
        self.store.put(Bucket, Key, self.store.get_bytes(CopySource["Bucket"], CopySource["Key"]))
        return {}

    def delete_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        self._check("delete_object", Key)
        if self.store.exists(Bucket, Key):
            self.store.delete(Bucket, Key)
        return {}


def in_process_objects(config: Config, store: Any, stats: Stats, read_timeout: float = 20.0) -> ObjectClient:
    """The real ObjectClient (retries, resumes, errno mapping) over a FakeBoto."""
    objects = ObjectClient(config, stats, read_timeout=read_timeout)
    fake = FakeBoto(store)
    objects.client = objects.get_client = fake  # type: ignore[assignment]
    objects.fake = fake  # type: ignore[attr-defined]
    return objects


def _bytes(body: Any) -> bytes:
    """A body as botocore takes it: bytes, or a file (a part filled on disk) read from where it stands."""
    return bytes(body) if isinstance(body, bytes | bytearray | memoryview) else body.read()
