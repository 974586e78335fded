"""Path → entry: the tree of the contract, built from cached API listings.

Directories are built as whole name → Entry maps from one listing (so `ls -l` costs no
request per entry) and memoised on the identity of the listing they came from: a new
listing after its TTL builds a new map, the same listing reuses the old one.
"""

from __future__ import annotations

import json
import logging
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache, TLRUCache

from bpfs import tags as tagexpr
from bpfs.api import ApiClient
from bpfs.errors import NotFound, RemoteError
from bpfs.names import safe_name, unique_names, with_id
from bpfs.records import Analysis, AnalysisFile, Genome, Sample, Workflow
from bpfs.s3 import ObjectClient
from bpfs.stats import Stats

log = logging.getLogger("bpfs.namespace")

DIR_MODE = stat.S_IFDIR | 0o555
INDEX_SUFFIXES = (".bai", ".csi", ".crai", ".tbi", ".fai")
FILE_MODE = stat.S_IFREG | 0o444


@dataclass(frozen=True)
class Entry:
    """What getattr, readdir and open need to know about one path."""

    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    data: bytes | None = None  # generated content (index.tsv, .json)
    bucket: str | None = None  # an S3 object: read by range
    key: str | None = None
    immutable: bool = False  # content never changes: the kernel may keep its page cache
    dynamic: bool = False  # content made at open time (stats): size is not known in advance
    writable: bool = False  # the drop box samples/new/

    @property
    def mode(self) -> int:
        if self.is_dir:
            return DIR_MODE | (0o200 if self.writable else 0)
        return FILE_MODE | (0o200 if self.writable else 0)


def _dir(mtime: float, writable: bool = False) -> Entry:
    return Entry(True, mtime=mtime, writable=writable)


def _generated(data: bytes, mtime: float) -> Entry:
    return Entry(False, size=len(data), mtime=mtime, data=data)


def _pretty_json(record: dict) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode()


