"""The emulator's S3 server, driven by real boto3 clients: what bpfs and boto3's transfer manager rely on
(ranges, If-Match, multipart with botocore's checksum modes, copies) and the faults tests inject."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import threading
import time
import zlib
from base64 import b64encode
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import boto3
import botocore.httpchecksum
import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ResponseStreamingError,
)
from urllib3.exceptions import ProtocolError

from bpfs.emulator.faults import Faults
from bpfs.emulator.s3server import MIN_PART_SIZE, ObjectStore, S3Server

BUCKET = "bucket"
MiB = 1024 * 1024
NO_RETRIES = {"retries": {"total_max_attempts": 1}}  # {"max_attempts": 1} would still allow one retry
WHEN_REQUIRED = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
PARTS_8MIB = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)


def make_client(server: S3Server, **config):
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(**config),
    )


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def sent_headers(client) -> list[tuple[str, str, dict[str, str]]]:
    """(method, url, headers) of every request the client sends from now on."""
    seen: list[tuple[str, str, dict[str, str]]] = []

    def record(request, **_) -> None:
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        seen.append((request.method, request.url, headers))

    client.meta.events.register("before-send.s3", record)
    return seen


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    store = ObjectStore(tmp_path / "s3")
    store.create_bucket(BUCKET)
    return store


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def server(store: ObjectStore, faults: Faults):
    server = S3Server(store, faults=faults).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def legacy_server(store: ObjectStore):
    """A server that, like some S3-compatible stores, refuses aws-chunked bodies and flexible checksums."""
    server = S3Server(store, accept_aws_chunked=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(server: S3Server):
    return make_client(server)


@pytest.fixture
def aws_chunked_uploads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make botocore upload as it does over TLS: aws-chunked bodies with a trailing CRC32 (over plain http it
    puts the checksum in a header instead)."""
    monkeypatch.setattr(botocore.httpchecksum, "urlparse", lambda url: urlparse(url.replace("http:", "https:", 1)))


def big_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        for _ in range(size // (16 * MiB)):
            f.write(os.urandom(16 * MiB))
        f.write(os.urandom(size % (16 * MiB)))
    return path


# ------------------------------------------------------------------------------------------------ basics


def test_put_get_head_round_trip(server: S3Server, store: ObjectStore, client) -> None:
    data = os.urandom(100_000)
    put = client.put_object(Bucket=BUCKET, Key="dir/obj.bin", Body=data, ContentType="application/x-test",
                            Metadata={"origin": "test"})
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert put["ETag"] == etag
    got = client.get_object(Bucket=BUCKET, Key="dir/obj.bin")
    assert got["Body"].read() == data
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["ETag"] == etag and got["ContentLength"] == len(data)
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"origin": "test"}
    head = client.head_object(Bucket=BUCKET, Key="dir/obj.bin")
    assert head["ContentLength"] == len(data) and head["ETag"] == etag and head["AcceptRanges"] == "bytes"
    assert abs(head["LastModified"].timestamp() - time.time()) < 5
    assert "StorageClass" not in head  # STANDARD is implied, as on S3
    assert store.get_bytes(BUCKET, "dir/obj.bin") == data and store.size(BUCKET, "dir/obj.bin") == len(data)
    assert store.path(BUCKET, "dir/obj.bin").read_bytes() == data
    assert store.exists(BUCKET, "dir/obj.bin") and store.keys(BUCKET) == ["dir/obj.bin"]
    client.put_object(Bucket=BUCKET, Key="dir/obj.bin", Body=b"replaced")
    assert client.get_object(Bucket=BUCKET, Key="dir/obj.bin")["Body"].read() == b"replaced"
    client.delete_object(Bucket=BUCKET, Key="dir/obj.bin")
    assert not store.exists(BUCKET, "dir/obj.bin")
    with pytest.raises(KeyError):
        store.path(BUCKET, "dir/obj.bin")
    client.delete_object(Bucket=BUCKET, Key="dir/obj.bin")  # idempotent, like S3


