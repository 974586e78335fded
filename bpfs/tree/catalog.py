"""What the account holds: API listings and details, cached, with explicit invalidation.

The tree (`bpfs.namespace`) asks here for records and never talks to the API itself; the drop boxes
tell it what they changed ("samples changed", "sample 42 changed", "analysis 7 changed").

Three promises:
- **Fresh after a write.** Each invalidation bumps a generation; a load that started before it is
  never stored as fresh (it is kept only as the fallback copy), so a listing fetched while an upload
  completed cannot hide that upload for a whole TTL.
- **No stall for lookups.** A caller that only needs one child of a big listing (`analyses/123`)
  may take the previous listing while a new one loads in the background (`stale_ok`).
- **Stale if error.** When a reload fails, the last good value is served and the failure logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from bpfs.errors import BpfsError, NotFound, RemoteError
from bpfs.remote.api import ApiClient
from bpfs.remote.records import Analysis, Genome, Sample, Workflow
from bpfs.stats import Stats

log = logging.getLogger("bpfs.catalog")


@dataclass(frozen=True)
class CatalogConfig:
    list_ttl: float = 60.0  # listings (genomes, samples, analyses...): other clients' changes show within this
    running_ttl: float = 10.0  # the detail of a running analysis: its files appear while it runs
    finished_ttl: float = 24 * 3600.0  # a finished analysis never changes; a day bounds a server-side fix
    max_keys: int = 8192  # cached records: one per listing, sample or analysis entered (~2 KB to ~5 MB each)
    background_loads: int = 2  # reloads of listings served stale meanwhile; more would only queue on the API


class _Slot:
    __slots__ = ("value", "expires", "lock", "loading")

    def __init__(self) -> None:
        self.value: Any = None  # the last good value (None: never loaded)
        self.expires = 0.0  # monotonic time after which `value` is no longer fresh
        self.lock = threading.Lock()  # one load at a time per key
        self.loading = False  # a background reload is queued or running


class ListingCache:
    """Values with a TTL each, single-flight loads, generations against racing invalidations."""

    def __init__(self, stats: Stats, max_keys: int = 8192, background_loads: int = 2) -> None:
        self.stats = stats
        self._slots: LRUCache = LRUCache(max_keys)
        self._lock = threading.Lock()
        self._generation = 0
        self._invalidated: dict[tuple, int] = {}  # key prefix -> generation of its last invalidation
        self._pool = ThreadPoolExecutor(background_loads, thread_name_prefix="bpfs-reload")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _slot(self, key: tuple) -> _Slot:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            return slot

    def _invalidated_since(self, key: tuple, generation: int) -> bool:
        with self._lock:
            return any(key[:len(prefix)] == prefix and seen > generation
                       for prefix, seen in self._invalidated.items())

    def get(self, key: tuple, loader: Callable[[], Any], ttl: Callable[[Any], float] | float,
            stale_ok: bool = False) -> Any:
        slot = self._slot(key)
        if slot.value is not None and time.monotonic() < slot.expires:
            self.stats.add("cache_hits")
            return slot.value
        if stale_ok and slot.value is not None:
            self.stats.add("cache_hits")
            self._reload_later(key, slot, loader, ttl)
            return slot.value
        with slot.lock:
            if slot.value is not None and time.monotonic() < slot.expires:
                self.stats.add("cache_hits")
                return slot.value
            return self._load(key, slot, loader, ttl)

    def _load(self, key: tuple, slot: _Slot, loader: Callable[[], Any], ttl: Callable[[Any], float] | float) -> Any:
        """Load now (holding slot.lock). A failed reload serves the last good value."""
        self.stats.add("cache_misses")
        with self._lock:
            started = self._generation
        try:
            value = loader()
        except RemoteError as exc:
            if slot.value is None or isinstance(exc, NotFound):
                raise
            log.warning("serving the previous listing for %s: %s", "/".join(map(str, key)), exc)
            return slot.value
        seconds = ttl(value) if callable(ttl) else ttl
        slot.value = value
        # an invalidation while this load ran may mean it missed a change: keep it, but not as fresh
        slot.expires = 0.0 if self._invalidated_since(key, started) else time.monotonic() + seconds
        return value

    def _reload_later(self, key: tuple, slot: _Slot, loader: Callable[[], Any],
                      ttl: Callable[[Any], float] | float) -> None:
        with self._lock:
            if slot.loading:
                return
            slot.loading = True

        def run() -> None:
            try:
                with slot.lock:
                    if time.monotonic() >= slot.expires:
                        self._load(key, slot, loader, ttl)
            except BpfsError as exc:
                log.warning("background reload of %s failed: %s", "/".join(map(str, key)), exc)
            finally:
                slot.loading = False

        try:
            self._pool.submit(run)
        except RuntimeError:  # shutting down
            slot.loading = False

    def invalidate(self, prefix: tuple = (), forget: bool = False) -> None:
        """Values under `prefix` (all with ()) are no longer fresh; `forget` drops them entirely (a deletion:
        nothing may serve the old value, not even a lookup)."""
        with self._lock:
            self._generation += 1
            self._invalidated[prefix] = self._generation
            if len(self._invalidated) > 4096:  # old generations matter only to loads still running
                floor = self._generation - 4096
                self._invalidated = {p: g for p, g in self._invalidated.items() if g > floor}
            for key in list(self._slots.keys()):
                if key[:len(prefix)] == prefix:
                    slot = self._slots[key]
                    slot.expires = 0.0
                    if forget:
                        del self._slots[key]

    def is_fresh(self, key: tuple) -> bool:
        with self._lock:
            slot = self._slots.get(key)
        return slot is not None and slot.value is not None and time.monotonic() < slot.expires


class Catalog:
    """The account's records, each kind cached with its TTL. Thread-safe."""

    def __init__(self, api: ApiClient, stats: Stats, config: CatalogConfig | None = None) -> None:
        self.api, self.stats = api, stats
        self.config = config or CatalogConfig()
        self.cache = ListingCache(stats, self.config.max_keys, self.config.background_loads)

    def close(self) -> None:
        self.cache.close()

    # -- listings ----------------------------------------------------------------------------------
    def genomes(self, stale_ok: bool = False) -> list[Genome]:
        return self.cache.get(("genomes",), self.api.genomes, self.config.list_ttl, stale_ok)

    def workflows(self, stale_ok: bool = False) -> list[Workflow]:
        return self.cache.get(("workflows",), self.api.workflows, self.config.list_ttl, stale_ok)

    def samples(self, stale_ok: bool = False) -> list[Sample]:
        return self.cache.get(("samples",), self.api.samples, self.config.list_ttl, stale_ok)

    def analyses(self, stale_ok: bool = False) -> list[Analysis]:
        return self.cache.get(("analyses",), self.api.analyses, self.config.list_ttl, stale_ok)

    def analysis(self, analysis_id: int) -> Analysis:
        """The detail (with files): long-lived once finished, re-polled while running."""
        return self.cache.get(
            ("analysis", analysis_id),
            lambda: self.api.analysis(analysis_id),
            lambda a: self.config.finished_ttl if a.finished else self.config.running_ttl,
        )

    def sample(self, sample_id: int) -> Sample:
        return self.cache.get(("sample", sample_id), lambda: self.api.sample(sample_id), self.config.list_ttl)

    def fresh(self, kind: str) -> bool:
        return self.cache.is_fresh((kind,))

    # -- invalidation ------------------------------------------------------------------------------
    def samples_changed(self, sample_id: int | None = None, deleted: bool = False) -> None:
        """A sample was created, changed or deleted (or one of its uploads was)."""
        self.cache.invalidate(("samples",), forget=deleted)
        self.cache.invalidate(("sample", sample_id) if sample_id is not None else ("sample",), forget=deleted)

    def analyses_changed(self, analysis_id: int | None = None, deleted: bool = False) -> None:
        self.cache.invalidate(("analyses",), forget=deleted)
        self.cache.invalidate(("analysis", analysis_id) if analysis_id is not None else ("analysis",),
                              forget=deleted)

    def refresh(self, top: str | None = None, record_id: int | None = None) -> None:
        """What `.bpfs/refresh` asks: everything, one kind of listing, or one record."""
        if top is None:
            self.cache.invalidate()
        elif top == "samples":
            self.samples_changed(record_id)
        elif top == "analyses":
            self.analyses_changed(record_id)
        else:
            self.cache.invalidate((top,))
