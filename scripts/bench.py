#!/usr/bin/env python3
"""bpfs benchmark: a real mount of the emulator against boto3 (and, with --peers, s3fs and rclone) on the
same S3 server, in one run.

    .venv/bin/python scripts/bench.py            # full run: 5 rounds, 256 MiB, ~50 MB BAM, 1 GiB stream/re-read
    .venv/bin/python scripts/bench.py --quick    # smoke run: 2 rounds, 32 MiB, ~5 MB BAM, 64 MiB stream/re-read
    .venv/bin/python scripts/bench.py --s3-latency-ms 20 --s3-mbps 100      # on an S3-like link
    .venv/bin/python scripts/bench.py --peers --as-user nobody              # + s3fs, rclone; + a normal user

What it does (scripts/README.md says how to read the tables):

* starts the bundled emulator in a child process (its S3 server is a Python threaded HTTP server: in our
  own process it would share a GIL with the boto3 baseline but not with the bpfs daemon, which could skew
  the comparison), adds one completed "benchmark" analysis to the demo account whose files are the objects
  the chosen sections read, optionally shapes the link (`--s3-latency-ms`: every request waits that long
  before the server answers or reads an upload body; `--s3-mbps`: every GET body and every PUT/UploadPart
  body moves at most that fast, per request), then mounts the account with `bpfs mount --foreground`
  (with -o allow_other under --as-user), and with --peers mounts s3fs and rclone read-only on the bucket;
* runs the sections in a fixed order: stream, ttfb, head, random, samtools, sequential, reread, write
  (`--only` picks a subset; the order stays). Every section but stream runs `--rounds` rounds (default 5,
  --quick 2). Where a section has several sides (bpfs, boto3, the peers, the user; or 2nd read and local
  file) the order of the sides alternates every round (A B C, then C B A), and the table shows medians
  of the per-round values and of the per-round ratios: the machines are shared and noisy;
* before and after every measurement waits until the S3 counters stop moving for 0.3 s: the bpfs
  daemon's (`.bpfs/stats`, when a bpfs mount is measured) and the emulator's. Prefetches outlive the
  reader that started them; their bytes are charged to it;
* keeps reads cold: sequential, ttfb, head and samtools read an object no daemon has read before (one per
  round; the peers read the same per-round objects, their own caches being cold). The page cache of the
  emulator's object files is warmed first, so its S3 server answers from memory for everyone. The
  kernel's page cache of a mounted file is dropped with posix_fadvise(DONTNEED) before each sequential
  and random read (every side, every round), or with --drop-caches by `echo 3 > drop_caches` (root)
  followed by re-warming the object. head, ttfb, samtools and stream drop nothing (their objects are
  new to the kernel too). reread drops the page cache of the disk-cache files and of the local copy
  before the reads that use them;
* reread: each round, a fresh cache directory, a fresh mount with -o disk_cache=2x+64M,cache_dir=...
  reads the 1 GiB object (cold); the benchmark waits until the disk cache writer's counters
  (disk_writes, disk_dropped, disk_full) stay still for 1 s, unmounts, drops the cache files' pages,
  mounts again on the same directory and reads the object again; the local side reads a copy of the
  object on local disk (pages dropped) with the same 1 MiB read loop;
* write: each uploaded object is deleted once measured (the emulator's files would otherwise pile up dirty
  pages, and writeback then throttles both sides to the disk's speed);
* always unmounts every mount it made (fusermount3 -u, then -uz; then waits for the daemon and kills it by
  its PID if it does not exit), stops the emulator and removes its files, also on Ctrl-C.

The goals are the issues' (benchmark goals, not test assertions): sequential >= 0.35x one direct GET on
loopback and >= 0.85x boto3's download_file on a shaped link (issue 13), a normal user's sequential >= 0.9x
root's, TTFB <= 2x one direct GET, 200 random 4 KiB reads fetch <= 10 x 800 KiB, a samtools region query
fetches <= 5 % of the BAM, daemon RSS < 200 MB while streaming 1 GiB; the disk cache's: a re-read after
a remount fetches 0 S3 bytes and runs >= 2x the cold read on the S3-like link.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import pathlib
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

MiB = 1 << 20
READ_SIZE = MiB  # what cat/cp ask for (bpfs reports st_blksize = 1 MiB)
ANALYSIS_NAME = "bpfs benchmark objects"
NODE = "bench"


# =====================================================================================================
# the emulator, in a child process
# =====================================================================================================


def _write_random(path: pathlib.Path, size: int, chunk: int = 8 * MiB) -> None:
    """Incompressible bytes, written in chunks: a 1 GiB object never sits in memory."""
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(chunk, left)
            fh.write(os.urandom(n))
            left -= n


def _install_bucket_listing() -> None:
    """Teach the emulator's S3 server ListObjects (v1 and v2) and HeadBucket, for the peers only.

    s3fs and rclone find files by listing the bucket (with delimiter "/"), which the emulator does not
    implement (bpfs never lists S3: the Basepair API says what exists). The emulator's own code may not
    change for the benchmark, so the benchmark's emulator process wraps the request router instead: a GET
    or HEAD on a bucket (no key) is answered here, everything else goes to the emulator as before. It runs
    on the emulator's handler, so it pays the same `latency` and counts into the same stats."""
    from urllib.parse import quote, unquote

    from bpfs.emulator import s3protocol as proto
    from bpfs.emulator import s3server

    def list_bucket(handler: Any, bucket: str, q: dict[str, str]) -> None:
        store = handler.server.s3.store
        if not store.bucket_exists(bucket):
            raise proto.S3Error(404, "NoSuchBucket", "The specified bucket does not exist", {"BucketName": bucket})
        if handler.command == "HEAD":
            return handler._respond(200)
        if "location" in q:
            return handler._respond(200, proto.xml_doc("LocationConstraint", ""))
        unknown = set(q) - {"list-type", "prefix", "delimiter", "max-keys", "marker", "continuation-token",
                            "start-after", "encoding-type", "fetch-owner"}
        if unknown:
            raise proto.S3Error(501, "NotImplemented", f"GET ?{'&'.join(sorted(unknown))} on a bucket")
        v2 = q.get("list-type") == "2"
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        try:
            max_keys = max(0, min(1000, int(q.get("max-keys", "1000"))))
        except ValueError:
            raise proto.S3Error(400, "InvalidArgument", "max-keys is not an integer") from None
        after = (q.get("continuation-token") or q.get("start-after", "")) if v2 else q.get("marker", "")
        url = q.get("encoding-type") == "url"

        def enc(text: str) -> str:
            return quote(text, safe="/") if url else text

        contents: list[str] = []
        prefixes: list[str] = []
        truncated, last = False, ""
        for key in store.keys(bucket, prefix):
            if key <= after:
                continue
            entry = key
            if delimiter and (i := key.find(delimiter, len(prefix))) >= 0:
                entry = key[: i + len(delimiter)]
                if entry <= after or (prefixes and prefixes[-1] == entry):
                    continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            (contents if entry is key else prefixes).append(entry)
            last = entry
        el = proto.xml_el
        parts = [el("Name", bucket), el("Prefix", enc(prefix))]
        if v2:
            parts.append(el("KeyCount", len(contents) + len(prefixes)))
            if "continuation-token" in q:
                parts.append(el("ContinuationToken", q["continuation-token"]))
            if "start-after" in q:
                parts.append(el("StartAfter", enc(q["start-after"])))
        else:
            parts.append(el("Marker", enc(q.get("marker", ""))))
        parts.append(el("MaxKeys", max_keys))
        if delimiter:
            parts.append(el("Delimiter", enc(delimiter)))
        if url:
            parts.append(el("EncodingType", "url"))
        parts.append(el("IsTruncated", "true" if truncated else "false"))
        if truncated:
            parts.append(el("NextContinuationToken", last) if v2 else el("NextMarker", enc(last)))
        for key in contents:
            info = store.info(bucket, key)
            parts.append("<Contents>" + el("Key", enc(key)) + el("LastModified", proto.iso_time(info.last_modified))
                         + el("ETag", info.etag) + el("Size", info.size) + el("StorageClass", info.storage_class)
                         + "</Contents>")
        parts += [f"<CommonPrefixes>{el('Prefix', enc(p))}</CommonPrefixes>" for p in prefixes]
        handler._respond(200, proto.xml_doc("ListBucketResult", "".join(parts)))

    route = s3server._Handler._route

    def route_with_listing(self: Any, raw_path: str, q: dict[str, str], fault: Any) -> None:
        bucket, _, key = raw_path.lstrip("/").partition("/")
        if not key and self.command in ("GET", "HEAD"):
            return list_bucket(self, unquote(bucket), q)
        return route(self, raw_path, q, fault)

    s3server._Handler._route = route_with_listing


def run_emulator_child(conn: Any, make: Callable[[], Any], prepare: Callable[[Any], dict],
                       answer: Callable[..., Any]) -> None:
    """The child's side of EmulatorProcess (bench.py's and soak.py's): `make()` starts the emulator,
    `prepare(emu)` sets it up and returns what the parent needs; then every command (a tuple) is answered
    with `answer(emu, command, *args)` until ("stop",) or the parent goes away. A failure is reported to the
    parent, never left to hang it, and the emulator is always stopped."""
    os.setsid()  # Ctrl-C at the terminal reaches the parent only; the parent stops us in order
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    emu = None
    try:
        emu = make()
        conn.send({"ok": True, **prepare(emu)})
        while True:
            try:
                if not conn.poll(1.0):
                    continue
                command, *args = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if command == "stop":
                break
            conn.send(answer(emu, command, *args))
    except BaseException as exc:  # report, never hang the parent
        with contextlib.suppress(Exception):
            conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        if emu is not None:
            emu.stop()
        with contextlib.suppress(Exception):
            conn.close()


