"""Path → entry: the tree of the contract, built from the catalog's records.

Directories are built as whole name → Entry maps from one listing (so `ls -l` costs no
request per entry) and memoised on the identity of the listing they came from: a new
listing after its TTL builds a new map, the same listing reuses the old one.

One bad item costs that item: a file whose size S3 will not tell, or that S3 lacks, is
listed and fails with EIO and its reason; every name listed reaches its entry.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from cachetools import LRUCache

from bpfs.errors import AccessDenied, BpfsError, NotFound, RemoteError
from bpfs.nodes import BytesHandle, Entry, Handle, Subtree, directory, generated
from bpfs.reading.reader import Reader, ReaderFactory
from bpfs.remote.records import Analysis, AnalysisFile, Sample
from bpfs.remote.s3 import ObjectClient
from bpfs.stats import Stats
from bpfs.tree import tags as tagexpr
from bpfs.tree.catalog import Catalog
from bpfs.tree.names import safe_name, unique_in, unique_names

log = logging.getLogger("bpfs.namespace")

INDEX_SUFFIXES = (".bai", ".csi", ".crai", ".tbi", ".fai")
XATTR = "user.basepair."  # extended attributes: what a file is, without opening a JSON (dxfuse does the same)
HEAD_WORKERS = 8  # parallel HEADs for sizes the API left out: an analysis of 200 such files lists in ~25 round trips


_dir = directory
_generated = generated


def _pretty_json(record: dict) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode()


def _tsv(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> bytes:
    def cell(value: Any) -> str:
        return " ".join(str("" if value is None else value).split())

    lines = ["\t".join(header)] + ["\t".join(cell(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


class _Memo:
    """Derived views keyed on the identity of the listing they were built from; a view holding broken
    entries (a failed HEAD) is rebuilt after `retry_after` seconds, so a blip does not last a day."""

    def __init__(self, maxsize: int = 4096, retry_after: float = 60.0) -> None:
        self._views: LRUCache = LRUCache(maxsize)
        self._lock = threading.Lock()
        self.retry_after = retry_after

    def get(self, key: Any, source: Any, build: Callable[[], Any]) -> Any:
        with self._lock:
            held = self._views.get(key)
        if held is not None and held[0] is source:
            if not getattr(held[1], "broken", 0) or time.monotonic() - held[2] < self.retry_after:
                return held[1]
        view = build()
        with self._lock:
            self._views[key] = (source, view, time.monotonic())
        return view


class ObjectHandle(Handle):
    """An S3 object being read, through its read-ahead state."""

    def __init__(self, path: str, reader: Reader, immutable: bool, direct_io: bool = False) -> None:
        super().__init__(path)
        self.reader = reader
        self.keep_cache = immutable and not direct_io  # finished analyses never change: the kernel may keep their pages
        self.direct_io = direct_io  # -o direct_io (see MountOptions)

    def read(self, size: int, offset: int) -> bytes:
        return self.reader.read(offset, size)

    def release(self) -> None:
        self.reader.close()


class Namespace(Subtree):
    """The read-only tree of the account, built from the catalog's records. Thread-safe: FUSE calls it
    from many threads. `rmdir samples/<id>` and `rmdir analyses/<id>` delete, under -o allow_delete,
    through the `deleters` the drop boxes provide (they know what is in flight)."""

    def __init__(self, catalog: Catalog, objects: ObjectClient, readers: ReaderFactory, stats: Stats,
                 ro: bool = False, allow_delete: bool = False,
                 deleters: dict[str, Callable[[int], None]] | None = None,
                 head_workers: int = HEAD_WORKERS, retry_broken: float = 60.0, direct_io: bool = False) -> None:
        super().__init__(ro)
        self.catalog, self.objects, self.readers, self.stats = catalog, objects, readers, stats
        self.allow_delete, self.deleters = allow_delete, deleters or {}
        self.user_id = catalog.api.user_id
        self.genome_date_field = catalog.api.dialect.genome_date_field
        self.memo = _Memo(retry_after=retry_broken)
        self.direct_io = direct_io
        self.started = time.time()
        self.heads = ThreadPoolExecutor(head_workers, thread_name_prefix="bpfs-head")

    def close(self) -> None:
        self.heads.shutdown(wait=False, cancel_futures=True)
        self.readers.close()

    # -- the subtree interface ---------------------------------------------------------------------
    def getattr(self, path: str) -> Entry:
        return self.lookup(path)

    def readdir(self, path: str) -> dict[str, Entry]:
        return self.listdir(path)

    def open(self, path: str, flags: int, caller: int | None) -> Handle:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_CREAT):
            raise self.refuse(path, "open for writing")
        entry = self.lookup(path)
        if entry.is_dir:
            raise BpfsError(f"{path}: is a directory", errno.EISDIR)
        if entry.error:
            raise RemoteError(f"{path}: {entry.error}")
        if entry.data is not None:
            return BytesHandle(path, entry.data)
        return ObjectHandle(path, self.readers.open(entry.bucket, entry.key or "", entry.size), entry.immutable,
                            self.direct_io)

    def rmdir(self, path: str) -> None:
        names = self._parts(path)
        if self.ro or len(names) != 2 or names[0] not in self.deleters or canonical_id(names[1]) is None:
            raise self.refuse(path, "rmdir")
        if not self.allow_delete:
            kind = "a sample" if names[0] == "samples" else "an analysis"
            raise AccessDenied(f"{path}: deleting {kind} needs the mount option allow_delete")
        self.lookup(path)  # ENOENT for what does not exist
        self.deleters[names[0]](canonical_id(names[1]))

    # -- paths -------------------------------------------------------------------------------------
    def lookup(self, path: str) -> Entry:
        parts = self._parts(path)
        if not parts:
            return _dir(self.started)
        parent = self.children("/" + "/".join(parts[:-1]), for_lookup=parts[-1])
        entry = parent.get(parts[-1])
        if entry is None:
            raise NotFound(f"{path}: no such file or directory")
        return entry

    def listdir(self, path: str) -> dict[str, Entry]:
        return self.children(path)

    def refresh(self, path: str = "/") -> None:
        """Drop cached listings: all of them, those of one top-level directory, or one analysis or sample."""
        parts = self._parts(path)
        if not parts:
            self.catalog.refresh()
        elif parts[0] in ("analyses", "samples") and len(parts) > 1 and canonical_id(parts[1]) is not None:
            self.catalog.refresh(parts[0], canonical_id(parts[1]))
        elif parts[0] in ("genomes", "workflows", "samples", "analyses"):
            self.catalog.refresh(parts[0])

    @staticmethod
    def _parts(path: str) -> list[str]:
        return [p for p in path.split("/") if p]

    def children(self, path: str, for_lookup: str | None = None) -> dict[str, Entry]:
        """The name → Entry map of a directory. `for_lookup` names the one child a lookup wants: tag
        expressions then resolve without being listed, and big listings may be served from the previous
        copy while a fresh one loads."""
        parts = self._parts(path)
        if not parts:
            return self._root()
        top, rest = parts[0], parts[1:]
        if top == "genomes" and not rest:
            return self._genomes_dir()
        if top == "workflows" and not rest:
            return self._workflows_dir()
        if top == "samples":
            if not rest:
                return self._listing_for(self._samples_dir, for_lookup)
            if len(rest) == 1:
                return self._sample_dir(rest[0], path)
        if top == "analyses":
            if not rest:
                return self._listing_for(self._analyses_dir, for_lookup)
            return self._analysis_subdir(rest, path, for_lookup)
        raise NotFound(f"{path}: no such directory")

    @staticmethod
    def _listing_for(build: Callable[[bool], dict[str, Entry]], for_lookup: str | None) -> dict[str, Entry]:
        """A lookup of one child directory takes the previous listing if it holds that child (no wait for a
        reload after `refresh` or a TTL). Anything else waits for the current listing: a child not in the
        previous one, and generated files such as index.tsv, whose content *is* the listing."""
        if for_lookup is not None:
            previous = build(True)
            entry = previous.get(for_lookup)
            if entry is not None and entry.is_dir:
                return previous
        return build(False)

    # -- directories -----------------------------------------------------------------------------
    def _root(self) -> dict[str, Entry]:
        return {name: _dir(self.started) for name in ("genomes", "workflows", "samples", "analyses")}

    @staticmethod
    def _newest(times: Iterable[float], default: float) -> float:
        return max((t for t in times if t), default=default)

    def _genomes_dir(self) -> dict[str, Entry]:
        genomes = self.catalog.genomes()

        def build() -> dict[str, Entry]:
            mtime = self._newest((g.created for g in genomes), self.started)
            out = {"index.tsv": _generated(
                _tsv(("id", "name", self.genome_date_field), ((g.id, g.name, g.created_text) for g in genomes)),
                mtime)}
            names = unique_names(((g.name + ".json", g.id) for g in genomes), reserved=("index.tsv",))
            for name, genome in zip(names, genomes, strict=True):
                out[name] = _generated(_pretty_json(genome.raw), genome.created or mtime)
            return out

        return self.memo.get("genomes", genomes, build)

    def _workflows_dir(self) -> dict[str, Entry]:
        workflows = self.catalog.workflows()

        def build() -> dict[str, Entry]:
            mtime = self._newest((w.mtime for w in workflows), self.started)
            out = {"index.tsv": _generated(
                _tsv(("id", "name", "datatype"), ((w.id, w.name, w.datatype) for w in workflows)), mtime)}
            for w in workflows:
                out[f"{w.id}.json"] = _generated(_pretty_json(w.raw), w.mtime or mtime)
            return out

        return self.memo.get("workflows", workflows, build)

    def _samples_dir(self, stale_ok: bool = False) -> dict[str, Entry]:
        samples = self.catalog.samples(stale_ok=stale_ok)

        return self.memo.get("samples", samples, lambda: self._index_dir(
            samples, ("id", "name", "datatype", "genome", "date_created"),
            lambda s: (s.id, s.name, s.datatype, s.genome, s.created_text),
            lambda s: ((f"{XATTR}genome", s.genome), (f"{XATTR}datatype", s.datatype))))

    def _index_dir(self, records: list, header: tuple[str, ...], row: Callable[[Any], tuple],
                   attrs: Callable[[Any], tuple[tuple[str, str], ...]]) -> dict[str, Entry]:
        """samples/ and analyses/: an index.tsv, and one directory per record, named by its id."""
        mtime = self._newest((r.mtime for r in records), self.started)
        out = {"index.tsv": _generated(_tsv(header, (row(r) for r in records)), mtime)}
        for r in records:
            out[str(r.id)] = directory(r.mtime or mtime, xattrs=attrs(r))
        return out

    def _find_sample(self, name: str, path: str) -> Sample:
        sample_id = canonical_id(name)
        if sample_id is None:
            raise NotFound(f"{path}: no such sample")
        listed = next((s for s in self.catalog.samples() if s.id == sample_id), None)
        if listed is not None and listed.uploads is not None:
            return listed
        try:
            return self.catalog.sample(sample_id)  # a list view without uploads, or created after the listing
        except NotFound:
            if listed is None:
                raise NotFound(f"{path}: no such sample") from None
        raise self._missing_detail("sample", sample_id, path, self.catalog.samples_changed, self.catalog.samples)

    def _sample_dir(self, name: str, path: str) -> dict[str, Entry]:
        sample = self._find_sample(name, path)

        def build() -> SampleView:
            return SampleView(sample, self)

        return self.memo.get(("sample", sample.id), sample, build).entries

    def _analyses_dir(self, stale_ok: bool = False) -> dict[str, Entry]:
        analyses = self.catalog.analyses(stale_ok=stale_ok)

        return self.memo.get("analyses", analyses, lambda: self._index_dir(
            analyses, ("id", "name", "status", "workflow", "samples", "date_created"),
            lambda a: (a.id, a.name, a.status, a.workflow or "", ",".join(map(str, a.samples)), a.created_text),
            lambda a: ((f"{XATTR}status", a.status), (f"{XATTR}workflow", str(a.workflow or "")))))

    def _analysis(self, name: str, path: str) -> Analysis:
        analysis_id = canonical_id(name)
        if analysis_id is None:
            raise NotFound(f"{path}: no such analysis")
        try:
            return self.catalog.analysis(analysis_id)
        except NotFound:
            if not any(a.id == analysis_id for a in self.catalog.analyses(stale_ok=True)):
                raise NotFound(f"{path}: no such analysis") from None
        raise self._missing_detail("analysis", analysis_id, path, self.catalog.analyses_changed, self.catalog.analyses)

    @staticmethod
    def _missing_detail(kind: str, record_id: int, path: str, changed: Callable[[int], None],
                        listing: Callable[[], list]) -> BpfsError:
        """Listed, yet its detail is 404: deleted meanwhile (ENOENT), or a broken server (EIO). Ask the
        listing again to tell which; never answer a listed directory with an empty one."""
        changed(record_id)
        if any(r.id == record_id for r in listing()):
            return RemoteError(f"{path}: the API lists {kind} {record_id} but answers 404 for its detail")
        return NotFound(f"{path}: no such {kind}")

    def _analysis_subdir(self, rest: list[str], path: str, for_lookup: str | None) -> dict[str, Entry]:
        analysis = self._analysis(rest[0], path)
        view = self.memo.get(("analysis", analysis.id), analysis, lambda: AnalysisView(analysis, self))
        if len(rest) == 1:
            if for_lookup is not None and for_lookup not in view.top:
                expression = view.expression_dir(for_lookup)
                return {for_lookup: _dir(view.mtime)} if expression is not None else view.top
            return view.top
        if rest[1] == "all":
            node = view.all_tree
            for part in rest[2:]:
                node = node.get(part) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    raise NotFound(f"{path}: no such directory")
            return {name: (_dir(view.mtime) if isinstance(child, dict) else child) for name, child in node.items()}
        if len(rest) == 2:
            listing = view.expression_dir(rest[1])
            if listing is not None:
                if for_lookup is not None and for_lookup not in listing:
                    companion = view.companion(listing, for_lookup)
                    if companion is not None:
                        return {**listing, for_lookup: companion}
                return listing
        raise NotFound(f"{path}: no such directory")

    # -- object sizes ----------------------------------------------------------------------------
    def sizes(self, objects: list[tuple[str | None, str]]) -> list[int | str]:
        """Each object's size from S3 (HEADs in parallel, bounded), or why it is unknown."""

        def one(obj: tuple[str | None, str]) -> int | str:
            bucket, key = obj
            try:
                return self.objects.size(bucket, key)
            except NotFound:
                return f"listed by the API but missing from S3 (s3://{bucket}/{key})"
            except BpfsError as exc:
                return f"its size could not be read from S3: {exc}"
            except Exception as exc:  # noqa: BLE001 - one file's failure, whatever it is, costs that file only
                return f"its size could not be read from S3 (s3://{bucket}/{key}): {type(exc).__name__}"

        if len(objects) <= 1:
            return [one(o) for o in objects]
        return list(self.heads.map(one, objects))

    def file_entries(self, files: list[FileSpec], where: str) -> list[Entry]:
        """Entries for files: sizes the API left out come from HEADs; a file whose size cannot be learned is
        listed but broken (EIO with the reason), never dropped and never shown empty."""
        learned = iter(self.sizes([(f.bucket, f.key) for f in files if f.size is None]))
        out = []
        for f in files:
            size = f.size
            if size is None:
                found = next(learned)
                if isinstance(found, str):
                    self.stats.add("bad_files")
                    log.error("%s: %s", where, found)
                    out.append(Entry(False, mtime=f.mtime, bucket=f.bucket, key=f.key, error=found, xattrs=f.xattrs))
                    continue
                size = found
            out.append(Entry(False, size=size, mtime=f.mtime, bucket=f.bucket, key=f.key, immutable=f.immutable,
                             xattrs=f.xattrs))
        return out


