"""Mount options (`-o a,b=c`): parsed once, refused clearly when unknown or out of bounds.

Each number's default is its component's own default (one place per knob); the assembly
(`bpfs.mounting.assembly`) turns the options into each component's config, once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from bpfs.errors import ConfigError
from bpfs.reading.prefetch import PrefetchConfig
from bpfs.remote.s3 import READ_TIMEOUT
from bpfs.tree.catalog import CatalogConfig
from bpfs.writing.samples import SampleSettings

MiB = 1 << 20


@dataclass
class MountOptions:
    ro: bool = False  # refuse every write with EROFS
    allow_other: bool = False  # needs user_allow_other in /etc/fuse.conf for non-root users
    allow_delete: bool = False  # rmdir samples/<id> deletes the sample
    uid: int = -1  # -1: the mounting user
    gid: int = -1
    umask: int = 0o022
    list_ttl: float = CatalogConfig.list_ttl  # seconds a listing (genomes, samples, analyses, ...) is reused
    running_ttl: float = CatalogConfig.running_ttl  # seconds the detail of a running analysis is reused
    s3_timeout: float = READ_TIMEOUT  # seconds without data before an S3 request is retried
    cache_mb: int = PrefetchConfig.cache_bytes // MiB  # byte ranges kept in memory for re-reads (all files)
    # size of one parallel range GET while streaming; 0: 8 MiB, or 24 MiB where S3 answers within 5 ms
    # (loopback, a local S3: see PrefetchConfig.near_part_size)
    part_mb: int = 0
    # kernel readahead of the mount (root only; 0 keeps the kernel's 128 KiB). Measured (scripts/bench.py):
    # 1024 made a samtools region query fetch 9.2% of the BAM instead of 5.6%, and streams no faster
    # (the daemon's CPU is the limit, not the number of FUSE requests), so it is off by default
    read_ahead_kb: int = 0
    # S3 files bypass the kernel's page cache: each read() reaches the daemon at its own size (1 MiB for cp
    # and cat, st_blksize) instead of 128 KiB readahead requests, and a region query fetches what the tool
    # reads and little past it (PrefetchConfig.short_window). Measured (scripts/bench.py -o direct_io):
    # loopback streams ~1.5x faster, a samtools region 4.7-4.9% of the BAM (5.04%). What it costs:
    # re-reads come from the daemon's cache or S3, never the page cache, and a shared mmap of an S3 file
    # fails (ENODEV; libfuse 3.16+ and Linux 6.6+ could allow it), so it is opt-in
    direct_io: bool = False
    readers: int = PrefetchConfig.workers  # concurrent range GETs across the mount
    disk_cache: int = 0  # bytes of blocks kept on disk across mounts (disk_cache=20G); 0: off
    cache_dir: str = ""  # where (default ~/.cache/bpfs/blocks)
    genome: str = SampleSettings.genome  # defaults for samples created through samples/new/
    datatype: str = SampleSettings.datatype
    platform: str = SampleSettings.platform
    default_workflow: str = SampleSettings.default_workflow
    fsname: str = "bpfs"

    def __post_init__(self) -> None:
        if self.uid == -1:
            self.uid = os.getuid()
        if self.gid == -1:
            self.gid = os.getgid()


_FLAGS = {f.name for f in fields(MountOptions) if f.type in ("bool", bool)}
_VALUES = {f.name: f.type for f in fields(MountOptions) if f.name not in _FLAGS}
# what fstab and mount(8) pass along that means nothing to bpfs (mount.fuse3 handles the rest)
IGNORED = {"rw", "defaults", "noatime", "relatime", "atime", "nodev", "dev", "nosuid", "suid", "noexec", "exec",
           "_netdev", "auto", "noauto", "user", "users", "nouser", "nofail", "async", "sync"}
IGNORED_PREFIXES = ("x-", "comment=")  # x-systemd.* and comments from fstab


def parse_options(values: list[str] | None) -> MountOptions:
    """Options from repeated `-o` arguments, each a comma-separated list."""
    opts = MountOptions()
    for group in values or ():
        for item in group.split(","):
            item = item.strip()
            if not item or item in IGNORED or item.startswith(IGNORED_PREFIXES):
                continue
            name, has_value, value = item.partition("=")
            name = name.replace("-", "_")
            if name in _FLAGS:
                if has_value:
                    raise ConfigError(f"mount option {name} takes no value")
                setattr(opts, name, True)
            elif name in _VALUES:
                if not has_value or not value:
                    raise ConfigError(f"mount option {name} needs a value ({name}=...)")
                setattr(opts, name, _convert(name, _VALUES[name], value))
            else:
                known = ", ".join(sorted(_FLAGS | set(_VALUES)))
                raise ConfigError(f"unknown mount option {name!r} (known: {known})")
    return opts


# (lowest, highest, unit) of each number: beyond these a value is a typo, or would starve or flood something
BOUNDS: dict[str, tuple[float, float, str]] = {
    "list_ttl": (0, 86_400, "seconds"),  # a day: beyond it nobody would see another client's changes
    "running_ttl": (0, 86_400, "seconds"),
    "s3_timeout": (1, 600, "seconds"),  # under 1 s every GET of a busy link times out; 10 minutes is a hang
    "cache_mb": (1, 65_536, "MiB"),  # up to 64 GiB of memory
    "part_mb": (0, 512, "MiB"),  # one range GET; 512 MiB parts would hold that much per stream in memory
    "readers": (1, 128, "concurrent GETs"),
    "read_ahead_kb": (0, 65_536, "KiB"),
    "uid": (0, 2**32 - 2, ""),
    "gid": (0, 2**32 - 2, ""),
    "umask": (0, 0o777, "(octal)"),
    "disk_cache": (0, 1 << 50, ""),
}
SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _convert(name: str, kind: object, value: str) -> object:
    if kind not in ("int", int, "float", float):
        return value
    low, high, unit = BOUNDS.get(name, (0, float("inf"), ""))
    try:
        if name == "umask":
            number: float = int(value, 8)
        elif name == "disk_cache":
            text = value.strip().upper().removesuffix("B").removesuffix("I")
            number = int(float(text[:-1]) * SIZE_SUFFIXES[text[-1]]) if text[-1:] in "KMGT" and text[-1:] \
                else int(text)
        elif kind in ("int", int):
            number = int(value)
        else:
            number = float(value)
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError
    except (ValueError, KeyError, IndexError):
        if name == "disk_cache":
            raise ConfigError(f"mount option disk_cache={value!r} is not valid: expected a size such as 500M, "
                              "20G or 1T (0: off)") from None
        shown = f"{low:o} to {high:o}" if name == "umask" else f"{low:g} to {high:g}"
        raise ConfigError(f"mount option {name}={value!r} is not valid: expected a number from {shown}"
                          f"{' ' + unit if unit else ''}") from None
    return number