class EmulatorProcess:
    """The emulator in a spawned child process that runs `child(conn, data_dir, spec)` (which calls
    run_emulator_child): its S3 server then shares no GIL with the clients measured against it."""

    def __init__(self, data_dir: pathlib.Path, spec: dict, child: Callable[[Any, str, dict], None] | None = None,
                 name: str = "bpfs-bench-emulator") -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=child or _emulator_child, args=(child_conn, str(data_dir), spec),
                                daemon=True, name=name)
        self.proc.start()
        child_conn.close()
        self.lock = threading.Lock()  # one command and its answer at a time
        self.info: dict = {}

    def wait_ready(self, timeout: float) -> dict:
        try:
            if not self.conn.poll(timeout):
                raise RuntimeError(f"the emulator did not come up within {timeout:.0f}s")
            info = self.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"the emulator process exited with status {self.proc.exitcode}") from None
        if not info.get("ok"):
            raise RuntimeError(f"the emulator failed: {info.get('error')}")
        self.info = info
        return info

    def ask(self, *command: Any) -> Any:
        with self.lock:
            self.conn.send(command)
            if not self.conn.poll(30):
                raise RuntimeError(f"the emulator did not answer {command[0]!r}")
            answer = self.conn.recv()
        if isinstance(answer, dict) and answer.get("ok") is False:
            raise RuntimeError(f"the emulator failed: {answer.get('error')}")
        return answer

    def s3_stats(self) -> dict:
        return self.ask("stats")

    def stop(self) -> None:
        with self.lock, contextlib.suppress(Exception):
            self.conn.send(("stop",))
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()  # by its PID, through the Process object
            self.proc.join(timeout=10)
        with contextlib.suppress(Exception):
            self.conn.close()


def _emulator_child(conn: Any, data_dir: str, spec: dict) -> None:
    """Run the emulator with the benchmark objects until the parent says stop (or goes away)."""
    from bpfs.emulator import Emulator

    if spec.get("listing"):
        _install_bucket_listing()
    root = pathlib.Path(data_dir)
    run_emulator_child(conn, lambda: Emulator(data_dir=root / "emulator", big_file_mib=1, bam_reads=2000).start(),
                       lambda emu: _bench_objects(emu, root, spec), _bench_command)


def _bench_command(emu: Any, command: str) -> Any:
    if command == "stats":
        return dict(emu.s3.stats)
    raise ValueError(f"unknown command {command!r}")


def _bench_objects(emu: Any, root: pathlib.Path, spec: dict) -> dict:
    """Add the benchmark analysis and the objects the chosen sections read; shape the link."""
    from bpfs.emulator import genomics

    staging = root / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    state, store, bucket = emu.state, emu.store, emu.bucket
    base_analysis = state.analyses[min(state.analyses)]
    t0 = datetime(2024, 7, 1, 12, 0, 0)
    analysis = state.add_analysis(
        name=ANALYSIS_NAME, status="completed", workflow=base_analysis["workflow"],
        samples=list(base_analysis["samples"]), tags=["bench"], params={"info": {"genome_id": 1}, "node": {}},
        date_created=t0, started_on=t0, completed_on=t0 + timedelta(hours=1),
        last_updated=t0 + timedelta(hours=1, seconds=1),
    )
    aid = analysis["id"]
    prefix = f"analyses/{state.user_id}/{aid}/{NODE}"
    files: dict[str, dict] = {}

    def add(name: str, data: bytes | pathlib.Path, tags: list[str]) -> None:
        key = f"{prefix}/{name}"
        store.put(bucket, key, data)
        size = store.size(bucket, key)
        state.add_file(aid, key, tags, size, NODE, t0 + timedelta(minutes=len(files)))
        files[name] = {"key": key, "size": size, "store_path": str(store.path(bucket, key))}

    def add_random(name: str, size: int) -> None:
        path = staging / name
        _write_random(path, size)
        add(name, path, ["bench", "bin"])  # a path is moved into the store, not copied

    sections = set(spec["sections"])  # only the objects the chosen sections read
    if "random" in sections:
        add_random("random.bin", spec["size"])
    if "stream" in sections:
        add_random("stream.bin", spec["stream_size"])
    if "reread" in sections:
        add_random("reread.bin", spec["stream_size"])  # read by its own mounts, with the disk cache on
    for r in range(spec["rounds"]):
        # one object per round for everything that must start cold in the daemon's extent cache too
        # (cache_mb=128 would otherwise serve half of a 256 MiB re-read)
        if "sequential" in sections:
            add_random(f"seq_r{r}.bin", spec["size"])
            if spec.get("as_user"):
                add_random(f"sequ_r{r}.bin", spec["size"])  # the same mount's sequential read as another user
        if "ttfb" in sections:
            add_random(f"ttfb_r{r}.bin", spec["small_size"])
        if "head" in sections:
            add_random(f"head_r{r}.bin", spec["small_size"])
    if "samtools" in sections:
        bam, bai = genomics.make_bam(spec["bam_seed"], spec["bam_reads"])
        for r in range(spec["rounds"]):  # one copy per round: every region query starts cold in every daemon
            add(f"region_r{r}.bam", bam, ["bam"])
            add(f"region_r{r}.bam.bai", bai, ["bai"])
        del bam, bai
    if not files:
        add("empty.txt", b"", ["bench"])  # the analysis must have a file for its directory to exist
    if spec.get("s3_latency"):
        emu.s3.latency = spec["s3_latency"]  # every request, uploads included
    if spec.get("s3_mbps"):  # each GET body, and each PUT/UploadPart body
        emu.s3.bandwidth = spec["s3_mbps"] * 1e6
    config = emu.write_config(root / "config-v3.json", dialect="v3")
    return {"bucket": bucket, "s3_url": emu.s3_url, "region": state.region, "key_id": state.s3_key_id,
            "secret": state.s3_secret, "analysis": aid, "files": files, "config": str(config)}


# =====================================================================================================
# the mount
# =====================================================================================================


def fusermount() -> str:
    return shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"


def is_mounted(path: pathlib.Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as mounts:
        return any(len(f) > 1 and f[1].replace("\\040", " ") == target for f in (line.split() for line in mounts))


LIVE: list[FuseProcess] = []  # every FUSE daemon started and not yet stopped: run() stops them all at the end


class FuseProcess:
    """A FUSE daemon in the foreground, in its own session (Ctrl-C reaches only the benchmark, which then
    unmounts in order), mounted at workdir/NAME; its output goes to workdir/NAME-stderr.txt."""

    label = "fuse"

    def __init__(self, workdir: pathlib.Path, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.path = workdir / name
        self.path.mkdir(parents=True, exist_ok=True)
        self.stderr_path = workdir / f"{name}-stderr.txt"
        self.output = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=self.output, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env)
        self.pid = self.proc.pid
        self.stopped = False
        LIVE.append(self)

    def wait_live(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_mounted(self.path):
                with contextlib.suppress(OSError):
                    os.listdir(self.path)
                    return
            if self.proc.poll() is not None:
                tail = self.stderr_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.label} exited with status {self.proc.returncode} before mounting:\n{tail}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.label}: {self.path} was not mounted within {timeout:.0f}s")

    def stop(self) -> None:
        """fusermount3 -u (retried while busy), then -uz; then wait for the daemon, killed by its PID if it
        does not exit. Idempotent."""
        if self.stopped:
            return
        try:
            for flag in ("-u", "-uz"):
                for _ in range(20):
                    if not is_mounted(self.path):
                        break
                    if subprocess.run([fusermount(), flag, str(self.path)], capture_output=True).returncode == 0:
                        break
                    time.sleep(0.25)
                if not is_mounted(self.path):
                    break
        finally:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # by its PID (Popen), never by name
                self.proc.wait(timeout=10)
            self.output.close()
            self.stopped = True  # only now: a stop interrupted half-way is done again by run()'s cleanup
            with contextlib.suppress(ValueError):
                LIVE.remove(self)