def test_store_put_moves_a_file_in(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "seed.bin"
    src.write_bytes(b"seed data")
    store.put("other-bucket", "seed", src, storage_class="STANDARD_IA")
    assert not src.exists()
    assert store.get_bytes("other-bucket", "seed") == b"seed data"
    assert store.info("other-bucket", "seed").etag == f'"{hashlib.md5(b"seed data").hexdigest()}"'
    with pytest.raises(TypeError):
        store.put(BUCKET, "k", "a str is neither bytes nor a path")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        store.get_bytes(BUCKET, "missing")
    with pytest.raises(KeyError):
        store.size("no-such-bucket", "k")


def test_a_reopened_store_finds_its_objects(tmp_path: Path) -> None:
    first = ObjectStore(tmp_path / "s3")
    first.put(BUCKET, "a/b.txt", b"one")
    first.put(BUCKET, "ünï köy", b"two")
    again = ObjectStore(tmp_path / "s3")
    assert again.keys(BUCKET) == ["a/b.txt", "ünï köy"]
    assert again.get_bytes(BUCKET, "ünï köy") == b"two"
    assert again.info(BUCKET, "a/b.txt").etag == first.info(BUCKET, "a/b.txt").etag


def test_buckets(server: S3Server, store: ObjectStore) -> None:
    """Buckets are made on the store; over HTTP a missing one is NoSuchBucket."""
    client = make_client(server, **NO_RETRIES)
    for call in (
        lambda: client.get_object(Bucket="second", Key="k"),
        lambda: client.put_object(Bucket="second", Key="k", Body=b"x" * 100_000),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_code(excinfo) == ("NoSuchBucket", 404)
    store.create_bucket("second")
    store.create_bucket("second")  # idempotent
    client.put_object(Bucket="second", Key="k", Body=b"x")
    assert store.get_bytes("second", "k") == b"x" and store.keys(BUCKET) == []
    with pytest.raises(ValueError):
        store.create_bucket(".tmp")


def test_unused_operations_are_not_implemented(server: S3Server, store: ObjectStore) -> None:
    """Only what the project uses is served; the rest says so instead of answering something plausible."""
    store.put(BUCKET, "k", b"data")
    client = make_client(server, **NO_RETRIES)
    for call in (
        client.list_buckets,
        lambda: client.list_objects_v2(Bucket=BUCKET),
        lambda: client.head_bucket(Bucket=BUCKET),
        lambda: client.get_object_acl(Bucket=BUCKET, Key="k"),
        lambda: client.list_parts(Bucket=BUCKET, Key="k", UploadId="u"),
        lambda: client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "k"}]}),
        lambda: client.get_object(Bucket=BUCKET, Key="k", ResponseContentType="text/plain"),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert store.get_bytes(BUCKET, "k") == b"data"


def test_missing_objects(client) -> None:
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=BUCKET, Key="nope")
    assert error_code(excinfo) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as excinfo:
        client.head_object(Bucket=BUCKET, Key="nope")
    assert error_code(excinfo) == ("404", 404)  # HEAD errors have no body: botocore only sees the status


# ------------------------------------------------------------------------------------------------ ranges

RANGE_DATA = bytes(range(256)) * 4  # 1024 bytes


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=0-9", 0, 10),  # first bytes
        ("bytes=100-199", 100, 200),  # middle
        ("bytes=-10", 1014, 1024),  # suffix
        ("bytes=1000-", 1000, 1024),  # open-ended
        ("bytes=1000-5000", 1000, 1024),  # end past EOF is clamped
        ("bytes=-5000", 0, 1024),  # suffix longer than the object
        ("bytes=1023-1023", 1023, 1024),
    ],
)
def test_range_get(client, store: ObjectStore, header: str, start: int, end: int) -> None:
    store.put(BUCKET, "r", RANGE_DATA)
    got = client.get_object(Bucket=BUCKET, Key="r", Range=header)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["Body"].read() == RANGE_DATA[start:end]
    assert got["ContentRange"] == f"bytes {start}-{end - 1}/1024" and got["ContentLength"] == end - start


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range(client, store: ObjectStore, header: str) -> None:
    store.put(BUCKET, "r", RANGE_DATA)
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=BUCKET, Key="r", Range=header)
    assert error_code(excinfo) == ("InvalidRange", 416)


