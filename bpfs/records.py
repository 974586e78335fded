"""API records normalised across the v1 and v3 dialects.

v1 uses URIs as foreign keys (`/api/v1/samples/42`), naive timestamps and genome names;
v3 uses bare ids, ISO timestamps with a zone and genome ids. Everything above this module
sees one shape. `raw` keeps the record as the API sent it, for the `.json` files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

TERMINAL_STATUSES = frozenset({"completed", "complete", "error", "error_code", "failed", "abort", "aborted"})


def fk_id(value: object) -> int | None:
    """An id from a v3 bare id, a v1 URI (`/api/v1/x/42`, absolute or not) or an embedded object."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return fk_id(value.get("id") or value.get("resource_uri"))
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).rstrip("/").rsplit("/", 1)[-1]
    try:
        return int(text)
    except ValueError:
        return None


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
            id=fk_id(raw.get("id") or raw.get("resource_uri")) or 0,
            name=str(raw.get("name") or ""),
            created=_first_time(raw, "created_on", "date_created", "last_updated"),
            raw=raw,
        )

    @property
    def created_text(self) -> str:
        return str(self.raw.get("date_created") or self.raw.get("created_on") or "")


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
            id=fk_id(raw.get("id") or raw.get("resource_uri")) or 0,
            name=str(raw.get("name") or ""),
            datatype=str(raw.get("datatype") or ""),
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
        size = raw.get("filesize")
        return cls(
            id=fk_id(raw.get("id") or raw.get("resource_uri")) or 0,
            bucket=bucket,
            key=key,
            filesize=size if isinstance(size, int) and size > 0 else None,
            order=int(raw.get("order") or 0),
            is_paired_end=bool(raw.get("is_paired_end")),
            status=str(raw.get("status") or "completed"),
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

    @classmethod
    def parse(cls, raw: dict, default_bucket: str | None) -> Sample:
        uploads = raw.get("uploads")
        parsed = None
        if isinstance(uploads, list) and all(isinstance(u, dict) for u in uploads):
            parsed = tuple(u for u in (Upload.parse(x, default_bucket) for x in uploads) if u is not None)
        genome = raw.get("genome_name") or raw.get("genome")
        if isinstance(genome, dict):
            genome = genome.get("name") or genome.get("id")
        created = _first_time(raw, "date_created", "created_on", "last_updated")
        return cls(
            id=fk_id(raw.get("id") or raw.get("resource_uri")) or 0,
            name=str(raw.get("name") or ""),
            datatype=str(raw.get("datatype") or ""),
            genome="" if genome is None else str(genome),
            created=created,
            mtime=_first_time(raw, "last_updated") or created,
            uploads=parsed,
            raw=raw,
        )

    @property
    def created_text(self) -> str:
        return str(self.raw.get("date_created") or self.raw.get("created_on") or "")


@dataclass(frozen=True)
class AnalysisFile:
    id: int
    bucket: str | None
    key: str
    tags: frozenset[str]
    filesize: int | None
    mtime: float

    @classmethod
    def parse(cls, raw: dict, default_bucket: str | None) -> AnalysisFile | None:
        path = raw.get("path")
        if not isinstance(path, str) or not path.strip("/"):
            return None
        bucket, key = split_s3_uri(path, default_bucket)
        tags = raw.get("tags") or ()
        size = raw.get("filesize")
        return cls(
            id=fk_id(raw.get("id") or raw.get("resource_uri")) or 0,
            bucket=bucket,
            key=key,
            tags=frozenset(str(t) for t in tags if t not in (None, "")),
            filesize=size if isinstance(size, int) and size >= 0 else None,
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

    @classmethod
    def parse(cls, raw: dict, default_bucket: str | None) -> Analysis:
        info = (raw.get("params") or {}).get("info") or {} if isinstance(raw.get("params"), dict) else {}
        bucket = info.get("bucket") if isinstance(info, dict) else None
        bucket = bucket or default_bucket
        files = raw.get("files")
        parsed = None
        if isinstance(files, list):
            parsed = tuple(
                f for f in (AnalysisFile.parse(x, bucket) for x in files if isinstance(x, dict)) if f is not None
            )
        samples = tuple(i for i in (fk_id(s) for s in raw.get("samples") or ()) if i is not None)
        created = _first_time(raw, "date_created", "created_on")
        return cls(
            id=fk_id(raw.get("id") or raw.get("resource_uri")) or 0,
            name=str(raw.get("name") or ""),
            status=str(raw.get("status") or ""),
            workflow=fk_id(raw.get("workflow")),
            samples=samples,
            owner=fk_id(raw.get("owner")),
            created=created,
            mtime=_first_time(raw, "completed_on", "last_updated", "date_created", "created_on"),
            bucket=bucket,
            files=parsed,
            raw=raw,
        )

    @property
    def finished(self) -> bool:
        """Finished analyses never change again: their detail can be cached for a long time."""
        return self.status.lower() in TERMINAL_STATUSES

    @property
    def created_text(self) -> str:
        return str(self.raw.get("date_created") or self.raw.get("created_on") or "")