class Mount(FuseProcess):
    """`bpfs mount --foreground` of the emulator's account."""

    label = "bpfs"

    def __init__(self, workdir: pathlib.Path, config: str, options: list[str], name: str = "mnt") -> None:
        self.log = workdir / f"{name}-bpfs.log"
        cmd = [sys.executable, "-m", "bpfs", "mount", str(workdir / name), "-c", config, "--foreground",
               "--log-file", str(self.log)]
        for option in options:
            cmd += ["-o", option]
        super().__init__(workdir, name, cmd)
        self.stats_served = 0

    def stats(self) -> dict:
        """The daemon's counters. Reading them is itself served (bytes_served): `_stats_served` is how many
        bytes of earlier stats reads that count includes, so deltas can take them out."""
        with open(self.path / ".bpfs" / "stats", "rb") as fh:
            raw = fh.read()
        stats = json.loads(raw)
        stats["_stats_served"] = self.stats_served
        self.stats_served += len(raw)
        return stats

    def status(self) -> dict[str, int]:
        """VmRSS, VmHWM, ... of the daemon in kB."""
        out = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("Vm") or line.startswith("Threads"):
                    name, _, value = line.partition(":")
                    out[name] = int(value.split()[0])
        return out

    def reset_peak_rss(self) -> bool:
        """`echo 5 > /proc/PID/clear_refs` resets VmHWM (Linux >= 4.0), so the peak is the stream's own."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def bdi(self) -> pathlib.Path | None:
        dev = os.stat(self.path).st_dev
        path = pathlib.Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}")
        return path if path.exists() else None

    def wait_readahead(self, options: list[str], timeout: float = 6.0) -> None:
        """With -o read_ahead_kb=N (root; the default 0 leaves the kernel's 128 KiB) bpfs raises the mount's
        readahead from a background thread a moment after the mount appears: wait for it, so a read that
        starts at once is not measured at the kernel's readahead for its first part."""
        want = 0
        for group in options:
            for item in group.split(","):
                name, _, value = item.strip().partition("=")
                if name.replace("-", "_") == "read_ahead_kb" and value.isdigit():
                    want = int(value)
        bdi = self.bdi()
        if os.geteuid() != 0 or want <= 0 or bdi is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if int((bdi / "read_ahead_kb").read_text()) == want:
                    return
            time.sleep(0.05)


PEERS = ("s3fs", "rclone")


class PeerMount(FuseProcess):
    """s3fs-fuse or rclone mounted read-only on the emulator's bucket, with their defaults otherwise.

    s3fs: `s3fs BUCKET MNT -f -o url=http://127.0.0.1:PORT -o use_path_request_style -o passwd_file=F -o ro`
    (no use_cache: its default, so nothing is kept on disk between opens).
    rclone: `rclone mount :s3:BUCKET MNT --read-only` with the remote in the environment (provider Other, the
    endpoint, the keys, force_path_style=true); --vfs-cache-mode off, --buffer-size 16M,
    --vfs-read-chunk-size 128M are its defaults. AWS_CA_BUNDLE is removed from rclone's environment: rclone
    1.60 refuses to start with it set ("unable to load custom CA bundle"), and the endpoint is plain http."""

    def __init__(self, kind: str, workdir: pathlib.Path, info: dict) -> None:
        self.label = kind
        env = dict(os.environ)
        if kind == "s3fs":
            passwd = workdir / "s3fs-passwd"
            passwd.write_text(f"{info['key_id']}:{info['secret']}\n")
            passwd.chmod(0o600)
            self.options = ["url=" + info["s3_url"], "use_path_request_style", f"passwd_file={passwd}", "ro"]
            cmd = ["s3fs", info["bucket"], str(workdir / f"mnt-{kind}"), "-f"]
            for option in self.options:
                cmd += ["-o", option]
        elif kind == "rclone":
            env.pop("AWS_CA_BUNDLE", None)
            env.update({"RCLONE_S3_PROVIDER": "Other", "RCLONE_S3_ENDPOINT": info["s3_url"],
                        "RCLONE_S3_ACCESS_KEY_ID": info["key_id"], "RCLONE_S3_SECRET_ACCESS_KEY": info["secret"],
                        "RCLONE_S3_FORCE_PATH_STYLE": "true", "RCLONE_S3_REGION": info["region"]})
            config = workdir / "rclone.conf"
            config.touch()
            self.options = ["--read-only", "(remote :s3: with provider=Other, endpoint, keys, force_path_style=true, "
                            "region in RCLONE_S3_* variables)"]
            cmd = ["rclone", "mount", f":s3:{info['bucket']}", str(workdir / f"mnt-{kind}"), "--read-only",
                   "--config", str(config), "--cache-dir", str(workdir / "rclone-cache"),
                   "--log-file", str(workdir / "rclone.log")]
        else:
            raise ValueError(f"unknown peer {kind!r}")
        super().__init__(workdir, f"mnt-{kind}", cmd, env)

    def version(self) -> str:
        flag = "--version" if self.label == "s3fs" else "version"
        out = subprocess.run([self.label, flag], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip() if out else "?"


# =====================================================================================================
# measuring
# =====================================================================================================


def evict(path: pathlib.Path, drop_caches: bool) -> None:
    """Forget the kernel's pages of one mounted file, so the next read really goes to the daemon. Also called
    right after each large read through a mount (bpfs, the peers, the user): a page cache that fills with
    every round's reads reaches what this VM keeps (about 12 GB, with DAMON reclaiming), and from then on
    every read into the page cache pays for reclaim. Through one mount, 256 MiB reads went from about 700 to
    330 MB/s after 2 GiB had been read, for root and nobody alike, and stayed at 700 when each read's
    pages were dropped; a GET into memory never slowed, which skewed the ratios."""
    if drop_caches:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3")
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_page_cache(paths: list[pathlib.Path], drop_caches: bool) -> None:
    """Forget the kernel's pages of local files (written ones are synced first), so the next read goes to
    the disk: posix_fadvise(DONTNEED) on each, or with --drop-caches all of the page cache."""
    os.sync()
    if drop_caches:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3")
        return
    for path in paths:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def files_under(root: pathlib.Path) -> list[pathlib.Path]:
    return [pathlib.Path(d) / f for d, _, names in os.walk(root) for f in names]


def warm(path: str) -> None:
    """Read a file of the emulator's store, so its S3 server answers from memory for both sides."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        buf = bytearray(8 * MiB)
        while os.readv(fd, [buf]):
            pass
    finally:
        os.close(fd)


def read_file(path: pathlib.Path, chunk: int = READ_SIZE) -> int:
    buf = bytearray(chunk)
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            n = os.readv(fd, [buf])
            if not n:
                return total
            total += n
    finally:
        os.close(fd)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


USER_READ = """\
import os, sys, time
buf = bytearray(int(sys.argv[2]))
t0 = time.perf_counter()
fd = os.open(sys.argv[1], os.O_RDONLY)
total = 0
try:
    while True:
        n = os.readv(fd, [buf])
        if not n:
            break
        total += n
finally:
    os.close(fd)
print(total, time.perf_counter() - t0)
"""  # read_file(), run as another user: the same open and 1 MiB readv() loop, timed inside the process


class AsUser:
    """Runs the sequential read loop as a normal user (setpriv: that user's uid, gid and no other groups)."""

    def __init__(self, name: str) -> None:
        import pwd

        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, entry.pw_uid, entry.pw_gid
        self.prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]
        self.python = ""
        for python in (sys.executable, "/usr/bin/python3"):  # the venv's may live where the user can't go
            if subprocess.run([*self.prefix, python, "-I", "-c", "pass"], capture_output=True).returncode == 0:
                self.python = python
                break
        if not self.python:
            raise RuntimeError(f"--as-user {name}: no python the user may run")

    def read(self, path: pathlib.Path) -> tuple[int, float]:
        proc = subprocess.run([*self.prefix, self.python, "-I", "-c", USER_READ, str(path), str(READ_SIZE)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the read as {self.name} failed: {proc.stderr.strip()[-500:]}")
        total, elapsed = proc.stdout.split()
        return int(total), float(elapsed)


class Bench:
    def __init__(self, args: argparse.Namespace, mount: Mount, emu: EmulatorProcess,
                 peers: dict[str, PeerMount] | None = None, as_user: AsUser | None = None) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.args, self.mount, self.emu = args, mount, emu
        self.peers = peers or {}
        self.as_user = as_user
        info = emu.info
        self.bucket, self.files = info["bucket"], info["files"]
        self.client = boto3.session.Session().client(
            "s3", region_name=info["region"], endpoint_url=info["s3_url"],
            aws_access_key_id=info["key_id"], aws_secret_access_key=info["secret"],
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 4}),
        )
        self.dir = mount.path / "analyses" / str(info["analysis"]) / "all" / NODE
        self.results: dict[str, Any] = {"rounds": {}}
        self.notes: list[str] = []

    def path(self, name: str) -> pathlib.Path:
        return self.dir / name

    def cold(self, path: pathlib.Path, name: str) -> pathlib.Path:
        """`path` (the object `name`, through a mount) ready for a cold read: looked up (listings and HEADs
        are not part of the read), its kernel pages dropped, the emulator's copy warm again."""
        os.stat(path)
        evict(path, self.args.drop_caches)
        if self.args.drop_caches:
            warm(self.files[name]["store_path"])
        return path

    def peer_path(self, peer: str, name: str) -> pathlib.Path:
        """The object as the peer shows it: the bucket's key layout under its mount point."""
        return self.peers[peer].path / self.key(name)

    def key(self, name: str) -> str:
        return self.files[name]["key"]

    def size(self, name: str) -> int:
        return self.files[name]["size"]

    def counters(self, mount: Mount | None) -> tuple[dict, dict]:
        """(the daemon's counters, the emulator's S3 counters); without a bpfs mount (a peer, boto3) the
        first is empty."""
        return (mount.stats() if mount is not None else {"_stats_served": 0}), self.emu.s3_stats()

    @staticmethod
    def delta(before: tuple[dict, dict], after: tuple[dict, dict]) -> dict:
        names = ("s3_requests", "s3_bytes_fetched", "bytes_served", "cache_hits", "cache_misses", "s3_errors",
                 "bytes_uploaded", "uploads_completed", "uploads_failed", "disk_hits", "disk_misses", "disk_writes")
        out = {n: after[0].get(n, 0) - before[0].get(n, 0) for n in names}
        out["bytes_served"] -= after[0]["_stats_served"] - before[0]["_stats_served"]
        out["server_gets"] = after[1].get("get_requests", 0) - before[1].get("get_requests", 0)
        out["server_bytes_sent"] = after[1].get("bytes_sent", 0) - before[1].get("bytes_sent", 0)
        for name in ("put_requests", "post_requests", "head_requests", "bytes_received"):
            out[f"server_{name}"] = after[1].get(name, 0) - before[1].get(name, 0)
        return out

    def settle(self, mount: Mount | None, quiet: float = 0.3, timeout: float = 60.0) -> None:
        """Wait until the daemon's S3 counters (if a bpfs mount is measured) and the emulator's stop moving:
        prefetches a reader started keep running after it closed the file, and their bytes belong to that
        reader's measurement, not to the next one's."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            daemon, server = self.counters(mount)
            now = (daemon.get("s3_requests"), daemon.get("s3_bytes_fetched"), server.get("requests"),
                   server.get("bytes_sent"), server.get("bytes_received"))
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)
        self.notes.append(f"the daemon was still fetching {timeout:.0f}s after a measurement")

    MAIN = object()  # measured(mount=MAIN): the benchmark's bpfs mount

    def measured(self, fn: Callable[[], Any], mount: Any = MAIN) -> tuple[Any, float, dict]:
        """Run fn timed; the counters' delta also covers what the daemon fetched for it after it returned.
        `mount`: the bpfs mount whose counters to read (None: no bpfs daemon is involved, only the emulator's
        counters count)."""
        if mount is Bench.MAIN:
            mount = self.mount
        self.settle(mount)
        before = self.counters(mount)
        t0 = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - t0
        self.settle(mount)
        return value, elapsed, self.delta(before, self.counters(mount))

    def record(self, section: str, row: dict) -> None:
        self.results["rounds"].setdefault(section, []).append(row)

    @staticmethod
    def log(text: str) -> None:
        print(text, flush=True)

    # ------------------------------------------------------------------------------------------ sections

    def sequential(self) -> None:
        size = self.size("seq_r0.bin")
        user_objects = [f"sequ_r{r}.bin" for r in range(self.args.rounds)] if self.as_user else []
        for r in range(self.args.rounds):
            warm(self.files[f"seq_r{r}.bin"]["store_path"])
        for name in user_objects:
            warm(self.files[name]["store_path"])
        extra = "".join(f" vs {peer}" for peer in self.peers)
        if self.as_user:
            extra += f"; and bpfs again as {self.as_user.name}"
        self.log(f"\n== sequential read of {size / MiB:.0f} MiB in {READ_SIZE // 1024} KiB reads "
                 f"(bpfs mount vs one boto3 GET vs boto3 download_file{extra}; a fresh object every round)")

        def via_mount(r: int) -> dict:
            path = self.cold(self.path(f"seq_r{r}.bin"), f"seq_r{r}.bin")
            n, elapsed, d = self.measured(lambda: read_file(path))
            evict(path, False)  # its pages go at once: see evict
            assert n == size, f"read {n} of {size} bytes through the mount"
            gets = d["server_gets"]
            return {"mbps": size / elapsed / 1e6, "seconds": elapsed, **d,
                    "mean_get_bytes": d["server_bytes_sent"] / gets if gets else 0}

        def via_get(r: int) -> dict:
            key = self.key(f"seq_r{r}.bin")

            def run() -> int:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                total = 0
                try:
                    while chunk := body.read(READ_SIZE):
                        total += len(chunk)
                finally:
                    body.close()
                return total

            n, elapsed, d = self.measured(run, mount=None)
            assert n == size, f"read {n} of {size} bytes with one GET"
            return {"mbps": size / elapsed / 1e6, "seconds": elapsed, "server_gets": d["server_gets"],
                    "server_bytes_sent": d["server_bytes_sent"]}

        def via_download(r: int) -> dict:
            key = self.key(f"seq_r{r}.bin")
            target = pathlib.Path(self.args.workdir) / "download.bin"
            try:
                _, elapsed, d = self.measured(lambda: self.client.download_file(self.bucket, key, str(target)),
                                              mount=None)
                assert target.stat().st_size == size
            finally:
                target.unlink(missing_ok=True)
            return {"mbps": size / elapsed / 1e6, "seconds": elapsed, "server_gets": d["server_gets"]}

        def via_peer(peer: str) -> Callable[[int], dict]:
            def side(r: int) -> dict:
                path = self.cold(self.peer_path(peer, f"seq_r{r}.bin"), f"seq_r{r}.bin")
                n, elapsed, d = self.measured(lambda: read_file(path), mount=None)
                evict(path, False)
                assert n == size, f"read {n} of {size} bytes through {peer}"
                return {"mbps": size / elapsed / 1e6, "seconds": elapsed, "server_gets": d["server_gets"],
                        "server_bytes_sent": d["server_bytes_sent"]}
            return side

        def via_user(r: int) -> dict:
            assert self.as_user is not None
            path = self.cold(self.path(f"sequ_r{r}.bin"), f"sequ_r{r}.bin")
            (n, elapsed), _, d = self.measured(lambda: self.as_user.read(path))
            evict(path, False)
            assert n == size, f"read {n} of {size} bytes through the mount as {self.as_user.name}"
            return {"mbps": size / elapsed / 1e6, "seconds": elapsed, **d}

        sides: dict[str, Callable[[int], dict]] = {"bpfs": via_mount, "get": via_get, "download_file": via_download}
        sides.update({peer: via_peer(peer) for peer in self.peers})
        if self.as_user:
            sides["as_user"] = via_user
        self.alternate("sequential", sides)

    def alternate(self, section: str, sides: dict[str, Callable[[int], dict]]) -> None:
        """Round r runs the sides in order, round r+1 in reverse: A B C, C B A, A B C, ..."""
        order = list(sides)
        for r in range(self.args.rounds):
            row: dict[str, Any] = {"round": r, "order": order if r % 2 == 0 else order[::-1]}
            for side in row["order"]:
                row[side] = sides[side](r)
            self.record(section, row)
            sides_text = ", ".join(f"{side} {self.fmt_side(row[side])}" for side in order)
            self.log(f"  round {r + 1} ({' then '.join(row['order'])}): {sides_text}")

    @staticmethod
    def fmt_side(values: dict) -> str:
        if "mbps" in values:
            text = f"{values['mbps']:.0f} MB/s"
            if values.get("puts"):
                text += f" ({values['puts']} PUTs)"
            if "s3_bytes_fetched" in values and "seconds" in values:
                fetched = values["s3_bytes_fetched"]
                gets = values["s3_requests"]
                text += f" (fetched {fetched / MiB:.1f} MiB in {gets} GETs"
                if gets:
                    text += f" of {fetched / gets / MiB:.2f} MiB on average"
                if values.get("cache_hits"):
                    text += f", {values['cache_hits']} cache hits"
                text += ")"
            elif "server_bytes_sent" in values:
                text += f" (server sent {values['server_bytes_sent'] / MiB:.1f} MiB in {values['server_gets']} GETs)"
            return text
        if "ms" in values:
            text = f"{values['ms']:.2f} ms"
            if "s3_bytes_fetched" in values:
                text += f" (fetched {values['s3_bytes_fetched'] / 1024:.0f} KiB)"
            elif "server_bytes_sent" in values:
                text += f" (server sent {values['server_bytes_sent'] / 1024:.0f} KiB)"
            return text
        return json.dumps(values)

    def ttfb(self) -> None:
        extra = "".join(f" and {peer}" for peer in self.peers)
        self.log(f"\n== time to first byte (open + 1-byte read through the mount{extra}, cold; vs one ranged GET "
                 "bytes=0-0)")
        for r in range(self.args.rounds):
            warm(self.files[f"ttfb_r{r}.bin"]["store_path"])

        def first_byte(path: pathlib.Path, mount: Any) -> dict:
            os.stat(path)  # the lookup is not part of the first byte (an `ls -l` did it)

            def run() -> bytes:
                fd = os.open(path, os.O_RDONLY)
                try:
                    return os.read(fd, 1)
                finally:
                    os.close(fd)

            data, elapsed, d = self.measured(run, mount=mount)
            assert len(data) == 1
            return {"ms": elapsed * 1e3, **d}

        # one fresh object per round: the first bytes of a file must not be in the daemon's cache already
        def via_mount(r: int) -> dict:
            return first_byte(self.path(f"ttfb_r{r}.bin"), Bench.MAIN)

        def via_peer(peer: str) -> Callable[[int], dict]:
            def side(r: int) -> dict:
                out = first_byte(self.peer_path(peer, f"ttfb_r{r}.bin"), None)
                return {"ms": out["ms"], "server_bytes_sent": out["server_bytes_sent"],
                        "server_gets": out["server_gets"]}
            return side

        def via_get(r: int) -> dict:
            key = self.key(f"ttfb_r{r}.bin")

            def run() -> bytes:
                body = self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-0")["Body"]
                try:
                    return body.read(1)
                finally:
                    body.close()

            data, elapsed, d = self.measured(run, mount=None)
            assert len(data) == 1
            return {"ms": elapsed * 1e3, "server_bytes_sent": d["server_bytes_sent"]}

        sides: dict[str, Callable[[int], dict]] = {"bpfs": via_mount, "get": via_get}
        sides.update({peer: via_peer(peer) for peer in self.peers})
        self.alternate("ttfb", sides)

    def head(self) -> None:
        self.log("\n== head -c 100 on a cold file")
        for r in range(self.args.rounds):
            name = f"head_r{r}.bin"
            path = self.path(name)
            os.stat(path)
            proc, elapsed, d = self.measured(
                lambda p=path: subprocess.run(["head", "-c", "100", str(p)], capture_output=True, check=True))
            with open(self.files[name]["store_path"], "rb") as fh:
                assert proc.stdout == fh.read(100), "head -c 100 through the mount returned wrong bytes"
            row = {"round": r, "ms": elapsed * 1e3, **d}
            self.record("head", row)
            self.log(f"  round {r + 1}: fetched {d['s3_bytes_fetched']:,} B in {d['s3_requests']} GETs "
                     f"({d['s3_bytes_fetched'] / 100:,.0f}x the 100 B asked), kernel asked the daemon for "
                     f"{d['bytes_served']:,} B, {elapsed * 1e3:.1f} ms")

    def random_reads(self) -> None:
        name, count, length = "random.bin", self.args.random_reads, 4096
        size, path = self.size(name), self.path(name)
        asked = count * length
        extra = f"; the same offsets through {', '.join(self.peers)} and as boto3 range GETs" if self.peers else ""
        self.log(f"\n== {count} random {length // 1024} KiB preads on the {size / MiB:.0f} MiB file "
                 f"(fresh open, page cache dropped; {asked // 1024} KiB asked{extra})")
        with open(self.files[name]["store_path"], "rb") as fh:
            truth = fh.fileno()
            for r in range(self.args.rounds):
                rng = random.Random(f"bench-random-{r}")  # seeded, and different every round
                offsets = [rng.randrange(size - length) for _ in range(count)]

                def preads(where: pathlib.Path, mount: Any, offs: list[int] = offsets) -> tuple[float, dict]:
                    evict(where, self.args.drop_caches)

                    def run() -> list[bytes]:
                        fd = os.open(where, os.O_RDONLY)
                        try:
                            return [os.pread(fd, length, off) for off in offs]
                        finally:
                            os.close(fd)

                    chunks, elapsed, d = self.measured(run, mount=mount)
                    for off, chunk in zip(offs, chunks, strict=True):
                        assert chunk == os.pread(truth, length, off), f"wrong bytes at {off} through {where}"
                    return elapsed, d

                def ranged_gets(offs: list[int] = offsets) -> tuple[float, dict]:
                    key = self.key(name)

                    def run() -> list[bytes]:
                        out = []
                        for off in offs:
                            body = self.client.get_object(Bucket=self.bucket, Key=key,
                                                          Range=f"bytes={off}-{off + length - 1}")["Body"]
                            out.append(body.read())
                        return out

                    chunks, elapsed, d = self.measured(run, mount=None)
                    assert all(len(c) == length for c in chunks)
                    return elapsed, d

                others: dict[str, Callable[[], tuple[float, dict]]] = {}
                if self.peers:
                    others["get"] = ranged_gets
                    for peer in self.peers:
                        others[peer] = lambda p=peer: preads(self.peer_path(p, name), None)
                peer_rows: dict[str, dict] = {}
                order = ["bpfs", *others]
                for side in order if r % 2 == 0 else order[::-1]:  # alternated like the other sections
                    if side == "bpfs":
                        elapsed, d = preads(path, Bench.MAIN)
                        continue
                    side_elapsed, side_d = others[side]()
                    peer_rows[side] = {"ms": side_elapsed * 1e3, "server_bytes_sent": side_d["server_bytes_sent"],
                                       "server_gets": side_d["server_gets"]}
                row = {"round": r, "ms": elapsed * 1e3, "asked": asked, **d,
                       "multiple": d["s3_bytes_fetched"] / asked, "peers": peer_rows}
                self.record("random", row)
                self.log(f"  round {r + 1}: fetched {d['s3_bytes_fetched'] / 1024:,.0f} KiB in {d['s3_requests']} "
                         f"GETs = {row['multiple']:.2f}x the {asked // 1024} KiB asked; kernel asked the daemon "
                         f"for {d['bytes_served'] / 1024:,.0f} KiB; {elapsed * 1e3:.0f} ms "
                         f"({elapsed * 1e6 / count:.0f} us/read)")
                for side, values in peer_rows.items():
                    self.log(f"    {side}: server sent {values['server_bytes_sent'] / 1024:,.0f} KiB in "
                             f"{values['server_gets']} GETs = {values['server_bytes_sent'] / asked:.2f}x; "
                             f"{values['ms']:.0f} ms")

    def samtools(self) -> None:
        region = self.args.region
        size = self.size("region_r0.bam")
        extra = f" (and through {', '.join(self.peers)})" if self.peers else ""
        self.log(f"\n== samtools view BAM {region} on a cold {size / 1e6:.1f} MB BAM (+ .bai){extra}")
        samtools = shutil.which("samtools")
        if samtools is None:
            self.notes.append("samtools: not installed, region query skipped")
            self.log("  samtools is not installed: skipped")
            return

        def view(bam: pathlib.Path, mount: Any) -> tuple[int, float, dict]:
            os.stat(bam)
            os.stat(str(bam) + ".bai")
            proc, elapsed, d = self.measured(
                lambda: subprocess.run([samtools, "view", str(bam), region], capture_output=True), mount=mount)
            if proc.returncode != 0:
                raise RuntimeError(f"samtools view {bam} failed: {proc.stderr.decode(errors='replace').strip()}")
            return proc.stdout.count(b"\n"), elapsed, d

        for r in range(self.args.rounds):
            name = f"region_r{r}.bam"  # one copy per round: cold in every daemon
            peer_rows: dict[str, dict] = {}
            order = ["bpfs", *self.peers]
            for side in order if r % 2 == 0 else order[::-1]:  # alternated like the other sections
                if side == "bpfs":
                    reads, elapsed, d = view(self.path(name), Bench.MAIN)
                    continue
                side_reads, side_elapsed, side_d = view(self.peer_path(side, name), None)
                peer_rows[side] = {"ms": side_elapsed * 1e3, "reads": side_reads,
                                   "server_bytes_sent": side_d["server_bytes_sent"],
                                   "server_gets": side_d["server_gets"]}
            row = {"round": r, "ms": elapsed * 1e3, "reads": reads, "bam_size": size, **d,
                   "percent": 100 * d["s3_bytes_fetched"] / size,
                   "per_served": d["s3_bytes_fetched"] / d["bytes_served"] if d["bytes_served"] else float("nan"),
                   "peers": peer_rows}
            self.record("samtools", row)
            self.log(f"  round {r + 1}: {reads} reads; fetched {d['s3_bytes_fetched'] / 1024:,.0f} KiB in "
                     f"{d['s3_requests']} GETs = {row['percent']:.2f}% of the BAM; samtools (via the kernel) read "
                     f"{d['bytes_served'] / 1024:,.0f} KiB = {row['per_served']:.2f}x; {elapsed * 1e3:.0f} ms")
            for peer, values in peer_rows.items():
                if values["reads"] != reads:
                    raise RuntimeError(f"samtools through {peer} found {values['reads']} reads, bpfs {reads}")
                self.log(f"    {peer}: server sent {values['server_bytes_sent'] / 1024:,.0f} KiB in "
                         f"{values['server_gets']} GETs = {100 * values['server_bytes_sent'] / size:.2f}% of the BAM; "
                         f"{values['ms']:.0f} ms")

    def wait_disk_writer(self, mount: Mount, quiet: float = 1.0, timeout: float = 600.0) -> dict:
        """Wait until the disk cache's background writer is done: disk_writes (and the blocks it dropped or
        could not write) unchanged for `quiet` seconds. Returns the daemon's counters then."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while True:
            stats = mount.stats()
            now = (stats.get("disk_writes"), stats.get("disk_dropped"), stats.get("disk_full"))
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return stats
            if time.monotonic() > deadline:
                self.notes.append(f"the disk cache was still writing {timeout:.0f}s after the first read")
                return stats
            time.sleep(0.1)

    def reread(self) -> None:
        """A 1 GiB object read through a fresh mount with the disk cache on (cold), unmounted once the cache
        writer is done, mounted again on the same cache directory and read again; against a copy of the
        object on local disk. The cache files and the local copy leave the page cache before their reads."""
        name = "reread.bin"
        size = self.size(name)
        workdir = pathlib.Path(self.args.workdir)
        relative = self.path(name).relative_to(self.mount.path)
        cache_dir = workdir / "reread-cache"
        local = workdir / "reread-local.bin"
        limit = 2 * size + 64 * MiB  # room for every block and its header: nothing is evicted
        options = [*self.args.options, f"disk_cache={limit},cache_dir={cache_dir}"]
        self.log(f"\n== re-read of {size / MiB:,.0f} MiB after a remount with -o disk_cache={limit},cache_dir=... "
                 "(1st read cold, 2nd from the disk cache; vs the same bytes from a local file; page cache of "
                 "the cache files and the local file dropped before their reads)")
        shutil.copyfile(self.files[name]["store_path"], local)
        config = self.emu.info["config"]

        def through_mount(r: int, which: str) -> tuple[dict, dict]:
            mount = Mount(workdir, config, options, name="mnt-reread")
            try:
                mount.wait_live()
                mount.wait_readahead(options)
                path = mount.path / relative
                os.stat(path)
                n, elapsed, d = self.measured(lambda: read_file(path), mount=mount)
                assert n == size, f"read {n} of {size} bytes through the mount ({which} read)"
                stats = self.wait_disk_writer(mount) if which == "1st" else mount.stats()
            finally:
                mount.stop()
            return {"mbps": size / elapsed / 1e6, "seconds": elapsed, **d}, stats

        try:
            for r in range(self.args.rounds):
                shutil.rmtree(cache_dir, ignore_errors=True)  # every round starts cold
                warm(self.files[name]["store_path"])
                first, stats1 = through_mount(r, "1st")
                disk = {n: stats1.get(n, 0) for n in ("disk_writes", "disk_dropped", "disk_full", "disk_misses",
                                                     "disk_hits", "disk_evictions")}
                disk["bytes_on_disk"] = stats1.get("disk_cache", {}).get("bytes_on_disk")
                row: dict[str, Any] = {"round": r, "first": first, "disk": disk,
                                       "order": ["second", "local"] if r % 2 == 0 else ["local", "second"]}
                for side in row["order"]:
                    if side == "second":
                        drop_page_cache(files_under(cache_dir), self.args.drop_caches)
                        second, stats2 = through_mount(r, "2nd")
                        second.update({n: stats2.get(n, 0) for n in ("disk_hits", "disk_misses", "disk_corrupt")})
                        row["second"] = second
                    else:
                        drop_page_cache([local], self.args.drop_caches)
                        n, elapsed, d = self.measured(lambda: read_file(local), mount=None)
                        assert n == size
                        row["local"] = {"mbps": size / elapsed / 1e6, "seconds": elapsed,
                                        "server_bytes_sent": d["server_bytes_sent"]}
                self.record("reread", row)
                second, local_row = row["second"], row["local"]
                self.log(f"  round {r + 1}: 1st {first['mbps']:.0f} MB/s (server sent "
                         f"{first['server_bytes_sent'] / MiB:,.1f} MiB; disk cache wrote {disk['disk_writes']} "
                         f"blocks, dropped {disk['disk_dropped']}); 2nd {second['mbps']:.0f} MB/s (server sent "
                         f"{second['server_bytes_sent']:,} B in {second['server_gets']} GETs and "
                         f"{second['server_head_requests']} HEADs; disk hits {second['disk_hits']}, misses "
                         f"{second['disk_misses']}); local file {local_row['mbps']:.0f} MB/s "
                         f"(order {' then '.join(row['order'])})")
        finally:
            local.unlink(missing_ok=True)
            shutil.rmtree(cache_dir, ignore_errors=True)

    def stream_rss(self) -> None:
        name = "stream.bin"
        size, path = self.size(name), self.path(name)
        warm(self.files[name]["store_path"])
        self.log(f"\n== peak daemon RSS while `cat`-ing {size / MiB:,.0f} MiB to /dev/null")
        before = self.mount.status()
        reset = self.mount.reset_peak_rss()
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError, KeyError):
                    samples.append(self.mount.status()["VmRSS"])
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with open(os.devnull, "wb") as null:
                _, elapsed, d = self.measured(lambda: subprocess.run(["cat", str(path)], stdout=null, check=True))
                evict(path, False)
        finally:
            stop.set()
            sampler.join()
        after = self.mount.status()
        row = {"rss_before_kb": before["VmRSS"], "hwm_before_kb": before["VmHWM"], "hwm_reset": reset,
               "hwm_kb": after["VmHWM"], "rss_after_kb": after["VmRSS"], "max_sampled_rss_kb": max(samples or [0]),
               "samples": len(samples), "mbps": size / elapsed / 1e6, "seconds": elapsed, **d}
        self.results["stream"] = row
        self.log(f"  {size / elapsed / 1e6:.0f} MB/s; fetched {d['s3_bytes_fetched'] / MiB:,.0f} MiB in "
                 f"{d['s3_requests']} GETs; RSS before {before['VmRSS'] / 1024:.0f} MiB, max sampled (every 50 ms) "
                 f"{row['max_sampled_rss_kb'] / 1024:.0f} MiB, VmHWM {after['VmHWM'] / 1024:.0f} MiB "
                 f"({'reset before the stream' if reset else 'since the daemon started'}), after "
                 f"{after['VmRSS'] / 1024:.0f} MiB")

    def forget_upload(self, bucket: str, key: str) -> None:
        """Delete an object the write section made, once measured. The emulator keeps objects in files:
        512 MiB of dirty pages per 256 MiB upload (the parts, then the object), and after two or three uploads
        the kernel's writeback throttled both sides to the disk's speed (380 -> 215 MB/s): that measured the
        disk, not the link. Deleted before writeback, the pages never reach the disk."""
        self.client.delete_object(Bucket=bucket, Key=key)

    def uploaded_as(self, sample: str, name: str) -> tuple[str, str]:
        """(bucket, key) of a file copied into samples/new/<sample>/, from its xattr in samples/<id>/."""
        samples = self.mount.path / "samples"
        rows = [line.split("\t") for line in (samples / "index.tsv").read_text().splitlines()[1:]]
        ids = [row[0] for row in rows if len(row) > 1 and row[1] == sample]
        uri = os.getxattr(samples / ids[-1] / name, "user.basepair.s3_uri").decode()
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bucket, key

    def write(self) -> None:
        self.log("\n== write: cp into samples/new/ vs boto3 upload_file")
        target_dir = self.mount.path / "samples" / "new" / "bench"
        try:
            os.mkdir(target_dir)
        except OSError as exc:
            self.results["write"] = {"available": False, "error": exc.strerror}
            self.log(f"  write: not available (samples/new is read-only in this build: mkdir says {exc.strerror})")
            return
        size = self.args.size_mib * MiB
        source = pathlib.Path(self.args.workdir) / "upload.bin"
        _write_random(source, size)
        try:
            def via_mount(r: int) -> dict:
                dest = target_dir / f"bench_{r}.bin"
                _, elapsed, d = self.measured(
                    lambda: subprocess.run(["cp", str(source), str(dest)], check=True, capture_output=True))
                if d["bytes_uploaded"] != size or d["uploads_failed"]:
                    raise RuntimeError(f"cp into the mount uploaded {d['bytes_uploaded']} of {size} bytes "
                                       f"({d['uploads_failed']} uploads failed)")
                self.forget_upload(*self.uploaded_as("bench", dest.name))
                return {"mbps": size / elapsed / 1e6, "seconds": elapsed, "puts": d["server_put_requests"],
                        "bytes_received": d["server_bytes_received"]}

            def via_upload(r: int) -> dict:
                key = f"bench-uploads/upload_{r}.bin"
                _, elapsed, d = self.measured(lambda: self.client.upload_file(str(source), self.bucket, key))
                self.forget_upload(self.bucket, key)
                return {"mbps": size / elapsed / 1e6, "seconds": elapsed, "puts": d["server_put_requests"]}

            self.alternate("write", {"bpfs": via_mount, "upload_file": via_upload})
            self.results["write"] = {"available": True}
        except (OSError, subprocess.CalledProcessError) as exc:
            self.results["write"] = {"available": False, "error": str(exc)}
            self.log(f"  write: failed ({exc})")
        finally:
            source.unlink(missing_ok=True)