def test_no_or_invalid_range_gets_everything(client, store: ObjectStore) -> None:
    store.put(BUCKET, "r", RANGE_DATA)
    for kwargs in ({}, {"Range": "bytes=9-3"}, {"Range": "bytes=0-1,5-6"}):
        got = client.get_object(Bucket=BUCKET, Key="r", **kwargs)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 200 and got["Body"].read() == RANGE_DATA


def test_a_range_get_sends_only_the_range(server: S3Server, client, store: ObjectStore, tmp_path: Path) -> None:
    path = big_file(tmp_path / "big", 64 * MiB)
    expected = path.read_bytes()[32 * MiB : 33 * MiB]
    store.put(BUCKET, "big", path)
    server.reset_stats()
    got = client.get_object(Bucket=BUCKET, Key="big", Range=f"bytes={32 * MiB}-{33 * MiB - 1}")
    assert got["Body"].read() == expected
    assert server.stats["get_requests"] == 1 and server.stats["requests"] == 1
    assert MiB <= server.stats["bytes_sent"] < MiB + 4096


def test_parallel_range_gets(server: S3Server, store: ObjectStore, tmp_path: Path) -> None:
    path = big_file(tmp_path / "big", 64 * MiB)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    store.put(BUCKET, "big", path)
    client = make_client(server, max_pool_connections=16)
    part = 4 * MiB

    def fetch(i: int) -> bytes:
        return client.get_object(Bucket=BUCKET, Key="big", Range=f"bytes={i * part}-{(i + 1) * part - 1}")[
            "Body"
        ].read()

    with ThreadPoolExecutor(16) as pool:
        pieces = list(pool.map(fetch, range(16)))
    assert hashlib.sha256(b"".join(pieces)).hexdigest() == digest
    assert server.stats["bytes_sent"] == 64 * MiB


def test_if_match(client, store: ObjectStore) -> None:
    """boto3's download_file pins the object with If-Match on every range GET."""
    store.put(BUCKET, "c", b"content")
    etag = store.info(BUCKET, "c").etag
    assert client.get_object(Bucket=BUCKET, Key="c", IfMatch=etag)["Body"].read() == b"content"
    assert client.get_object(Bucket=BUCKET, Key="c", IfMatch=etag, Range="bytes=3-")["Body"].read() == b"tent"
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=BUCKET, Key="c", IfMatch='"0123"')
    assert error_code(excinfo) == ("PreconditionFailed", 412)


def test_bandwidth_paces_bodies(server: S3Server, client, store: ObjectStore) -> None:
    """`bandwidth` caps each response body (bytes/s); a range is paced by its own size; None lifts the cap."""
    store.put(BUCKET, "k", os.urandom(2 * MiB))
    client.head_object(Bucket=BUCKET, Key="k")  # connect first

    def timed_get(**kwargs) -> float:
        start = time.monotonic()
        client.get_object(Bucket=BUCKET, Key="k", **kwargs)["Body"].read()
        return time.monotonic() - start

    server.bandwidth = 5e6
    floor = (2 * MiB - 256 * 1024) / 5e6  # ~0.37 s: the last 256 KiB slice leaves before the pause
    assert timed_get() >= floor
    assert timed_get(Range="bytes=0-99999") < floor / 2
    server.bandwidth = None
    assert timed_get() < floor / 2


def test_bandwidth_paces_uploads(server: S3Server, client, store: ObjectStore, tmp_path: Path) -> None:
    """`bandwidth` also caps what a PutObject or UploadPart body is read at; small XML bodies are not paced."""
    data = os.urandom(2 * MiB)
    client.put_object(Bucket=BUCKET, Key="warm", Body=b"x")  # connect first

    def timed(fn) -> float:
        start = time.monotonic()
        fn()
        return time.monotonic() - start

    server.bandwidth = 5e6
    floor = (2 * MiB - 256 * 1024) / 5e6  # ~0.37 s
    assert timed(lambda: client.put_object(Bucket=BUCKET, Key="p", Body=data)) >= floor
    assert store.get_bytes(BUCKET, "p") == data
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key="m")["UploadId"]
    assert timed(lambda: client.upload_part(Bucket=BUCKET, Key="m", UploadId=upload_id, PartNumber=1,
                                            Body=data)) >= floor
    client.abort_multipart_upload(Bucket=BUCKET, Key="m", UploadId=upload_id)
    server.bandwidth = None
    assert timed(lambda: client.put_object(Bucket=BUCKET, Key="p", Body=data)) < floor / 2


