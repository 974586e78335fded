"""The S3 wire format the emulator speaks, apart from the HTTP server itself: the error type, request-body
decoding (Content-Length, HTTP chunked, botocore's aws-chunked framing, Content-MD5 and flexible checksums),
Range parsing, and the few XML documents it reads and writes.

Why so much body decoding: botocore's default uploads (since 1.36) send CRC32 checksums, over TLS as
aws-chunked bodies with a trailer; the emulator must accept them like S3 does, and verify them, so that the
project's uploads are tested against what S3 would check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import formatdate
from http import HTTPStatus
from typing import BinaryIO
from xml.sax.saxutils import escape

BLOCK = 1 << 20  # request bodies are read and hashed in blocks of this size
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


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


class FramingError(S3Error):
    """The request body can't be delimited (bad or missing framing): the rest of the stream can't be parsed
    as the next request, so the connection must be closed after the error response."""


def _incomplete(message: str) -> FramingError:
    return FramingError(400, "IncompleteBody", message)


# ------------------------------------------------------------------------------------------ request bodies


class Pace:
    """Keeps one transfer at `rate` bytes/s (a real S3 link gives one connection ~50-100 MB/s): move at most
    `slice(n)` bytes at a time, then `step(moved)` sleeps until the schedule allows more.  `rate` None or 0
    means unpaced: `slice` passes n through and `step` never sleeps."""

    SLICE = 256 * 1024

    def __init__(self, rate: float | None) -> None:
        self.rate = rate or None
        self.done = 0
        self.started = time.monotonic()

    def slice(self, n: int) -> int:
        return min(n, self.SLICE) if self.rate else n

    def step(self, n: int) -> None:
        self.done += n
        if self.rate and (ahead := self.done / self.rate - (time.monotonic() - self.started)) > 0:
            time.sleep(ahead)


class _LengthReader(io.RawIOBase):
    """A body delimited by Content-Length."""

    def __init__(self, f: BinaryIO, length: int, pace: Pace | None = None) -> None:
        self._f = f
        self._left = length
        self._pace = pace or Pace(None)
        self.trailers: dict[str, str] = {}  # only aws-chunked framing inside the body can fill them
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        view = memoryview(b)[: self._pace.slice(min(len(b), self._left))]
        n = self._f.readinto(view)
        if not n:
            raise _incomplete(f"request body ended {self._left} bytes early")
        self._left -= n
        self.consumed += n
        self._pace.step(n)
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

    def __init__(self, f: BinaryIO, pace: Pace | None = None) -> None:
        self._f = f
        self._left = 0
        self._done = False
        self._pace = pace or Pace(None)
        self.trailers: dict[str, str] = {}
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
        view = memoryview(b)[: self._pace.slice(min(len(b), self._left))]
        n = self._f.readinto(view)
        if not n:
            raise _incomplete("request body ended inside a chunk")
        self._left -= n
        self.consumed += n
        self._pace.step(n)
        if self._left == 0 and self._f.readline(3) not in (b"\r\n", b"\n"):
            raise _incomplete("chunk not followed by CRLF")
        return n


BodyReader = _LengthReader | _ChunkedReader


def body_reader(
    rfile: BinaryIO, headers: Message, require_length: bool = True, bandwidth: float | None = None
) -> BodyReader:
    """The request body as the HTTP framing delimits it (chunked, else Content-Length; missing and not required
    means empty).  Its `consumed` counts the bytes read off the socket, `trailers` collects trailer fields.
    `bandwidth` (bytes/s) reads it no faster than that, like an upload over a real S3 link."""
    pace = Pace(bandwidth)
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return _ChunkedReader(rfile, pace)
    length = headers.get("Content-Length")
    if length is None and not require_length:
        length = "0"
    if length is None or not length.strip().isdigit():
        raise FramingError(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
    return _LengthReader(rfile, int(length), pace)


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


def _iter_plain(raw: BodyReader) -> Iterator[memoryview]:
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    while n := raw.readinto(view):
        yield view[:n]


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
class Received:
    """What arrived in a request body."""

    size: int
    md5: str  # hex
    checksum: tuple[str, str] | None  # (header name, base64 value) to echo back


def receive_body(raw: BodyReader, headers: Message, dest: BinaryIO) -> Received:
    """Stream the body into `dest` with aws-chunked framing removed, computing its MD5 and verifying
    Content-MD5 and the flexible checksum (header or trailer).  FramingError while the body is being read,
    plain S3Error when it arrived whole but is wrong."""
    aws_chunked = (
        "aws-chunked" in headers.get("Content-Encoding", "").lower()
        or headers.get("x-amz-content-sha256", "").upper().startswith("STREAMING-")
    )
    algorithm = (headers.get("x-amz-sdk-checksum-algorithm") or "").lower()
    if not algorithm:
        for name in [headers.get("x-amz-trailer", "")] + list(headers.keys()):
            if name.lower().startswith("x-amz-checksum-") and name.lower() not in _CHECKSUM_NON_VALUES:
                algorithm = name.lower().removeprefix("x-amz-checksum-")
                break
    checker = _CHECKSUMS.get(algorithm, lambda: None)()
    trailers = raw.trailers
    md5 = hashlib.md5()
    size = 0
    if aws_chunked:
        blocks = _iter_aws_chunked(io.BufferedReader(raw, BLOCK), trailers)
    else:
        blocks = _iter_plain(raw)
    for block in blocks:
        md5.update(block)
        if checker is not None:
            checker.update(block)  # type: ignore[attr-defined]
        dest.write(block)
        size += len(block)
    if aws_chunked:  # the terminating HTTP chunk and its trailers, if any
        while raw.readinto(bytearray(4096)):
            pass

    decoded_length = headers.get("x-amz-decoded-content-length")
    if aws_chunked and decoded_length and decoded_length.strip() != str(size):
        raise S3Error(400, "IncompleteBody", f"decoded length {size} != x-amz-decoded-content-length {decoded_length}")
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
                    400, "BadDigest", f"The {algorithm.upper()} you specified did not match the calculated checksum."
                )
        if claimed is not None:
            echo = (name, claimed.strip())
    return Received(size, md5.hexdigest(), echo)


def flexible_checksum_marker(headers: Message) -> str | None:
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


def user_metadata(headers: Message) -> dict[str, str]:
    """The x-amz-meta-* headers, without the prefix."""
    return {
        name.lower().removeprefix("x-amz-meta-"): value
        for name, value in headers.items()
        if name.lower().startswith("x-amz-meta-")
    }


# ----------------------------------------------------------------------------------------- GET semantics


def parse_range(header: str, size: int) -> tuple[int, int] | None:
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


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match list ('*', quoted or W/ tags, comma-separated) names this ETag."""
    wanted = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return "*" in wanted or etag.strip('"') in wanted


# ---------------------------------------------------------------------------------------------------- XML


def iso_time(t: float) -> str:
    """A timestamp as S3's XML documents write it (ISO 8601, milliseconds, Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def http_date(t: float) -> str:
    return formatdate(t, usegmt=True)


def xml_el(tag: str, value: object) -> str:
    """<tag>value</tag>, value escaped."""
    return f"<{tag}>{escape(str(value))}</{tag}>"


def xml_doc(root: str, inner: str) -> bytes:
    """A response document in S3's namespace around already-rendered `inner` elements."""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NS}">{inner}</{root}>'.encode()


def error_doc(err: S3Error, resource: str, request_id: str) -> bytes:
    """S3's <Error> document (no namespace, as S3 sends it)."""
    extra = "".join(xml_el(k, v) for k, v in err.extra.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(err.code)}</Code>'
        f"<Message>{escape(err.message)}</Message>{extra}<Resource>{escape(resource)}</Resource>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()


def parse_xml(body: bytes) -> ET.Element:
    """Parse a request document with namespaces stripped from the tags."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed") from None
    for el in root.iter():
        el.tag = el.tag.rsplit("}", 1)[-1]
    return root