# =====================================================================================================
# the table
# =====================================================================================================


def summarize(bench: Bench) -> list[list[str]]:
    rounds = bench.results["rounds"]
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("ok" if ok else "MISS")

    if "sequential" in rounds:
        seq = rounds["sequential"]
        mount = median([x["bpfs"]["mbps"] for x in seq])
        get = median([x["get"]["mbps"] for x in seq])
        dl = median([x["download_file"]["mbps"] for x in seq])
        ratios_get = [x["bpfs"]["mbps"] / x["get"]["mbps"] for x in seq]
        ratios_dl = [x["bpfs"]["mbps"] / x["download_file"]["mbps"] for x in seq]
        ratio_get, ratio_dl = median(ratios_get), median(ratios_dl)
        fetched = median([x["bpfs"]["s3_bytes_fetched"] / bench.size("seq_r0.bin") for x in seq])
        summary["sequential"] = {"bpfs_mbps": mount, "get_mbps": get, "download_file_mbps": dl,
                                 "ratio_get": ratio_get, "ratio_download_file": ratio_dl, "fetched_per_size": fetched}
        shaped = bool(bench.args.s3_latency_ms or bench.args.s3_mbps)  # the goal is per link (issue 13)
        rows.append(["sequential MB/s", f"{mount:.0f}", f"{get:.0f} (1 GET)", f"{ratio_get:.2f}x",
                     "-" if shaped else ">= 0.35x", "-" if shaped else verdict(ratio_get >= 0.35)])
        rows.append(["sequential MB/s", f"{mount:.0f}", f"{dl:.0f} (download_file)", f"{ratio_dl:.2f}x",
                     ">= 0.85x" if shaped else "-", verdict(ratio_dl >= 0.85) if shaped else "-"])
        rows.append(["  S3 bytes / file size", f"{fetched:.3f}", "1.000", "", "", ""])
        mean_get = median([x["bpfs"]["s3_bytes_fetched"] / max(1, x["bpfs"]["s3_requests"]) for x in seq])
        summary["sequential"]["mean_get_bytes"] = mean_get
        rows.append(["  mean S3 GET size", f"{mean_get / MiB:.2f} MiB", "", "", "", ""])
        if "as_user" in seq[0]:
            user_name = bench.as_user.name if bench.as_user else "user"
            user = median([x["as_user"]["mbps"] for x in seq])
            ratio_user = median([x["as_user"]["mbps"] / x["bpfs"]["mbps"] for x in seq])
            summary["sequential"].update({"as_user": user_name, "as_user_mbps": user, "ratio_user_root": ratio_user})
            rows.append([f"sequential MB/s as {user_name}", f"{user:.0f}", f"{mount:.0f} (root, same mount)",
                         f"{ratio_user:.2f}x", ">= 0.9x", verdict(ratio_user >= 0.9)])
    if "ttfb" in rounds:
        t = rounds["ttfb"]
        mount, get = median([x["bpfs"]["ms"] for x in t]), median([x["get"]["ms"] for x in t])
        ratio = median([x["bpfs"]["ms"] / x["get"]["ms"] for x in t])
        fetched = median([x["bpfs"]["s3_bytes_fetched"] for x in t])
        summary["ttfb"] = {"bpfs_ms": mount, "get_ms": get, "ratio": ratio, "bpfs_fetched": fetched}
        rows.append(["TTFB ms", f"{mount:.2f}", f"{get:.2f} (1 GET)", f"{ratio:.2f}x", "<= 2.0x",
                     verdict(ratio <= 2.0)])
        rows.append(["  S3 bytes for the first byte", f"{fetched:,.0f}", "1", "", "", ""])
    if "head" in rounds:
        fetched = median([x["s3_bytes_fetched"] for x in rounds["head"]])
        summary["head"] = {"fetched": fetched, "multiple": fetched / 100}
        rows.append(["head -c 100: S3 bytes", f"{fetched:,.0f}", "100 asked", f"{fetched / 100:,.0f}x", "-", "-"])
    if "random" in rounds:
        rr = rounds["random"]
        fetched = median([x["s3_bytes_fetched"] for x in rr])
        asked = rr[0]["asked"]
        multiple = fetched / asked
        summary["random"] = {"fetched": fetched, "asked": asked, "multiple": multiple,
                             "ms": median([x["ms"] for x in rr])}
        rows.append([f"{bench.args.random_reads} x 4 KiB preads: S3 bytes", f"{fetched / 1024:,.0f} KiB",
                     f"{asked / 1024:,.0f} KiB asked", f"{multiple:.2f}x", "<= 10x", verdict(multiple <= 10)])
    if rounds.get("samtools"):
        st = rounds["samtools"]
        fetched = median([x["s3_bytes_fetched"] for x in st])
        size = st[0]["bam_size"]
        served = median([x["bytes_served"] for x in st])
        percent = 100 * fetched / size
        summary["samtools"] = {"fetched": fetched, "bam_size": size, "percent": percent, "served": served,
                               "per_served": fetched / served if served else None,
                               "ms": median([x["ms"] for x in st])}
        rows.append(["samtools region: S3 bytes", f"{fetched / 1024:,.0f} KiB", f"{size / 1e6:.1f} MB BAM",
                     f"{percent:.2f}%", "<= 5%", verdict(percent <= 5)])
        # what the kernel asked for samtools (its reads plus the kernel's readahead), not what samtools read
        rows.append(["  vs bytes the kernel asked", f"{fetched / 1024:,.0f} KiB", f"{served / 1024:,.0f} KiB asked",
                     f"{fetched / served:.2f}x" if served else "-", "-", "-"])
    if rounds.get("reread"):
        rr = rounds["reread"]
        size = bench.size("reread.bin")
        first = median([x["first"]["mbps"] for x in rr])
        second = median([x["second"]["mbps"] for x in rr])
        local = median([x["local"]["mbps"] for x in rr])
        ratio_first = median([x["second"]["mbps"] / x["first"]["mbps"] for x in rr])
        ratio_local = median([x["second"]["mbps"] / x["local"]["mbps"] for x in rr])
        fetched = median([x["second"]["server_bytes_sent"] for x in rr])
        writes = median([x["disk"]["disk_writes"] for x in rr])
        dropped = median([x["disk"]["disk_dropped"] for x in rr])
        hits = median([x["second"]["disk_hits"] for x in rr])
        misses = median([x["second"]["disk_misses"] for x in rr])
        shaped = bool(bench.args.s3_latency_ms or bench.args.s3_mbps)
        summary["reread"] = {"first_mbps": first, "second_mbps": second, "local_mbps": local,
                             "ratio_first": ratio_first, "ratio_local": ratio_local, "second_s3_bytes": fetched,
                             "disk_writes": writes, "disk_dropped": dropped, "disk_hits": hits,
                             "disk_misses": misses}
        rows.append(["re-read after remount: S3 bytes", f"{fetched:,.0f}", f"{size / MiB:,.0f} MiB object",
                     f"{fetched / size:.3f}", "0", verdict(fetched == 0)])
        rows.append(["re-read MB/s vs 1st (cold) read", f"{second:.0f}", f"{first:.0f} (1st read)",
                     f"{ratio_first:.2f}x", ">= 2.0x", verdict(ratio_first >= 2.0) if shaped else "- (loopback)"])
        rows.append(["re-read MB/s vs local file", f"{second:.0f}", f"{local:.0f} (local file)",
                     f"{ratio_local:.2f}x", "-", "-"])
        blocks = -(-size // (256 << 10))
        rows.append(["  disk blocks written / dropped (1st)", f"{writes:,.0f} / {dropped:,.0f}",
                     f"{blocks:,} blocks", "", "", ""])
        rows.append(["  disk hits / misses (2nd)", f"{hits:,.0f} / {misses:,.0f}", "", "", "", ""])
    if "stream" in bench.results:
        s = bench.results["stream"]
        peak = max(s["hwm_kb"], s["max_sampled_rss_kb"]) / 1024
        summary["stream"] = {"peak_rss_mib": peak, "hwm_mib": s["hwm_kb"] / 1024,
                             "max_sampled_rss_mib": s["max_sampled_rss_kb"] / 1024, "mbps": s["mbps"]}
        gib = bench.size("stream.bin") / (1 << 30)
        rows.append([f"daemon peak RSS MB, {gib:g} GiB stream", f"{peak * MiB / 1e6:.0f}", "-", "-", "< 200 MB",
                     verdict(peak * MiB / 1e6 < 200)])
        rows.append(["  stream MB/s (cat)", f"{s['mbps']:.0f}", "", "", "", ""])
    end = bench.results.get("end_status")
    if end:
        summary["end_of_run"] = {"rss_mib": end["VmRSS"] / 1024, "hwm_mib": end["VmHWM"] / 1024}
        rows.append(["daemon RSS MB at the end of the run", f"{end['VmRSS'] * 1024 / 1e6:.0f}",
                     f"peak {end['VmHWM'] * 1024 / 1e6:.0f}", "", "", ""])
    write = bench.results.get("write", {})
    if write.get("available") and rounds.get("write"):
        w = rounds["write"]
        mount, up = median([x["bpfs"]["mbps"] for x in w]), median([x["upload_file"]["mbps"] for x in w])
        ratio = median([x["bpfs"]["mbps"] / x["upload_file"]["mbps"] for x in w])
        summary["write"] = {"bpfs_mbps": mount, "upload_file_mbps": up, "ratio": ratio}
        rows.append(["write MB/s (cp)", f"{mount:.0f}", f"{up:.0f} (upload_file)", f"{ratio:.2f}x", "-", "-"])
    elif "write" in bench.results:
        rows.append(["write MB/s (cp)", "n/a", "-", "-", "-", "not available"])
    bench.results["summary"] = summary
    return rows


def summarize_peers(bench: Bench) -> list[list[str]]:
    """bpfs beside boto3 and the peers. Every byte count here is the emulator's (what its S3 server sent),
    for bpfs too; a ratio is bpfs / the peer per round, then the median."""
    rounds = bench.results["rounds"]
    peers = list(bench.peers)
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}

    def ratios(values: list[tuple[float, float]]) -> str:
        good = [a / b for a, b in values if b]
        return f"{median(good):.2f}x" if good else "-"

    def add(metric: str, bpfs: list[float], boto3: str, per_peer: dict[str, list[float]], fmt: str) -> None:
        row = [metric, format(median(bpfs), fmt), boto3]
        row += [format(median(per_peer[p]), fmt) if per_peer.get(p) else "-" for p in peers]
        row += [ratios(list(zip(bpfs, per_peer[p], strict=True))) if per_peer.get(p) else "-" for p in peers]
        rows.append(row)
        summary[metric] = {"bpfs": median(bpfs), **{p: median(v) for p, v in per_peer.items() if v}}

    if rounds.get("sequential") and peers:
        seq = rounds["sequential"]
        size = bench.size("seq_r0.bin")
        add("sequential MB/s", [x["bpfs"]["mbps"] for x in seq],
            f"{median([x['get']['mbps'] for x in seq]):.0f} (1 GET)",
            {p: [x[p]["mbps"] for x in seq] for p in peers}, ".0f")
        add("  S3 bytes / file size", [x["bpfs"]["server_bytes_sent"] / size for x in seq], "1.000",
            {p: [x[p]["server_bytes_sent"] / size for x in seq] for p in peers}, ".3f")
    if rounds.get("ttfb") and peers:
        t = rounds["ttfb"]
        add("TTFB ms", [x["bpfs"]["ms"] for x in t], f"{median([x['get']['ms'] for x in t]):.2f} (1 GET)",
            {p: [x[p]["ms"] for x in t] for p in peers}, ".2f")
        add("  S3 KiB for the first byte", [x["bpfs"]["server_bytes_sent"] / 1024 for x in t], "1 byte",
            {p: [x[p]["server_bytes_sent"] / 1024 for x in t] for p in peers}, ",.0f")
    if rounds.get("random") and peers:
        rr = rounds["random"]
        n = bench.args.random_reads
        add(f"{n} x 4 KiB preads: S3 KiB", [x["server_bytes_sent"] / 1024 for x in rr],
            f"{median([x['peers']['get']['server_bytes_sent'] / 1024 for x in rr]):,.0f} ({n} GETs)",
            {p: [x["peers"][p]["server_bytes_sent"] / 1024 for x in rr] for p in peers}, ",.0f")
        add(f"{n} x 4 KiB preads: ms", [x["ms"] for x in rr],
            f"{median([x['peers']['get']['ms'] for x in rr]):,.0f} ({n} GETs)",
            {p: [x["peers"][p]["ms"] for x in rr] for p in peers}, ",.0f")
    if rounds.get("samtools") and peers:
        st = rounds["samtools"]
        add("samtools region: S3 KiB", [x["server_bytes_sent"] / 1024 for x in st], "-",
            {p: [x["peers"][p]["server_bytes_sent"] / 1024 for x in st] for p in peers}, ",.0f")
        add("samtools region: ms", [x["ms"] for x in st], "-", {p: [x["peers"][p]["ms"] for x in st] for p in peers},
            ",.0f")
    bench.results["summary_peers"] = summary
    return rows