def test_latency_delays_every_request(server: S3Server, client, store: ObjectStore) -> None:
    """`latency` is waited once per request: before a GET's first byte, before an upload body is read."""
    store.put(BUCKET, "k", b"content")
    client.get_object(Bucket=BUCKET, Key="k")["Body"].read()  # connect first

    def timed(fn) -> float:
        start = time.monotonic()
        fn()
        return time.monotonic() - start

    server.latency = 0.2
    assert 0.2 <= timed(lambda: client.get_object(Bucket=BUCKET, Key="k")["Body"].read()) < 0.7
    assert 0.2 <= timed(lambda: client.head_object(Bucket=BUCKET, Key="k")) < 0.7
    assert 0.2 <= timed(lambda: client.put_object(Bucket=BUCKET, Key="p", Body=os.urandom(MiB))) < 0.7
    server.latency = 0.0
    assert timed(lambda: client.get_object(Bucket=BUCKET, Key="k")["Body"].read()) < 0.2


# --------------------------------------------------------------------------------------------- multipart


@pytest.mark.parametrize("method", ["upload_fileobj", "upload_file"])
@pytest.mark.parametrize("checksums", ["default", "when_required", "default+aws-chunked"])
def test_multipart_upload(
    server: S3Server, store: ObjectStore, tmp_path: Path, request: pytest.FixtureRequest, method: str, checksums: str
) -> None:
    if checksums.endswith("aws-chunked"):
        request.getfixturevalue("aws_chunked_uploads")
    client = make_client(server, **(WHEN_REQUIRED if checksums == "when_required" else {}))
    seen = sent_headers(client)
    data = os.urandom(20 * MiB + 12345)
    if method == "upload_fileobj":
        client.upload_fileobj(io.BytesIO(data), BUCKET, "mp/object", Config=PARTS_8MIB)
    else:
        (tmp_path / "upload").write_bytes(data)
        client.upload_file(str(tmp_path / "upload"), BUCKET, "mp/object", Config=PARTS_8MIB)
    assert store.get_bytes(BUCKET, "mp/object") == data
    head = client.head_object(Bucket=BUCKET, Key="mp/object")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    part_md5s = b"".join(hashlib.md5(data[i : i + 8 * MiB]).digest() for i in range(0, len(data), 8 * MiB))
    assert head["ETag"] == f'"{hashlib.md5(part_md5s).hexdigest()}-3"'
    assert server.multipart_uploads == {}
    assert server.stats["put_requests"] == 3 and server.stats["post_requests"] == 2
    parts = [h for m, url, h in seen if m == "PUT" and "partNumber" in url]
    assert len(parts) == 3
    if checksums == "when_required":
        assert not any(k.lower().startswith("x-amz-checksum") for h in parts for k in h)
    elif checksums == "default":
        assert all("x-amz-checksum-crc32" in h for h in parts)
    else:
        assert all(h.get("Content-Encoding") == "aws-chunked" for h in parts)
    assert list((store.root / ".mpu").iterdir()) == [] and list((store.root / ".tmp").iterdir()) == []


