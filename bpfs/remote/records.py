"""API records normalised across the v1 and v3 dialects.

v1 uses URIs as foreign keys (`/api/v1/samples/42`), naive timestamps and genome names;
v3 uses bare ids, ISO timestamps with a zone and genome ids. Everything above this module
sees one shape. `raw` keeps the record as the API sent it, for the `.json` files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

T = TypeVar("T")

TERMINAL_STATUSES = frozenset({"completed", "complete", "error", "error_code", "failed", "abort", "aborted"})


def fk_id(value: object) -> int | None:
    """A positive id from a v3 bare id, a v1 URI (`/api/v1/x/42`, absolute or not) or an embedded object."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, dict):
        return fk_id(value.get("id") or value.get("resource_uri"))
    if isinstance(value, int):
        return value if 0 < value < 1 << 63 else None
    if not isinstance(value, str):
        return None
    text = value.rstrip("/").rsplit("/", 1)[-1]
    if not text.isascii() or not text.isdigit() or text.startswith("0") or len(text) > 19:  # ids fit 64 bits
        return None
    return int(text)


def record_id(raw: dict) -> int:
    """The record's own id; a record without a positive one is malformed (it could not be reached by path)."""
    ident = fk_id(raw.get("id") if raw.get("id") is not None else raw.get("resource_uri"))
    if ident is None:
        raise ValueError(f"no valid id ({str(raw.get('id'))[:40]!r})")
    return ident


def text_field(value: object) -> str:
    """A text field; numbers become text, anything else (null, lists, objects) empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def size_field(value: object, allow_zero: bool = False) -> int | None:
    """A byte count, or None when unknown (null, a wrong type, a negative number)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if value > 0 or (allow_zero and value == 0):
        return value
    return None


def tag_field(value: object) -> frozenset[str]:
    """Tags: a list of strings; a single string is one tag; anything else none."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return frozenset()
    return frozenset(t for t in value if isinstance(t, str) and t)


def parse_time(value: object) -> float | None:
    """Seconds since the epoch from either dialect's timestamp; a naive time is UTC."""
    if not value or not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def split_s3_uri(path: str, default_bucket: str | None) -> tuple[str | None, str]:
    """(bucket, key) from a key relative to the user bucket or a full `s3://bucket/key`."""
    if path.startswith("s3://"):
        bucket, _, key = path[5:].partition("/")
        return bucket, key
    return default_bucket, path.lstrip("/")


def _each(items: list, parse: Callable[[dict], T], skipped: list[str]) -> list[T]:
    """Parse the items of a nested list (an analysis's files, a sample's uploads): a malformed item is
    skipped and noted in `skipped` (the record's `problems`, which the client logs), costing only itself."""
    out = []
    for item in items:
        if not isinstance(item, dict):
            skipped.append(f"not an object: {str(item)[:40]!r}")
            continue
        try:
            out.append(parse(item))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            skipped.append(f"id {str(item.get('id'))[:40]!r}: {exc}")
    return out


def _first_time(raw: dict, *names: str) -> float:
    for name in names:
        t = parse_time(raw.get(name))
        if t is not None:
            return t
    return 0.0


@dataclass(frozen=True)
class Genome:
    id: int
    name: str
    created: float
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: dict) -> Genome:
        return cls(
            id=record_id(raw),
            name=text_field(raw.get("name")),
            created=_first_time(raw, "created_on", "date_created", "last_updated"),
            raw=raw,
        )

    @property
    def created_text(self) -> str:
        return text_field(self.raw.get("date_created") or self.raw.get("created_on"))


@dataclass(frozen=True)
class Workflow:
    id: int
    name: str
    datatype: str
    mtime: float
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: dict) -> Workflow:
        return cls(
            id=record_id(raw),
            name=text_field(raw.get("name")),
            datatype=text_field(raw.get("datatype")),
            mtime=_first_time(raw, "last_updated", "date_created", "created_on"),
            raw=raw,
        )


@dataclass(frozen=True)
class Upload:
    id: int
    bucket: str | None
    key: str
    filesize: int | None
    order: int
    is_paired_end: bool
    status: str
    mtime: float

    @classmethod
    def parse(cls, raw: dict, default_bucket: str | None) -> Upload | None:
        """None for an upload that has no S3 object to read (an ftp:// or https:// location)."""
        location = raw.get("uri") or raw.get("key") or ""
        if not isinstance(location, str) or not location or "://" in location and not location.startswith("s3://"):
            return None
        bucket, key = split_s3_uri(location, default_bucket)
        if not key.strip("/"):
            return None
        order = raw.get("order")
        return cls(
            id=record_id(raw),
            bucket=bucket,
            key=key,
            filesize=size_field(raw.get("filesize")),
            order=order if isinstance(order, int) and not isinstance(order, bool) else 0,
            is_paired_end=raw.get("is_paired_end") is True,
            status=text_field(raw.get("status")) or "completed",
            mtime=_first_time(raw, "last_updated", "date_created"),
        )