def print_table(rows: list[list[str]], header: list[str] | None = None, text_columns: int = 2) -> None:
    """Numbers right-aligned, the last `text_columns` columns (goal, result) left-aligned."""
    header = header or ["metric", "bpfs", "baseline", "ratio", "goal", "result"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    first_text = len(header) - text_columns

    def fmt(r: list[str]) -> str:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) if i < first_text else r[i].ljust(widths[i])
                                           for i in range(1, len(r))]
        return "  ".join(cells).rstrip()

    print(fmt(header))
    print(line)
    for r in rows:
        print(fmt(r))


# =====================================================================================================
# main
# =====================================================================================================


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark a bpfs mount of the emulator against boto3 on the "
                                                 "same S3 server (medians and ratios from one run).")
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds per measurement (default 5)")
    parser.add_argument("--size-mib", type=int, default=256, help="size of the sequential/random object (MiB)")
    parser.add_argument("--bam-reads", type=int, default=400000, help="reads in the BAM (400000 ~ 50 MB)")
    parser.add_argument("--stream-gib", type=float, default=1.0, help="size of the RSS stream object (GiB)")
    parser.add_argument("--random-reads", type=int, default=200, help="number of random 4 KiB preads")
    parser.add_argument("--region", default="chr1:1000000-1010000", help="samtools region")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 rounds, 32 MiB, 40000 BAM reads, 64 MiB stream")
    parser.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTION[,OPTION...]",
                        help="bpfs mount options to benchmark, e.g. -o part_mb=16,readers=16")
    parser.add_argument("--read-ahead-kb", type=int, metavar="KB",
                        help="set the mount's bdi read_ahead_kb after mounting (root)")
    parser.add_argument("--drop-caches", action="store_true",
                        help="drop all caches (echo 3 > /proc/sys/vm/drop_caches, root) instead of "
                             "posix_fadvise(DONTNEED) on the mounted file")
    parser.add_argument("--only", metavar="SECTIONS",
                        help="comma-separated subset of: stream,ttfb,head,random,samtools,sequential,reread,write")
    parser.add_argument("--s3-latency-ms", type=float, default=0.0, metavar="MS",
                        help="make the emulator's S3 wait MS on every request (everyone pays it): before it "
                             "answers, and before it reads an upload's body; loopback has no latency, real S3 "
                             "has ~10-50 ms to the first byte")
    parser.add_argument("--s3-mbps", type=float, default=0.0, metavar="MB/S",
                        help="cap each S3 object body at MB/S, GET bodies and PUT/UploadPart bodies alike (real "
                             "S3 gives one connection ~50-100 MB/s; loopback gives GB/s); with --s3-latency-ms 20 "
                             "the emulator behaves like S3")
    parser.add_argument("--peers", nargs="?", const="s3fs,rclone", default="", metavar="s3fs,rclone",
                        help="also mount s3fs-fuse and rclone (those installed) on the same bucket and compare "
                             "them in sequential, ttfb, random and samtools (a second table)")
    parser.add_argument("--as-user", metavar="NAME",
                        help="(root) run the sequential read a second time as user NAME (e.g. nobody) through "
                             "the same mount, which then gets -o allow_other")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 2) if "--rounds" not in (argv or sys.argv) else args.rounds
        args.size_mib, args.bam_reads, args.stream_gib = 32, 40000, 1 / 16
    if args.rounds < 1 or args.size_mib < 1 or args.bam_reads < 100 or args.stream_gib <= 0:
        parser.error("--rounds, --size-mib, --bam-reads and --stream-gib must be positive (bam-reads >= 100)")
    # the stream first: its peak RSS is then the daemon's own, not what earlier sections left in its heap
    sections = ("stream", "ttfb", "head", "random", "samtools", "sequential", "reread", "write")
    chosen = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else set(sections)
    args.sections = tuple(s for s in sections if s in chosen)  # always in the canonical order
    unknown = chosen - set(sections)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))} (known: {', '.join(sections)})")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if set(args.peers) - set(PEERS):
        parser.error(f"--peers: known peers are {', '.join(PEERS)}")
    return args


