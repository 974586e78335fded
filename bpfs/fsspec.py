"""`basepair://` for fsspec: pandas, Dask, xarray and polars open a Basepair account by URL, no FUSE needed.

    pd.read_csv("basepair://analyses/10000/expression_count/liver_rep1.genes.txt", sep="\\t")
    fs = fsspec.filesystem("basepair", config="~/.basepair/config.json", list_ttl=30)

The paths are exactly the mount's tree, and this is the same core as the mount: the router, the tree,
the catalog, the prefetching reader and the drop boxes, called in-process (`bpfs.filesystem`). Storage
options are the mount options by name (`list_ttl=`, `cache_mb=`, `ro=True`, ...) plus `config=`.
Reads go straight to the core's read-ahead (fsspec's own cache is off), so a region query costs the
same range requests as through the mount. Pickling the filesystem carries only its options: each Dask
worker builds its own, with its own connections.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import weakref
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from bpfs.errors import BpfsError
from bpfs.filesystem import Filesystem
from bpfs.mounting.assembly import build_filesystem
from bpfs.options import parse_options
from bpfs.remote.config import find_config, load_config

UPLOAD_BLOCK = 8 << 20  # what fsspec buffers before handing it to the upload: one S3 part


def _oserror(exc: BpfsError, path: str) -> OSError:
    return OSError(exc.errno, os.strerror(exc.errno), path) if exc.errno != errno.ENOENT else \
        FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


class BasepairFileSystem(AbstractFileSystem):
    protocol = ("basepair",)
    root_marker = ""

    def __init__(self, config: str | None = None, **options: Any) -> None:
        super().__init__(config=config, **options)
        flags = [name if value is True else f"{name}={value}" for name, value in options.items()
                 if value is not False and not name.startswith("fsspec_") and name not in ("skip_instance_cache",
                                                                                             "use_listings_cache")]
        self.core: Filesystem = build_filesystem(load_config(find_config(config)), parse_options(flags))
        weakref.finalize(self, self.core.close)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        for prefix in ("basepair://", "basepair:"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        return path.strip("/")

    def _call(self, path: str, function, *args):  # noqa: ANN001, ANN202
        try:
            return function(*args)
        except BpfsError as exc:
            raise _oserror(exc, path) from None

    # -- reading the tree --------------------------------------------------------------------------
    def _entry(self, path: str, attrs: dict) -> dict:
        directory = stat.S_ISDIR(attrs["st_mode"])
        return {"name": path, "size": 0 if directory else attrs["st_size"],
                "type": "directory" if directory else "file", "mtime": attrs["st_mtime"] / 1e9}

    def info(self, path: str, **kwargs: Any) -> dict:
        path = self._strip_protocol(path)
        return self._entry(path, self._call(path, self.core.getattr, "/" + path))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        path = self._strip_protocol(path)
        info = self.info(path)
        if info["type"] != "directory":
            return [info] if detail else [path]
        entries = [self._entry(f"{path}/{name}".lstrip("/"), attrs)
                   for name, attrs in self._call(path, self.core.readdir, "/" + path)]
        entries.sort(key=lambda e: e["name"])
        return entries if detail else [e["name"] for e in entries]

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        size = self.info(path)["size"]
        start = 0 if start is None else (start if start >= 0 else max(0, size + start))
        end = size if end is None else (min(end, size) if end >= 0 else max(0, size + end))
        fh, _ = self._call(path, self.core.open, "/" + path, os.O_RDONLY, threading.get_native_id())
        try:
            chunks, offset = [], start
            while offset < end:
                chunk = bytes(self._call(path, self.core.read, fh, min(UPLOAD_BLOCK, end - offset), offset))
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
            return b"".join(chunks)
        finally:
            self.core.release(fh)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict | None = None, **kwargs: Any) -> BasepairFile:
        return BasepairFile(self, self._strip_protocol(path), mode, block_size or UPLOAD_BLOCK, autocommit,
                            cache_type="none", cache_options=cache_options, **kwargs)

    # -- writing (the drop boxes' rules) -----------------------------------------------------------
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        self._call(path, self.core.mkdir, "/" + path, 0o755)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        if self.exists(path):
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            return
        self.mkdir(path)

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        self._call(path, self.core.unlink, "/" + path)

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        self._call(path, self.core.rmdir, "/" + path)

    def _rm(self, path: str) -> None:
        (self.rmdir if self.isdir(path) else self.rm_file)(path)


class BasepairFile(AbstractBufferedFile):
    """A file of the account: reads through the core's read-ahead; writes stream to the drop box, and the
    close reports the outcome (a failed upload raises there, as `cp` sees at close)."""

    def __init__(self, fs: BasepairFileSystem, path: str, mode: str, block_size: int, autocommit: bool,
                 **kwargs: Any) -> None:
        self.fh: int | None = None
        super().__init__(fs, path, mode, block_size, autocommit, **kwargs)
        if mode == "rb":
            self.fh, _ = fs._call(path, fs.core.open, "/" + path, os.O_RDONLY, threading.get_native_id())

    def _fetch_range(self, start: int, end: int) -> bytes:
        return bytes(self.fs._call(self.path, self.fs.core.read, self.fh, end - start, start))

    def _initiate_upload(self) -> None:
        self.fh, _ = self.fs._call(self.path, self.fs.core.create, "/" + self.path, 0o644,
                                   os.O_WRONLY | os.O_CREAT | os.O_TRUNC, threading.get_native_id())

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        if data:
            self.fs._call(self.path, self.fs.core.write, self.fh, data, self.offset)
        if final:
            try:
                self.fs._call(self.path, self.fs.core.flush, self.fh, threading.get_native_id())
            finally:
                self.fs.core.release(self.fh)
                self.fh = None
        return True

    def close(self) -> None:
        try:
            super().close()  # writing: the last chunk, then the core's close (an empty file too)
        finally:
            if self.mode == "rb" and self.fh is not None:
                self.fs.core.release(self.fh)
                self.fh = None
