"""Putting the pieces together: each mount option becomes its component's setting here, once; then
serve the filesystem through FUSE until it is unmounted."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bpfs.control import ControlFiles
from bpfs.errors import BpfsError, ConfigError
from bpfs.filesystem import BLOCK_SIZE, Filesystem
from bpfs.memory import trace_from_env, tune_malloc
from bpfs.mounting.mountpoints import raise_readahead
from bpfs.mounting.service import notify
from bpfs.options import MountOptions
from bpfs.processes import Processes
from bpfs.reading.disk_cache import DiskCache, DiskCacheConfig
from bpfs.reading.prefetch import PrefetchConfig, Prefetcher
from bpfs.redact import register
from bpfs.remote.api import ApiClient
from bpfs.remote.config import Config
from bpfs.remote.s3 import ObjectClient
from bpfs.stats import Stats
from bpfs.tree.catalog import Catalog, CatalogConfig
from bpfs.tree.namespace import HEAD_WORKERS, Namespace
from bpfs.writing.analyses import AnalysisRequests
from bpfs.writing.analysis_dropbox import AnalysisDropBox
from bpfs.writing.journal import UploadJournal, account_key
from bpfs.writing.journal import default_directory as journal_directory
from bpfs.writing.sample_dropbox import SampleDropBox
from bpfs.writing.samples import SampleSettings
from bpfs.writing.upload import UploadConfig

log = logging.getLogger("bpfs")

DEFAULT_CACHE_DIR = "~/.cache/bpfs/blocks"
KERNEL_READAHEAD_KB = 128  # what the kernel reads ahead on a FUSE mount unless read_ahead_kb= raises it
FUSE_THREADS = 16  # libfuse's worker threads that may each fetch inline at once (max_idle_threads=10, bursts)


def connect(config: Config, stats: Stats) -> tuple[ApiClient, Config]:
    """Check the credentials (401 → a clear error) and complete a v3 `cli` config from the server."""
    api = ApiClient(config, stats)
    api.whoami()
    if config.fetch_storage:
        config = config.with_storage(api.storage_configuration())
        api.config = config
    return api, config


def build_filesystem(config: Config, options: MountOptions, stats: Stats | None = None,
                     mountpoint: str | None = None, api: ApiClient | None = None,
                     objects: ObjectClient | None = None) -> Filesystem:
    """The assembly: each mount option becomes its component's setting here, once. `api` and `objects`
    may be given (the in-process tests pass clients that need no network); otherwise they connect."""
    stats = stats or Stats()
    if api is None:
        api, config = connect(config, stats)
    # what the server sent (v3 "cli") is kept out of output too; the key id is not secret to AWS, but it
    # names the account, and a proxy's error page echoes it
    register(config.aws_secret, config.api_key, config.aws_id)
    if objects is None:
        uploads = UploadConfig()
        objects = ObjectClient(config, stats, read_timeout=options.s3_timeout,
                               max_connections=options.readers + FUSE_THREADS,
                               other_connections=HEAD_WORKERS + uploads.max_parts + FUSE_THREADS)
    catalog = Catalog(api, stats, CatalogConfig(list_ttl=options.list_ttl, running_ttl=options.running_ttl))
    disk = None
    if options.disk_cache:
        directory = Path(options.cache_dir or DEFAULT_CACHE_DIR).expanduser()
        disk = DiskCache(DiskCacheConfig(directory=directory, limit=options.disk_cache), stats)
        stats.section("disk_cache", lambda: {"directory": str(directory), "bytes_on_disk": disk.bytes,
                                             "limit": options.disk_cache})
    part = options.part_mb << 20  # 0: each link's own (PrefetchConfig)
    readers = Prefetcher(objects, stats, PrefetchConfig(
        part_size=part or PrefetchConfig.part_size, near_part_size=part or PrefetchConfig.near_part_size,
        cache_bytes=options.cache_mb << 20, workers=options.readers,
        short_window=KERNEL_READAHEAD_KB * 1024 if options.direct_io else 0,  # the kernel's job otherwise
        ramp_run=BLOCK_SIZE + (max(options.read_ahead_kb, KERNEL_READAHEAD_KB) + 128) * 1024,
        max_in_flight=max(2, options.readers) * (part or PrefetchConfig.part_size),
        wait_timeout=objects.read_bound + 10, revalidate=max(options.list_ttl, 1.0)), disk=disk)
    journal = UploadJournal(journal_directory(), account_key(config.base_url, config.username))
    processes = Processes(mountpoint)
    samples_box = SampleDropBox(
        api, objects, catalog, stats,
        SampleSettings(genome=options.genome, datatype=options.datatype, platform=options.platform,
                       default_workflow=options.default_workflow),
        journal, processes, UploadConfig(), ro=options.ro, owner=(options.uid, options.gid))
    if not options.ro:
        try:
            samples_box.records.defaults()  # genome= and default_workflow= must exist on the server
        except BpfsError as exc:
            raise ConfigError(str(exc)) from None
    # uploads a dead daemon left half-done are cleaned up by the next mount of the account, -o ro too: the
    # cleanup finishes bpfs's own work, it writes nothing of the user's
    threading.Thread(target=journal.recover, args=(api, objects), name="bpfs-recover", daemon=True).start()
    analyses_box = AnalysisDropBox(AnalysisRequests(api, catalog), stats, processes, ro=options.ro)
    tree = Namespace(catalog, objects, readers, stats, ro=options.ro, allow_delete=options.allow_delete,
                     deleters={"samples": samples_box.delete_sample, "analyses": analyses_box.delete},
                     retry_broken=max(options.list_ttl, 10.0), direct_io=options.direct_io)
    control = ControlFiles(stats, tree.refresh, options.ro)

    def close() -> None:
        samples_box.shutdown()  # uploads still open are aborted and marked failed, never left half-done
        tree.close()
        catalog.close()
        journal.close()

    mounts = {"/samples/new": samples_box, "/analyses/new": analyses_box, "/.bpfs": control}
    return Filesystem(tree, mounts, stats, options, on_close=close)


def serve(config: Config, options: MountOptions, mountpoint: str, on_ready: Callable[[], None],
          debug: bool = False) -> None:
    from bpfs.mounting import fuseops  # libfuse is loaded only when something is mounted

    tune_malloc()  # before any thread: freed cache extents and parts go back to the OS
    trace_from_env()  # BPFS_TRACEMALLOC=SECONDS: allocation reports in the log (a diagnostic, off by default)
    real_mountpoint = os.path.realpath(mountpoint)  # before mounting: afterwards this would ask the daemon
    fs = build_filesystem(replace(config), options, mountpoint=real_mountpoint)

    def ready() -> None:
        raise_readahead(real_mountpoint, options.read_ahead_kb)
        notify(f"READY=1\nSTATUS=mounted at {real_mountpoint}")  # systemd's Type=notify
        on_ready()

    log.info("mounting %s (%s API at %s) on %s", config.username, config.dialect, config.base_url, mountpoint)
    try:
        fuseops.mount(fs, mountpoint, on_ready=ready, debug=debug)
    finally:
        notify("STOPPING=1")
        fs.close()
        log.info("unmounted %s", mountpoint)