class FileSpec(NamedTuple):
    """A file of the account, as the tree needs it to make an Entry."""

    bucket: str | None
    key: str
    size: int | None  # None: ask S3
    mtime: float
    immutable: bool
    xattrs: tuple[tuple[str, str], ...]


def s3_uri(bucket: str | None, key: str) -> str:
    return f"s3://{bucket or ''}/{key}"


class SampleView:
    """One sample laid out as its directory: `sample.json` and each completed upload."""

    def __init__(self, sample: Sample, namespace: Namespace) -> None:
        uploads = sorted((u for u in sample.uploads or () if u.status == "completed"), key=lambda u: (u.order, u.id))
        self.entries: dict[str, Entry] = {"sample.json": _generated(_pretty_json(sample.raw), sample.mtime)}
        names = unique_names(((u.key.rsplit("/", 1)[-1], u.id) for u in uploads), reserved=self.entries)
        files = namespace.file_entries(
            # not immutable: bpfs itself may take a file back (rm) and upload another under its key
            [FileSpec(u.bucket, u.key, u.filesize, u.mtime or sample.mtime, False,
                      ((f"{XATTR}upload_id", str(u.id)), (f"{XATTR}sample_id", str(sample.id)),
                       (f"{XATTR}s3_uri", s3_uri(u.bucket, u.key)))) for u in uploads],
            f"samples/{sample.id}")
        self.broken = sum(1 for e in files if e.error)
        self.entries.update(zip(names, files, strict=True))