@pytest.mark.usefixtures("aws_chunked_uploads")
def test_aws_chunked_put_object_stores_the_payload(server: S3Server, store: ObjectStore) -> None:
    client = make_client(server)
    seen = sent_headers(client)
    data = os.urandom(3 * MiB + 7)
    put = client.put_object(Bucket=BUCKET, Key="chunked", Body=io.BytesIO(data))
    assert seen[-1][2]["Content-Encoding"] == "aws-chunked"
    assert seen[-1][2]["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert store.get_bytes(BUCKET, "chunked") == data
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert put["ChecksumCRC32"] == b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.mark.parametrize("aws_chunked", [False, True])
def test_legacy_server_needs_when_required(
    legacy_server: S3Server, store: ObjectStore, request: pytest.FixtureRequest, aws_chunked: bool
) -> None:
    """accept_aws_chunked=False: botocore's default uploads fail with InvalidArgument, "when_required" works."""
    if aws_chunked:
        request.getfixturevalue("aws_chunked_uploads")
    data = os.urandom(20 * MiB)
    default = make_client(legacy_server, **NO_RETRIES)
    with pytest.raises(ClientError) as excinfo:
        default.upload_fileobj(io.BytesIO(data), BUCKET, "legacy", Config=PARTS_8MIB)
    assert error_code(excinfo) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as excinfo:
        default.put_object(Bucket=BUCKET, Key="legacy", Body=io.BytesIO(data[:MiB]))
    assert error_code(excinfo) == ("InvalidArgument", 400)
    assert not store.exists(BUCKET, "legacy") and legacy_server.multipart_uploads == {}

    workaround = make_client(legacy_server, **NO_RETRIES, **WHEN_REQUIRED)
    workaround.upload_fileobj(io.BytesIO(data), BUCKET, "legacy", Config=PARTS_8MIB)
    assert store.get_bytes(BUCKET, "legacy") == data
    workaround.put_object(Bucket=BUCKET, Key="small", Body=b"small")
    assert workaround.get_object(Bucket=BUCKET, Key="small")["Body"].read() == b"small"


def test_abort_removes_the_upload(server: S3Server, client, store: ObjectStore) -> None:
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key="aborted")["UploadId"]
    etag = client.upload_part(Bucket=BUCKET, Key="aborted", UploadId=upload_id, PartNumber=1, Body=b"x" * 1000)["ETag"]
    state = server.multipart_uploads[upload_id]
    assert (state.bucket, state.key, list(state.parts)) == (BUCKET, "aborted", [1])
    assert state.parts[1].path.read_bytes() == b"x" * 1000 and state.parts[1].etag == etag
    client.abort_multipart_upload(Bucket=BUCKET, Key="aborted", UploadId=upload_id)
    assert upload_id not in server.multipart_uploads and not state.directory.exists()
    for call in (
        lambda: client.upload_part(Bucket=BUCKET, Key="aborted", UploadId=upload_id, PartNumber=2, Body=b"y"),
        lambda: client.complete_multipart_upload(
            Bucket=BUCKET, Key="aborted", UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
        ),
        lambda: client.abort_multipart_upload(Bucket=BUCKET, Key="aborted", UploadId=upload_id),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_code(excinfo) == ("NoSuchUpload", 404)
    assert not store.exists(BUCKET, "aborted")


def test_complete_validates_parts(server: S3Server, client, store: ObjectStore) -> None:
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key="mp", StorageClass="STANDARD_IA")["UploadId"]

    def upload(number: int, body: bytes) -> dict:
        etag = client.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=number, Body=body)["ETag"]
        return {"PartNumber": number, "ETag": etag}

    def complete(parts: list[dict]) -> tuple[str, int]:
        with pytest.raises(ClientError) as excinfo:
            client.complete_multipart_upload(
                Bucket=BUCKET, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        return error_code(excinfo)

    small = [upload(1, b"1" * MiB), upload(2, b"2" * MiB)]
    assert complete(small) == ("EntityTooSmall", 400)
    assert upload_id in server.multipart_uploads  # a failed completion leaves the upload open, as on S3
    assert complete([small[0], {"PartNumber": 2, "ETag": '"00000000000000000000000000000000"'}]) == ("InvalidPart", 400)
    assert complete([small[0], {"PartNumber": 3, "ETag": small[1]["ETag"]}]) == ("InvalidPart", 400)
    assert complete([small[1], small[0]]) == ("InvalidPartOrder", 400)
    first = b"A" * MIN_PART_SIZE
    parts = [upload(1, first), small[1]]  # a re-uploaded part replaces the old one; the last may be small
    done = client.complete_multipart_upload(
        Bucket=BUCKET, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    expected_etag = hashlib.md5(hashlib.md5(first).digest() + hashlib.md5(b"2" * MiB).digest()).hexdigest()
    assert done["ETag"] == f'"{expected_etag}-2"'
    assert store.get_bytes(BUCKET, "mp") == first + b"2" * MiB
    assert client.head_object(Bucket=BUCKET, Key="mp")["StorageClass"] == "STANDARD_IA"
    assert server.multipart_uploads == {}


# ----------------------------------------------------------------------------------- storage classes


def test_archived_objects_cannot_be_read(client, store: ObjectStore) -> None:
    store.put(BUCKET, "cold", b"frozen", storage_class="GLACIER")
    client.put_object(Bucket=BUCKET, Key="colder", Body=b"deep", StorageClass="DEEP_ARCHIVE")
    for key, storage_class in (("cold", "GLACIER"), ("colder", "DEEP_ARCHIVE")):
        head = client.head_object(Bucket=BUCKET, Key=key)
        assert head["StorageClass"] == storage_class
        with pytest.raises(ClientError) as excinfo:
            client.get_object(Bucket=BUCKET, Key=key)
        assert error_code(excinfo) == ("InvalidObjectState", 403)
        with pytest.raises(ClientError) as excinfo:
            client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-1")
        assert error_code(excinfo) == ("InvalidObjectState", 403)
    store.set_storage_class(BUCKET, "cold", "STANDARD")  # "restored"
    assert client.get_object(Bucket=BUCKET, Key="cold")["Body"].read() == b"frozen"


# ------------------------------------------------------------------------------------------------ faults


def test_fault_status_is_seen_by_the_client(server: S3Server, faults: Faults, store: ObjectStore) -> None:
    store.put(BUCKET, "k", b"data")
    client = make_client(server, **NO_RETRIES)
    faults.add(method="GET", path=f"/{BUCKET}/k$", status=503, code="SlowDown")
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=BUCKET, Key="k")
    assert error_code(excinfo) == ("SlowDown", 503)
    assert client.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"data"  # times=1: consumed
    faults.add(method="GET", status=403)
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=BUCKET, Key="k")
    assert error_code(excinfo) == ("AccessDenied", 403)
    faults.add(method="HEAD", status=500, code="InternalError")
    with pytest.raises(ClientError) as excinfo:
        client.head_object(Bucket=BUCKET, Key="k")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_default_retries_absorb_one_slowdown(server: S3Server, faults: Faults, store: ObjectStore) -> None:
    store.put(BUCKET, "k", b"data")
    rule = faults.add(method="GET", path="/k$", status=503, code="SlowDown")
    assert make_client(server).get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"data"
    assert rule.hits == 1 and server.stats["get_requests"] == 2