@dataclass(frozen=True)
class Sample:
    id: int
    name: str
    datatype: str
    genome: str  # a name in v1, an id in v3 (shown by name when the API gives genome_name)
    created: float
    mtime: float
    uploads: tuple[Upload, ...] | None  # None when the record carried no uploads (a list view)
    raw: dict = field(repr=False, compare=False)
    problems: tuple[str, ...] = field(default=(), repr=False, compare=False)  # nested items skipped

    @classmethod
    def parse(cls, raw: dict, default_bucket: str | None) -> Sample:
        uploads = raw.get("uploads")
        parsed = None
        problems: list[str] = []
        if isinstance(uploads, list):
            parsed = tuple(u for u in _each(uploads, lambda x: Upload.parse(x, default_bucket), problems)
                           if u is not None)
        genome = raw.get("genome_name") or raw.get("genome")
        if isinstance(genome, dict):
            genome = genome.get("name") or genome.get("id")
        created = _first_time(raw, "date_created", "created_on", "last_updated")
        return cls(
            id=record_id(raw),
            name=text_field(raw.get("name")),
            datatype=text_field(raw.get("datatype")),
            genome=text_field(genome),
            created=created,
            mtime=_first_time(raw, "last_updated") or created,
            uploads=parsed,
            raw=raw,
            problems=tuple(problems),
        )

    @property
    def created_text(self) -> str:
        return text_field(self.raw.get("date_created") or self.raw.get("created_on"))


@dataclass(frozen=True)
class AnalysisFile:
    id: int
    bucket: str | None
    key: str
    tags: frozenset[str]
    filesize: int | None
    mtime: float

    @classmethod
    def parse(cls, raw: dict, default_bucket: str | None) -> AnalysisFile:
        path = raw.get("path")
        if not isinstance(path, str) or not path.strip("/"):
            raise ValueError(f"no valid path ({str(path)[:60]!r})")
        bucket, key = split_s3_uri(path, default_bucket)
        if not key.strip("/"):
            raise ValueError(f"no object key in path {path[:60]!r}")
        return cls(
            id=record_id(raw),
            bucket=bucket,
            key=key,
            tags=tag_field(raw.get("tags")),
            filesize=size_field(raw.get("filesize"), allow_zero=True),
            mtime=_first_time(raw, "last_updated", "date_created"),
        )

    @property
    def basename(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Analysis:
    id: int
    name: str
    status: str
    workflow: int | None
    samples: tuple[int, ...]
    owner: int | None
    created: float
    mtime: float
    bucket: str | None
    files: tuple[AnalysisFile, ...] | None  # None in list views: files come with the detail
    raw: dict = field(repr=False, compare=False)
    problems: tuple[str, ...] = field(default=(), repr=False, compare=False)  # nested items skipped

    @classmethod
    def parse(cls, raw: dict, default_bucket: str | None) -> Analysis:
        params = raw.get("params")
        info = params.get("info") if isinstance(params, dict) else None
        bucket = info.get("bucket") if isinstance(info, dict) else None
        bucket = bucket if isinstance(bucket, str) and bucket else default_bucket
        files = raw.get("files")
        parsed = None
        problems: list[str] = []
        if files is not None and not isinstance(files, list):
            raise ValueError(f"its file list is not a list ({type(files).__name__})")
        if isinstance(files, list):
            parsed = tuple(f for f in _each(files, lambda x: AnalysisFile.parse(x, bucket), problems)
                           if f is not None)
        samples = raw.get("samples")
        sample_ids = tuple(i for i in (fk_id(s) for s in samples) if i is not None) \
            if isinstance(samples, list) else ()
        created = _first_time(raw, "date_created", "created_on")
        return cls(
            id=record_id(raw),
            name=text_field(raw.get("name")),
            status=text_field(raw.get("status")),
            workflow=fk_id(raw.get("workflow")),
            samples=sample_ids,
            owner=fk_id(raw.get("owner")),
            created=created,
            mtime=_first_time(raw, "completed_on", "last_updated", "date_created", "created_on"),
            bucket=bucket,
            files=parsed,
            raw=raw,
            problems=tuple(problems),
        )

    @property
    def finished(self) -> bool:
        """Finished analyses never change again: their detail can be cached for a long time."""
        return self.status.lower() in TERMINAL_STATUSES

    @property
    def created_text(self) -> str:
        return text_field(self.raw.get("date_created") or self.raw.get("created_on"))