class AnalysisView:
    """One analysis detail laid out as directories: `analysis.json`, `all/`, one dir per tag."""

    def __init__(self, analysis: Analysis, namespace: Namespace) -> None:
        self.analysis = analysis
        self.mtime = analysis.mtime or namespace.started
        listed = list(analysis.files or ())
        # a 0 size is the API's "unknown" too: never show 0 for content (a real empty file costs one HEAD)
        entries = namespace.file_entries(
            [FileSpec(f.bucket, f.key, f.filesize or None, f.mtime or analysis.mtime, analysis.finished,
                      ((f"{XATTR}file_id", str(f.id)), (f"{XATTR}tags", ",".join(sorted(f.tags))),
                       (f"{XATTR}s3_uri", s3_uri(f.bucket, f.key)), (f"{XATTR}analysis_id", str(analysis.id))))
             for f in listed], f"analyses/{analysis.id}")
        self.files = list(zip(listed, entries, strict=True))
        self.broken = sum(1 for e in entries if e.error)
        self.by_key = {f.key: entry for f, entry in self.files}
        self.known_tags = frozenset(t for f, _ in self.files for t in f.tags)
        self.top: dict[str, Entry] = {"analysis.json": _generated(_pretty_json(analysis.raw), self.mtime),
                                      "all": _dir(self.mtime)}
        # one listed directory per tag, under a name that reaches exactly that tag, whatever it holds
        self.tag_dirs: dict[str, str] = {}
        for tag in sorted(self.known_tags):
            name = unique_in(self.top, safe_name(tag), "tag")
            self.top[name] = _dir(self.mtime)
            self.tag_dirs[name] = tag
        self.all_tree = self._tree(analysis, namespace.user_id)
        self._expressions: dict[str, dict[str, Entry] | None] = {}

    def companion(self, listing: dict[str, Entry], name: str) -> Entry | None:
        """The index beside a listed file (`x.bam.bai`, `x.bai`, `x.vcf.gz.tbi`...), found though not listed:
        samtools, tabix and IGV look for it next to the data file, which sits in another tag's directory."""
        for suffix in INDEX_SUFFIXES:
            if not name.endswith(suffix) or len(name) == len(suffix):
                continue
            base = name[: -len(suffix)]
            for data_name in (base, base + ".bam", base + ".cram"):
                entry = listing.get(data_name)
                if entry is not None and entry.key and entry.key.endswith("/" + data_name):
                    for key in (entry.key[: -len(data_name)] + name, entry.key + suffix):
                        if key in self.by_key:
                            return self.by_key[key]
        return None

    def expression_dir(self, name: str) -> dict[str, Entry] | None:
        """The flat directory a tag (listed) or a tag expression (not listed) names; None when it is
        neither or matches nothing. A listed name always means its own tag, even one spelled with
        `+`, `,` or a leading `-`."""
        if name in self._expressions:
            return self._expressions[name]
        listing = None
        chosen: list[tuple[AnalysisFile, Entry]]  # pairs, not ids: a broken server may repeat an id
        if name in self.tag_dirs:
            tag = self.tag_dirs[name]
            chosen = [(f, e) for f, e in self.files if tag in f.tags]
        else:
            expression = tagexpr.parse(name)
            chosen = tagexpr.select(expression, self.files, self.known_tags, lambda pair: pair[0].tags) \
                if expression is not None else []
        if chosen:
            names = unique_names((f.basename, f.id) for f, _ in chosen)
            listing = {n: e for n, (_, e) in zip(names, chosen, strict=True)}
        if len(self._expressions) < 256:
            self._expressions[name] = listing
        return listing

    def _tree(self, analysis: Analysis, user_id: int | None) -> dict:
        keys = [f.key for f, _ in self.files]
        root = _layout_root(keys, analysis.id, analysis.owner or user_id)
        placed: list[tuple[list[str], AnalysisFile, Entry]] = []
        for f, entry in self.files:
            rel = f.key[len(root):] if f.key.startswith(root) else f.key
            parts = [safe_name(p) for p in rel.split("/") if p] or [safe_name(f.basename)]
            placed.append((parts, f, entry))
        tree: dict = {}
        for parts, _, _ in placed:  # directories first, so a file never hides a directory
            node = tree
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                node = child
        for parts, f, entry in placed:
            node = tree
            for part in parts[:-1]:
                node = node[part]
            node[unique_in(node, parts[-1], f.id)] = entry
        return tree


def canonical_id(name: str) -> int | None:
    """The id a directory name spells, only in its one canonical form (`42`, not `042` or `+42`)."""
    if name.isascii() and name.isdigit() and not name.startswith("0"):
        return int(name)
    return None


def _layout_root(keys: list[str], analysis_id: int, user_id: int | None) -> str:
    """`analyses/<user>/<analysis>/` when every key is below it, else the longest common directory."""
    if not keys:
        return ""
    if user_id is not None:
        canonical = f"analyses/{user_id}/{analysis_id}/"
        if all(k.startswith(canonical) for k in keys):
            return canonical
    dirs = [k.split("/")[:-1] for k in keys]
    common: list[str] = []
    for level in zip(*dirs, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common) + "/" if common else ""