def test_fault_on_upload(server: S3Server, faults: Faults, store: ObjectStore) -> None:
    """An error before the body is read: 100 Continue is never sent, and the next upload works."""
    client = make_client(server, **NO_RETRIES)
    faults.add(method="PUT", status=500, code="InternalError")
    with pytest.raises(ClientError) as excinfo:
        client.put_object(Bucket=BUCKET, Key="up", Body=os.urandom(2 * MiB))
    assert error_code(excinfo) == ("InternalError", 500)
    assert not store.exists(BUCKET, "up")
    data = os.urandom(2 * MiB)
    client.put_object(Bucket=BUCKET, Key="up", Body=data)
    assert store.get_bytes(BUCKET, "up") == data


def test_fault_delay(server: S3Server, faults: Faults, store: ObjectStore, client) -> None:
    store.put(BUCKET, "k", b"data")
    faults.add(method="GET", delay=0.3)
    start = time.monotonic()
    assert client.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"data"
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    client.get_object(Bucket=BUCKET, Key="k")["Body"].read()
    assert time.monotonic() - start < 0.3


def test_fault_drop_after_truncates_the_body(server: S3Server, faults: Faults, store: ObjectStore) -> None:
    data = os.urandom(MiB)
    store.put(BUCKET, "k", data)
    client = make_client(server, **NO_RETRIES)
    faults.add(method="GET", drop_after=1000)
    server.reset_stats()
    got = client.get_object(Bucket=BUCKET, Key="k")
    assert got["ContentLength"] == MiB  # the headers promise everything
    with pytest.raises((ResponseStreamingError, IncompleteReadError, ProtocolError)):
        got["Body"].read()
    assert server.stats["bytes_sent"] == 1000
    assert client.get_object(Bucket=BUCKET, Key="k")["Body"].read() == data