def describe_machine(mount: Mount, args: argparse.Namespace) -> dict:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "kernel": os.uname().release, "python": sys.version.split()[0],
                            "mount_options": args.options, "s3_latency_ms": args.s3_latency_ms,
                            "s3_mbps_per_connection": args.s3_mbps}
    bdi = mount.bdi()
    if bdi is not None:
        if args.read_ahead_kb is not None:
            try:
                (bdi / "read_ahead_kb").write_text(str(args.read_ahead_kb))
            except OSError as exc:
                print(f"bench: cannot set read_ahead_kb ({exc.strerror}); run as root", file=sys.stderr)
        info["bdi"] = bdi.name
        for name in ("read_ahead_kb", "max_ratio"):
            with contextlib.suppress(OSError):
                info[name] = int((bdi / name).read_text())
    with contextlib.suppress(OSError):
        info["fuse_max_pages_limit"] = int(pathlib.Path("/proc/sys/fs/fuse/max_pages_limit").read_text())
    return info


def run(args: argparse.Namespace) -> int:
    stream_size = int(args.stream_gib * (1 << 30)) // MiB * MiB
    as_user = bool(args.as_user) and "sequential" in args.sections
    spec = {"size": args.size_mib * MiB, "stream_size": stream_size, "rounds": args.rounds,
            "small_size": 4 * MiB, "bam_reads": args.bam_reads, "bam_seed": 20240701,
            "s3_latency": args.s3_latency_ms / 1000, "s3_mbps": args.s3_mbps,
            "reread": "reread" in args.sections, "as_user": as_user, "listing": bool(args.peers),
            "sections": list(args.sections)}
    if args.drop_caches and os.geteuid() != 0:
        print("bench: --drop-caches needs root", file=sys.stderr)
        return 2
    if args.as_user and os.geteuid() != 0:
        print("bench: --as-user needs root (it runs the read with setpriv)", file=sys.stderr)
        return 2
    peers_found = [p for p in args.peers if shutil.which(p)]
    for peer in sorted(set(args.peers) - set(peers_found)):
        print(f"bench: {peer} is not installed (apt-get install {peer}): left out", file=sys.stderr)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bpfs-bench-"))
    args.workdir = str(workdir)
    emu: EmulatorProcess | None = None
    mount: Mount | None = None
    status = 0
    interrupted = False
    try:
        chosen = set(args.sections)
        need = (spec["size"] * ("random" in chosen) + stream_size * ("stream" in chosen)
                + args.rounds * (1 + as_user) * spec["size"] * ("sequential" in chosen)
                + args.rounds * spec["small_size"] * (("ttfb" in chosen) + ("head" in chosen))
                + args.rounds * args.bam_reads * 140 * ("samtools" in chosen)  # a BAM takes ~125 bytes per read
                + (3 * args.rounds + 1) * spec["size"] * ("write" in chosen)  # uploads land in the store
                + 3 * stream_size * ("reread" in chosen)  # the object, its local copy, the disk cache
                + spec["size"] * bool(peers_found))  # s3fs spools an open file into a temporary file
        free = shutil.disk_usage(workdir).free
        if free < 1.2 * need:
            print(f"bench: {workdir} has {free / 1e9:.1f} GB free; this run needs about {need / 1e9:.1f} GB",
                  file=sys.stderr)
            return 2
        t0 = time.monotonic()
        print(f"bpfs benchmark: {args.rounds} rounds, {args.size_mib} MiB object, {args.bam_reads} BAM reads, "
              f"{stream_size / (1 << 30):g} GiB stream; workdir {workdir}", flush=True)
        emu = EmulatorProcess(workdir / "emulator", spec)
        info = emu.wait_ready(timeout=600)
        bam = info["files"].get("region_r0.bam")
        print(f"emulator up at {info['s3_url']} in {time.monotonic() - t0:.0f}s ("
              + (f"BAM {bam['size'] / 1e6:.1f} MB, " if bam else "") + f"analysis {info['analysis']})", flush=True)
        options = list(args.options)
        user = None
        if as_user:
            user = AsUser(args.as_user)
            options.append("allow_other")  # the kernel lets only the mounting user in otherwise
            workdir.chmod(0o711)  # the user may reach mnt/ (root's, 0755), not list or read the rest
        mount = Mount(workdir, info["config"], options)
        mount.wait_live()
        mount.wait_readahead(options)
        machine = describe_machine(mount, args)
        print(f"mounted at {mount.path} (daemon pid {mount.pid}, options {','.join(options) or 'none'}); "
              + ", ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
        peers: dict[str, PeerMount] = {}
        for kind in peers_found:
            peer = PeerMount(kind, workdir, info)
            peer.wait_live()
            peers[kind] = peer
            machine.setdefault("peers", {})[kind] = {"version": peer.version(), "options": peer.options}
            print(f"{kind} mounted at {peer.path} (pid {peer.pid}; {peer.version()}; options "
                  f"{' '.join(peer.options)})", flush=True)
        if user is not None:
            print(f"the sequential read runs again as {user.name} (uid {user.uid}) with {user.python}", flush=True)
        bench = Bench(args, mount, emu, peers, user)
        bench.results["machine"] = machine
        bench.results["args"] = {k: v for k, v in vars(args).items() if k not in ("workdir",)}
        if not bench.dir.is_dir():
            raise RuntimeError(f"{bench.dir} is not in the mount")
        for section in args.sections:
            {"ttfb": bench.ttfb, "head": bench.head, "random": bench.random_reads, "samtools": bench.samtools,
             "sequential": bench.sequential, "stream": bench.stream_rss, "reread": bench.reread,
             "write": bench.write}[section]()
        with contextlib.suppress(OSError, KeyError):
            bench.results["end_status"] = mount.status()
        rows = summarize(bench)
        print(f"\n== results (medians of {args.rounds} rounds; ratio = bpfs / baseline, per round, then median)")
        print_table(rows)
        peer_rows = summarize_peers(bench)
        if peer_rows:
            print(f"\n== bpfs beside boto3 and the peers (medians of {args.rounds} rounds; S3 bytes as the emulator "
                  "sent them, for everyone; bpfs/peer = the ratio per round, then median: for MB/s above 1 means "
                  "bpfs is faster, for ms and bytes below 1 means bpfs needs less)")
            print_table(peer_rows, ["metric", "bpfs", "boto3", *bench.peers, *(f"bpfs/{p}" for p in bench.peers)],
                        text_columns=0)
        final = mount.stats()
        final.pop("_stats_served", None)
        bench.results["daemon_stats"] = final
        bench.results["emulator_s3_stats"] = emu.s3_stats()
        print("\n== daemon .bpfs/stats at the end")
        print(json.dumps(final, indent=2, sort_keys=True))
        for note in bench.notes:
            print(f"note: {note}")
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(bench.results, indent=2, sort_keys=True, default=str) + "\n")
            print(f"results written to {args.json}")
        print(f"total time {time.monotonic() - t0:.0f}s")
    except KeyboardInterrupt:
        interrupted = True
        status = 130
    except Exception as exc:  # one line for the expected failures; a traceback only for a bug in the bench
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not isinstance(exc, (RuntimeError, AssertionError, OSError, subprocess.CalledProcessError)):
            traceback.print_exc()
        if mount is not None:
            with contextlib.suppress(OSError):
                print("bpfs log tail:\n" + mount.log.read_text(errors="replace")[-3000:], file=sys.stderr)
        status = 1
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        try:
            if interrupted:
                print("\ninterrupted: cleaning up", file=sys.stderr)
            left = list(LIVE)
            for fuse in reversed(left):  # peers and any disk-cache mount first, the benchmark's mount last
                with contextlib.suppress(Exception):
                    fuse.stop()
            if emu is not None:
                emu.stop()
            still = [f.path for f in left if is_mounted(f.path)]
            if still:
                print(f"bench: {', '.join(map(str, still))} still mounted; left {workdir} in place", file=sys.stderr)
                status = status or 1
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    return status


def main() -> int:
    args = parse_args()
    try:
        import boto3  # noqa: F401

        import bpfs.emulator  # noqa: F401
    except ImportError as exc:
        print(f"bench: {exc}: run it with the project's venv (.venv/bin/python scripts/bench.py; "
              "scripts/setup.sh makes it)", file=sys.stderr)
        return 2
    if not os.path.exists("/dev/fuse") or not (shutil.which("fusermount3") or shutil.which("fusermount")):
        print("bench: needs /dev/fuse and fusermount3 (scripts/setup.sh installs fuse3)", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