def _tsv(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> bytes:
    def cell(value: Any) -> str:
        return " ".join(str("" if value is None else value).split())

    lines = ["\t".join(header)] + ["\t".join(cell(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


class _Cache:
    """Values with a TTL each; concurrent loads of one key make one request; the last good
    value is served when a refresh fails (stale-if-error), so a blip never empties a listing."""

    def __init__(self, stats: Stats, maxsize: int = 8192) -> None:
        self.stats = stats
        self._fresh: TLRUCache = TLRUCache(maxsize, ttu=lambda _k, v, now: now + v[1], timer=time.monotonic)
        self._stale: LRUCache = LRUCache(maxsize)
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}

    def get(self, key: Any, loader: Callable[[], Any], ttl: Callable[[Any], float] | float) -> Any:
        with self._lock:
            hit = self._fresh.get(key)
        if hit is not None:
            self.stats.add("cache_hits")
            return hit[0]
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                hit = self._fresh.get(key)
            if hit is not None:
                self.stats.add("cache_hits")
                return hit[0]
            self.stats.add("cache_misses")
            try:
                value = loader()
            except RemoteError as exc:
                with self._lock:
                    stale = self._stale.get(key)
                if stale is None:
                    raise
                log.warning("serving a stale listing for %s: %s", key, exc)
                return stale
            seconds = ttl(value) if callable(ttl) else ttl
            with self._lock:
                self._fresh[key] = (value, seconds)
                self._stale[key] = value
            return value

    def drop(self, prefix: tuple = ()) -> None:
        """Forget fresh values whose key starts with prefix (all with ()); stale copies stay for errors."""
        with self._lock:
            for key in list(self._fresh.keys()):
                if key[: len(prefix)] == prefix:
                    del self._fresh[key]


class _Memo:
    """Derived views keyed on the identity of the listing they were built from."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._views: LRUCache = LRUCache(maxsize)
        self._lock = threading.Lock()

    def get(self, key: Any, source: Any, build: Callable[[], Any]) -> Any:
        with self._lock:
            held = self._views.get(key)
        if held is not None and held[0] is source:
            return held[1]
        view = build()
        with self._lock:
            self._views[key] = (source, view)
        return view


class Namespace:
    """The whole tree. Thread-safe: FUSE calls it from many threads."""

    def __init__(
        self,
        api: ApiClient,
        objects: ObjectClient,
        stats: Stats,
        list_ttl: float = 60.0,
        running_ttl: float = 10.0,
        finished_ttl: float = 24 * 3600.0,
        extra_dirs: dict[str, Callable[[], dict[str, Entry]]] | None = None,
    ) -> None:
        self.api, self.objects, self.stats = api, objects, stats
        self.list_ttl, self.running_ttl, self.finished_ttl = list_ttl, running_ttl, finished_ttl
        self.cache = _Cache(stats)
        self.memo = _Memo()
        self.started = time.time()
        self.drafts: Callable[[str], dict[str, Entry]] | None = None  # samples/new/ contents (sample writer)
        self.control = ("stats", "refresh")  # .bpfs/: made at open time, so their sizes are not known ahead

    # -- public ----------------------------------------------------------------------------------
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
        """Drop cached listings (all of them, or those under one top-level directory)."""
        parts = self._parts(path)
        top = parts[0] if parts else None
        if top is None:
            self.cache.drop()
        elif top == "analyses" and len(parts) > 1 and parts[1].isdigit():
            self.cache.drop(("analysis", int(parts[1])))
            self.cache.drop(("analyses",))
        elif top in ("genomes", "workflows", "samples", "analyses"):
            self.cache.drop((top,))
            if top == "samples":
                self.cache.drop(("sample",))
            if top == "analyses":
                self.cache.drop(("analysis",))

    @staticmethod
    def _parts(path: str) -> list[str]:
        return [p for p in path.split("/") if p]

    def children(self, path: str, for_lookup: str | None = None) -> dict[str, Entry]:
        """The name → Entry map of a directory; `for_lookup` lets tag expressions resolve without listing."""
        parts = self._parts(path)
        if not parts:
            return self._root(hidden=for_lookup is not None)
        top, rest = parts[0], parts[1:]
        if top == ".bpfs" and not rest:
            return {name: Entry(False, mtime=time.time(), dynamic=True, writable=name == "refresh")
                    for name in self.control}
        if top == "genomes" and not rest:
            return self._genomes_dir()
        if top == "workflows" and not rest:
            return self._workflows_dir()
        if top == "samples":
            if not rest:
                return self._samples_dir()
            if rest[0] == "new":
                if self.drafts is None:
                    if len(rest) == 1:
                        return {}
                    raise NotFound(f"{path}: no such directory")
                return self.drafts("/".join(rest[1:]))
            if len(rest) == 1:
                return self._sample_dir(rest[0], path)
        if top == "analyses":
            if not rest:
                return self._analyses_dir()
            return self._analysis_subdir(rest, path, for_lookup)
        raise NotFound(f"{path}: no such directory")

    # -- listings --------------------------------------------------------------------------------
    def genomes(self) -> list[Genome]:
        return self.cache.get(("genomes",), self.api.genomes, self.list_ttl)

    def workflows(self) -> list[Workflow]:
        return self.cache.get(("workflows",), self.api.workflows, self.list_ttl)

    def samples(self) -> list[Sample]:
        return self.cache.get(("samples",), self.api.samples, self.list_ttl)

    def analyses(self) -> list[Analysis]:
        return self.cache.get(("analyses",), self.api.analyses, self.list_ttl)

    def analysis(self, analysis_id: int) -> Analysis:
        """The detail (with files): fetched when the directory is first entered; long-lived once finished."""
        return self.cache.get(
            ("analysis", analysis_id),
            lambda: self.api.analysis(analysis_id),
            lambda a: self.finished_ttl if a.finished else self.running_ttl,
        )

    def sample(self, sample_id: int) -> Sample:
        return self.cache.get(("sample", sample_id), lambda: self.api.sample(sample_id), self.list_ttl)

    # -- directories -----------------------------------------------------------------------------
    def _root(self, hidden: bool) -> dict[str, Entry]:
        entries = {name: _dir(self.started) for name in ("genomes", "workflows", "samples", "analyses")}
        if hidden:  # .bpfs resolves but is not listed
            entries[".bpfs"] = _dir(self.started)
        return entries

    @staticmethod
    def _newest(times: Iterable[float], default: float) -> float:
        return max((t for t in times if t), default=default)

    def _genomes_dir(self) -> dict[str, Entry]:
        genomes = self.genomes()

        def build() -> dict[str, Entry]:
            mtime = self._newest((g.created for g in genomes), self.started)
            date_field = "created_on" if self.api.dialect == "v3" else "date_created"
            out = {"index.tsv": _generated(
                _tsv(("id", "name", date_field), ((g.id, g.name, g.created_text) for g in genomes)), mtime)}
            names = unique_names(((g.name + ".json", g.id) for g in genomes), reserved=("index.tsv",))
            for name, genome in zip(names, genomes, strict=True):
                out[name] = _generated(_pretty_json(genome.raw), genome.created or mtime)
            return out

        return self.memo.get("genomes", genomes, build)

    def _workflows_dir(self) -> dict[str, Entry]:
        workflows = self.workflows()

        def build() -> dict[str, Entry]:
            mtime = self._newest((w.mtime for w in workflows), self.started)
            out = {"index.tsv": _generated(
                _tsv(("id", "name", "datatype"), ((w.id, w.name, w.datatype) for w in workflows)), mtime)}
            for w in workflows:
                out[f"{w.id}.json"] = _generated(_pretty_json(w.raw), w.mtime or mtime)
            return out

        return self.memo.get("workflows", workflows, build)

    def _samples_dir(self) -> dict[str, Entry]:
        samples = self.samples()

        def build() -> dict[str, Entry]:
            mtime = self._newest((s.mtime for s in samples), self.started)
            rows = ((s.id, s.name, s.datatype, s.genome, s.created_text) for s in samples)
            out = {
                "index.tsv": _generated(_tsv(("id", "name", "datatype", "genome", "date_created"), rows), mtime),
                "new": _dir(self.started, writable=True),
            }
            for s in samples:
                out[str(s.id)] = _dir(s.mtime or mtime)
            return out

        entries = self.memo.get("samples", samples, build)
        if self.drafts is not None:
            return entries
        return {**entries, "new": _dir(self.started)}

    def _find_sample(self, name: str, path: str) -> Sample:
        if not name.isdigit():
            raise NotFound(f"{path}: no such sample")
        sample_id = int(name)
        for sample in self.samples():
            if sample.id == sample_id:
                if sample.uploads is not None:
                    return sample
                return self.sample(sample_id)
        try:
            return self.sample(sample_id)  # created after the listing was cached
        except NotFound:
            raise NotFound(f"{path}: no such sample") from None

    def _sample_dir(self, name: str, path: str) -> dict[str, Entry]:
        sample = self._find_sample(name, path)

        def build() -> dict[str, Entry]:
            uploads = sorted((u for u in sample.uploads or () if u.status == "completed"),
                             key=lambda u: (u.order, u.id))
            out = {"sample.json": _generated(_pretty_json(sample.raw), sample.mtime)}
            names = unique_names(((u.key.rsplit("/", 1)[-1], u.id) for u in uploads), reserved=out)
            for fname, upload in zip(names, uploads, strict=True):
                size = upload.filesize if upload.filesize is not None else self._size(upload.bucket, upload.key)
                if size is None:
                    continue
                out[fname] = Entry(False, size=size, mtime=upload.mtime or sample.mtime,
                                   bucket=upload.bucket, key=upload.key, immutable=True)
            return out

        return self.memo.get(("sample", sample.id), sample, build)

    def _analyses_dir(self) -> dict[str, Entry]:
        analyses = self.analyses()

        def build() -> dict[str, Entry]:
            mtime = self._newest((a.mtime for a in analyses), self.started)
            rows = ((a.id, a.name, a.status, a.workflow or "", ",".join(map(str, a.samples)), a.created_text)
                    for a in analyses)
            header = ("id", "name", "status", "workflow", "samples", "date_created")
            out = {"index.tsv": _generated(_tsv(header, rows), mtime)}
            for a in analyses:
                out[str(a.id)] = _dir(a.mtime or mtime)
            return out

        return self.memo.get("analyses", analyses, build)

    def _analysis(self, name: str, path: str) -> Analysis:
        if not name.isdigit():
            raise NotFound(f"{path}: no such analysis")
        try:
            return self.analysis(int(name))
        except NotFound:
            raise NotFound(f"{path}: no such analysis") from None

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

    # -- helpers ---------------------------------------------------------------------------------
    def _size(self, bucket: str | None, key: str) -> int | None:
        """The size the API omitted, from a HEAD; None when the object is gone (the file is then hidden)."""
        try:
            return self.objects.size(bucket, key)
        except NotFound:
            log.warning("s3://%s/%s is listed by the API but missing from S3; hiding it", bucket, key)
            return None

    def file_entry(self, f: AnalysisFile, analysis: Analysis) -> Entry | None:
        size = f.filesize
        if not size:  # null, or 0 which the API also uses for "unknown": never show 0 for content
            size = self._size(f.bucket, f.key)
            if size is None:
                return None
        return Entry(False, size=size, mtime=f.mtime or analysis.mtime, bucket=f.bucket, key=f.key,
                     immutable=analysis.finished)


class AnalysisView:
    """One analysis detail laid out as directories: `analysis.json`, `all/`, one dir per tag."""

    def __init__(self, analysis: Analysis, namespace: Namespace) -> None:
        self.analysis = analysis
        self.mtime = analysis.mtime or namespace.started
        files = []
        for f in analysis.files or ():
            entry = namespace.file_entry(f, analysis)
            if entry is not None:
                files.append((f, entry))
        self.files = files
        self.by_key = {f.key: entry for f, entry in files}
        self.known_tags = frozenset(t for f, _ in files for t in f.tags)
        self.top: dict[str, Entry] = {"analysis.json": _generated(_pretty_json(analysis.raw), self.mtime),
                                      "all": _dir(self.mtime)}
        for tag in sorted(self.known_tags):
            name = safe_name(tag)
            if name not in self.top and tagexpr.parse(tag) is not None and name == tag:
                self.top[name] = _dir(self.mtime)
        self.all_tree = self._tree(analysis, namespace.api.user_id)
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
        """The flat directory a tag expression names; None when it is invalid or matches nothing."""
        if name in self._expressions:
            return self._expressions[name]
        listing = None
        expression = tagexpr.parse(name)
        if expression is not None:
            chosen = tagexpr.select(expression, [f for f, _ in self.files], self.known_tags)
            if chosen:
                entries = {f.id: e for f, e in self.files}
                names = unique_names((f.basename, f.id) for f in chosen)
                listing = {n: entries[f.id] for n, f in zip(names, chosen, strict=True)}
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
            name = parts[-1]
            if name in node:
                name = with_id(name, f.id)
            node[name] = entry
        return tree


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