# ------------------------------------------------------------------------------------ awkward objects


def test_zero_byte_objects(client, store: ObjectStore) -> None:
    client.put_object(Bucket=BUCKET, Key="empty", Body=b"")
    client.upload_fileobj(io.BytesIO(b""), BUCKET, "empty2", Config=PARTS_8MIB)
    store.put(BUCKET, "empty3", b"")
    for key in ("empty", "empty2", "empty3"):
        got = client.get_object(Bucket=BUCKET, Key=key)
        assert got["Body"].read() == b"" and got["ContentLength"] == 0
        head = client.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == 0 and head["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"'
        with pytest.raises(ClientError) as excinfo:
            client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-")
        assert error_code(excinfo) == ("InvalidRange", 416)
    assert [store.size(BUCKET, k) for k in store.keys(BUCKET)] == [0, 0, 0]


AWKWARD_KEYS = [
    "dir with space/file name.txt",
    "ünïcödé/日本語/ファイル.bin",
    "a+b=c&d?e#f%g;h,i:j@k",
    "trailing/",
    "trailing",
    "//double//slash",
    "ctrl\x01char\ttab",
    "~tilde*star'quote\"(x)",
    "x" * 1000,
    "deep/" * 150 + "end",
]


def test_awkward_keys(client, store: ObjectStore) -> None:
    for i, key in enumerate(AWKWARD_KEYS):
        client.put_object(Bucket=BUCKET, Key=key, Body=f"{i}".encode())
    for i, key in enumerate(AWKWARD_KEYS):
        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == f"{i}".encode(), key
        assert client.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(f"{i}")
        path = store.path(BUCKET, key)
        assert path.parent == store.root / BUCKET and len(path.name) <= 255
    assert len({store.path(BUCKET, key) for key in AWKWARD_KEYS}) == len(AWKWARD_KEYS)
    assert store.keys(BUCKET) == sorted(AWKWARD_KEYS)
    assert store.keys(BUCKET, "ünïcödé/") == ["ünïcödé/日本語/ファイル.bin"]
    for key in AWKWARD_KEYS:
        client.delete_object(Bucket=BUCKET, Key=key)
    assert store.keys(BUCKET) == [] and list((store.root / BUCKET).iterdir()) == []


@pytest.mark.parametrize("key", [".", "..", "../escape", "a/../b"])
def test_dot_keys_stay_inside_the_bucket(store: ObjectStore, key: str) -> None:
    store.put(BUCKET, key, b"dots")
    assert store.path(BUCKET, key).parent == store.root / BUCKET
    assert store.get_bytes(BUCKET, key) == b"dots" and store.keys(BUCKET) == [key]


def test_copy_object(client, store: ObjectStore) -> None:
    store.put(BUCKET, "src", b"copied", metadata={"m": "1"})
    client.copy_object(Bucket=BUCKET, Key="dst", CopySource={"Bucket": BUCKET, "Key": "src"})
    assert store.get_bytes(BUCKET, "dst") == b"copied"
    assert client.head_object(Bucket=BUCKET, Key="dst")["Metadata"] == {"m": "1"}
    assert store.info(BUCKET, "dst").etag == store.info(BUCKET, "src").etag
    store.set_storage_class(BUCKET, "src", "GLACIER")
    with pytest.raises(ClientError) as excinfo:
        client.copy_object(Bucket=BUCKET, Key="dst2", CopySource={"Bucket": BUCKET, "Key": "src"})
    assert error_code(excinfo) == ("InvalidObjectState", 403)
    with pytest.raises(ClientError) as excinfo:
        client.copy_object(Bucket=BUCKET, Key="dst2", CopySource={"Bucket": BUCKET, "Key": "missing"})
    assert error_code(excinfo) == ("NoSuchKey", 404)
    assert store.keys(BUCKET) == ["dst", "src"]


# ---------------------------------------------------------------------------------------- raw protocol


def raw_request(server: S3Server, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def aws_chunked(data: bytes, chunk: int, trailer: str | None = None, signed: bool = False) -> bytes:
    ext = ";chunk-signature=" + "0" * 64 if signed else ""
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(data[i : i + chunk]), ext.encode(), data[i : i + chunk])
                   for i in range(0, len(data), chunk))
    out += b"0%s\r\n" % ext.encode()
    if trailer:
        out += trailer.encode() + b"\r\n"
    return out + b"\r\n"


def test_signed_aws_chunked_body_with_content_length(server: S3Server, store: ObjectStore) -> None:
    data = os.urandom(300_000)
    body = aws_chunked(data, 65536, signed=True)
    status, _, _ = raw_request(server, "PUT", f"/{BUCKET}/signed", body, {
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(len(body)),
    })
    assert status == 200 and store.get_bytes(BUCKET, "signed") == data


def test_checksums_are_verified(server: S3Server, store: ObjectStore) -> None:
    data = b"checked payload"
    good = b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    headers = {"Content-Encoding": "aws-chunked", "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
               "x-amz-trailer": "x-amz-checksum-crc32", "x-amz-decoded-content-length": str(len(data))}
    status, _, body = raw_request(server, "PUT", f"/{BUCKET}/c", aws_chunked(data, 4, "x-amz-checksum-crc32:AAAAAA=="),
                                  headers)
    assert status == 400 and b"<Code>BadDigest</Code>" in body and not store.exists(BUCKET, "c")
    status, reply, _ = raw_request(server, "PUT", f"/{BUCKET}/c", aws_chunked(data, 4, f"x-amz-checksum-crc32:{good}"),
                                   headers)
    assert status == 200 and reply["x-amz-checksum-crc32"] == good and store.get_bytes(BUCKET, "c") == data
    status, _, body = raw_request(server, "PUT", f"/{BUCKET}/m", data, {"Content-MD5": b64encode(b"x" * 16).decode()})
    assert status == 400 and b"<Code>BadDigest</Code>" in body
    status, _, _ = raw_request(server, "PUT", f"/{BUCKET}/m", data,
                               {"Content-MD5": b64encode(hashlib.md5(data).digest()).decode()})
    assert status == 200


def test_plain_http_chunked_body(server: S3Server, store: ObjectStore) -> None:
    data = os.urandom(200_000)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("PUT", f"/{BUCKET}/te", body=iter([data[:70_000], data[70_000:]]), encode_chunked=True)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert store.get_bytes(BUCKET, "te") == data


def test_presigned_urls(server: S3Server, client, store: ObjectStore) -> None:
    put_url = client.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "pre signed"})
    assert requests.put(put_url, data=b"via url", timeout=10).status_code == 200
    get_url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "pre signed"})
    assert requests.get(get_url, timeout=10).content == b"via url"
    assert requests.get(get_url, headers={"Range": "bytes=4-"}, timeout=10).content == b"url"


def test_legacy_server_rejects_aws_chunked(legacy_server: S3Server, store: ObjectStore) -> None:
    status, _, body = raw_request(legacy_server, "PUT", f"/{BUCKET}/c", aws_chunked(b"abc", 2),
                                  {"Content-Encoding": "aws-chunked"})
    assert status == 400 and b"<Code>InvalidArgument</Code>" in body and not store.exists(BUCKET, "c")
    assert raw_request(legacy_server, "PUT", f"/{BUCKET}/c", b"abc")[0] == 200


def test_expect_continue_is_answered_only_when_the_body_is_wanted(server: S3Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"PUT /no-such-bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):  # the server closes: the unread body makes the connection unusable
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 404") and b"NoSuchBucket" in reply and b"100 Continue" not in reply
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(f"PUT /{BUCKET}/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n".encode()
                     + b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


# ------------------------------------------------------------------------------------------- lifecycle


def test_lifecycle(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        S3Server(store, host="0.0.0.0")
    store.put(BUCKET, "k", b"data")
    server = S3Server(store).start()
    assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
    client = make_client(server, **NO_RETRIES)
    client.head_object(Bucket=BUCKET, Key="k")  # leaves a pooled keep-alive connection
    done = threading.Event()
    threading.Thread(target=lambda: (server.stop(), done.set()), daemon=True).start()
    assert done.wait(5), "stop() hung on an idle keep-alive connection"
    server.stop()  # idempotent
    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        client.head_object(Bucket=BUCKET, Key="k")
