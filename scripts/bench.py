#!/usr/bin/env python3
"""bpfs benchmark: a real mount of the emulator against boto3 on the same S3 server, in one run.

    .venv/bin/python scripts/bench.py            # full run: 5 rounds, 256 MiB, ~50 MB BAM, 1 GiB stream
    .venv/bin/python scripts/bench.py --quick    # smoke run with small sizes (a minute or less)

What it does (see scripts/README.md for the reading of the table):

* starts the bundled emulator in a child process (its S3 server is a Python threaded HTTP server:
  in our own process it would share a GIL with the boto3 baseline but not with the bpfs daemon,
  which could skew the comparison), adds one completed "benchmark" analysis to the demo account
  whose files are the benchmark objects, then mounts the account with `bpfs mount --foreground`;
* alternates the order bpfs / baseline every round, reports medians and ratios against the
  baseline measured in the same run (the machines are shared and noisy);
* counts S3 bytes with the mount's own counters (`.bpfs/stats`) and the emulator's S3 counters,
  waiting before and after each measurement until the daemon's counters stop moving (prefetches
  outlive the reader that started them; their bytes are charged to it), and makes every read
  really reach the daemon: the kernel page cache of a mounted file is dropped with
  posix_fadvise(DONTNEED) (or `--drop-caches`, root only), and the tests that must be cold in the
  daemon's own extent cache too (sequential, TTFB, head, samtools) use a fresh object every round;
* always unmounts (fusermount3 -u, then -uz), stops the daemon and the emulator, removes its files,
  also on Ctrl-C.

The goals are the issue's (benchmark goals, not test assertions): sequential >= 1.0x one direct GET,
TTFB <= 2x one direct GET, 200 random 4 KiB reads fetch <= 10 x 800 KiB, a samtools region query
fetches <= 5 % of the BAM, daemon RSS < 200 MB while streaming 1 GiB.
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


def _emulator_child(conn: Any, data_dir: str, spec: dict) -> None:
    """Run the emulator with the benchmark objects until the parent says stop (or goes away)."""
    os.setsid()  # Ctrl-C at the terminal reaches the parent only; the parent stops us in order
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from bpfs.emulator import Emulator, genomics

    root = pathlib.Path(data_dir)
    staging = root / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    emu = None
    try:
        emu = Emulator(data_dir=root / "emulator", big_file_mib=1, bam_reads=2000).start()
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

        add_random("random.bin", spec["size"])
        add_random("stream.bin", spec["stream_size"])
        for r in range(spec["rounds"]):
            # one object per round for everything that must start cold in the daemon's extent cache too
            # (cache_mb=128 would otherwise serve half of a 256 MiB re-read)
            add_random(f"seq_r{r}.bin", spec["size"])
            add_random(f"ttfb_r{r}.bin", spec["small_size"])
            add_random(f"head_r{r}.bin", spec["small_size"])
        bam, bai = genomics.make_bam(spec["bam_seed"], spec["bam_reads"])
        for r in range(spec["rounds"]):  # one copy per round: every region query starts cold in the daemon too
            add(f"region_r{r}.bam", bam, ["bam"])
            add(f"region_r{r}.bam.bai", bai, ["bai"])
        del bam, bai
        if spec.get("s3_latency"):
            emu.faults_s3.add(method="GET", delay=spec["s3_latency"], times=None)
        if spec.get("s3_mbps"):
            emu.s3.bandwidth = spec["s3_mbps"] * 1e6
        config = emu.write_config(root / "config-v3.json", dialect="v3")
        conn.send({
            "ok": True, "bucket": bucket, "s3_url": emu.s3_url, "region": state.region,
            "key_id": state.s3_key_id, "secret": state.s3_secret, "analysis": aid, "files": files,
            "config": str(config),
        })
        while True:
            try:
                if not conn.poll(1.0):
                    continue
                command = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if command == "stats":
                conn.send(dict(emu.s3.stats))
            elif command == "reset":
                emu.s3.reset_stats()
                conn.send(True)
            else:
                break
    except BaseException as exc:  # report, never hang the parent
        with contextlib.suppress(Exception):
            conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        if emu is not None:
            emu.stop()
        with contextlib.suppress(Exception):
            conn.close()


class EmulatorProcess:
    def __init__(self, data_dir: pathlib.Path, spec: dict) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_emulator_child, args=(child_conn, str(data_dir), spec), daemon=True,
                                name="bpfs-bench-emulator")
        self.proc.start()
        child_conn.close()
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

    def s3_stats(self) -> dict:
        self.conn.send("stats")
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send("stop")
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)
        with contextlib.suppress(Exception):
            self.conn.close()


# =====================================================================================================
# the mount
# =====================================================================================================


def fusermount() -> str:
    return shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"


def is_mounted(path: pathlib.Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as mounts:
        return any(len(f) > 1 and f[1].replace("\\040", " ") == target for f in (line.split() for line in mounts))


class Mount:
    def __init__(self, workdir: pathlib.Path, config: str, options: list[str]) -> None:
        self.path = workdir / "mnt"
        self.path.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "bpfs.log"
        self.output = open(workdir / "bpfs-stderr.txt", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "bpfs", "mount", str(self.path), "-c", config, "--foreground",
               "--log-file", str(self.log)]
        for option in options:
            cmd += ["-o", option]
        # its own session: Ctrl-C reaches only the benchmark, which then unmounts in order
        self.proc = subprocess.Popen(cmd, stdout=self.output, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self.stats_served = 0

    def wait_live(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_mounted(self.path):
                with contextlib.suppress(OSError):
                    os.listdir(self.path)
                    return
            if self.proc.poll() is not None:
                tail = (self.path.parent / "bpfs-stderr.txt").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"bpfs exited with status {self.proc.returncode} before mounting:\n{tail}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.path} was not mounted within {timeout:.0f}s")

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

    def stop(self) -> None:
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
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.output.close()


# =====================================================================================================
# measuring
# =====================================================================================================


def evict(path: pathlib.Path, drop_caches: bool) -> None:
    """Forget the kernel's pages of one mounted file, so the next read really goes to the daemon."""
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


class Bench:
    def __init__(self, args: argparse.Namespace, mount: Mount, emu: EmulatorProcess) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.args, self.mount, self.emu = args, mount, emu
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

    def key(self, name: str) -> str:
        return self.files[name]["key"]

    def size(self, name: str) -> int:
        return self.files[name]["size"]

    def counters(self) -> tuple[dict, dict]:
        return self.mount.stats(), self.emu.s3_stats()

    @staticmethod
    def delta(before: tuple[dict, dict], after: tuple[dict, dict]) -> dict:
        names = ("s3_requests", "s3_bytes_fetched", "bytes_served", "cache_hits", "cache_misses", "s3_errors",
                 "bytes_uploaded", "uploads_completed", "uploads_failed")
        out = {n: after[0].get(n, 0) - before[0].get(n, 0) for n in names}
        out["bytes_served"] -= after[0]["_stats_served"] - before[0]["_stats_served"]
        out["server_gets"] = after[1].get("get_requests", 0) - before[1].get("get_requests", 0)
        out["server_bytes_sent"] = after[1].get("bytes_sent", 0) - before[1].get("bytes_sent", 0)
        for name in ("put_requests", "post_requests", "bytes_received"):
            out[f"server_{name}"] = after[1].get(name, 0) - before[1].get(name, 0)
        return out

    def settle(self, quiet: float = 0.3, timeout: float = 60.0) -> None:
        """Wait until the daemon's S3 counters stop moving: prefetches a reader started keep running after it
        closed the file, and their bytes belong to that reader's measurement, not to the next one's."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            stats = self.mount.stats()
            now = (stats.get("s3_requests"), stats.get("s3_bytes_fetched"))
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)
        self.notes.append(f"the daemon was still fetching {timeout:.0f}s after a measurement")

    def measured(self, fn: Callable[[], Any]) -> tuple[Any, float, dict]:
        """Run fn timed; the counters' delta also covers what the daemon fetched for it after it returned."""
        self.settle()
        before = self.counters()
        t0 = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - t0
        self.settle()
        return value, elapsed, self.delta(before, self.counters())

    def record(self, section: str, row: dict) -> None:
        self.results["rounds"].setdefault(section, []).append(row)

    @staticmethod
    def log(text: str) -> None:
        print(text, flush=True)

    # ------------------------------------------------------------------------------------------ sections

    def sequential(self) -> None:
        size = self.size("seq_r0.bin")
        for r in range(self.args.rounds):
            warm(self.files[f"seq_r{r}.bin"]["store_path"])
        self.log(f"\n== sequential read of {size / MiB:.0f} MiB in {READ_SIZE // 1024} KiB reads "
                 "(bpfs mount vs one boto3 GET vs boto3 download_file; a fresh object every round)")

        def via_mount(r: int) -> dict:
            name = f"seq_r{r}.bin"
            path = self.path(name)
            os.stat(path)
            evict(path, self.args.drop_caches)
            if self.args.drop_caches:
                warm(self.files[name]["store_path"])
            n, elapsed, d = self.measured(lambda: read_file(path))
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

            n, elapsed, _ = self.measured(run)
            assert n == size, f"read {n} of {size} bytes with one GET"
            return {"mbps": size / elapsed / 1e6, "seconds": elapsed}

        def via_download(r: int) -> dict:
            key = self.key(f"seq_r{r}.bin")
            target = pathlib.Path(self.args.workdir) / "download.bin"
            try:
                _, elapsed, d = self.measured(lambda: self.client.download_file(self.bucket, key, str(target)))
                assert target.stat().st_size == size
            finally:
                target.unlink(missing_ok=True)
            return {"mbps": size / elapsed / 1e6, "seconds": elapsed, "server_gets": d["server_gets"]}

        self.alternate("sequential", {"bpfs": via_mount, "get": via_get, "download_file": via_download})

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
            return text
        if "ms" in values:
            text = f"{values['ms']:.2f} ms"
            if "s3_bytes_fetched" in values:
                text += f" (fetched {values['s3_bytes_fetched'] / 1024:.0f} KiB)"
            return text
        return json.dumps(values)

    def ttfb(self) -> None:
        self.log("\n== time to first byte (open + 1-byte read through the mount, cold; vs one ranged GET bytes=0-0)")
        for r in range(self.args.rounds):
            warm(self.files[f"ttfb_r{r}.bin"]["store_path"])

        # one fresh object per round: the first bytes of a file must not be in the daemon's cache already
        def via_mount(r: int) -> dict:
            path = self.path(f"ttfb_r{r}.bin")
            os.stat(path)  # the lookup is not part of the first byte (an `ls -l` did it)

            def run() -> bytes:
                fd = os.open(path, os.O_RDONLY)
                try:
                    return os.read(fd, 1)
                finally:
                    os.close(fd)

            data, elapsed, d = self.measured(run)
            assert len(data) == 1
            return {"ms": elapsed * 1e3, **d}

        def via_get(r: int) -> dict:
            key = self.key(f"ttfb_r{r}.bin")

            def run() -> bytes:
                body = self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-0")["Body"]
                try:
                    return body.read(1)
                finally:
                    body.close()

            data, elapsed, _ = self.measured(run)
            assert len(data) == 1
            return {"ms": elapsed * 1e3}

        self.alternate("ttfb", {"bpfs": via_mount, "get": via_get})

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
        self.log(f"\n== {count} random {length // 1024} KiB preads on the {size / MiB:.0f} MiB file "
                 f"(fresh open, page cache dropped; {asked // 1024} KiB asked)")
        with open(self.files[name]["store_path"], "rb") as fh:
            truth = fh.fileno()
            for r in range(self.args.rounds):
                rng = random.Random(f"bench-random-{r}")  # seeded, and different every round
                offsets = [rng.randrange(size - length) for _ in range(count)]
                evict(path, self.args.drop_caches)

                def run(offs: list[int] = offsets) -> list[bytes]:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        return [os.pread(fd, length, off) for off in offs]
                    finally:
                        os.close(fd)

                chunks, elapsed, d = self.measured(run)
                for off, chunk in zip(offsets, chunks, strict=True):
                    assert chunk == os.pread(truth, length, off), f"wrong bytes at {off} through the mount"
                row = {"round": r, "ms": elapsed * 1e3, "asked": asked, **d,
                       "multiple": d["s3_bytes_fetched"] / asked}
                self.record("random", row)
                self.log(f"  round {r + 1}: fetched {d['s3_bytes_fetched'] / 1024:,.0f} KiB in {d['s3_requests']} "
                         f"GETs = {row['multiple']:.2f}x the {asked // 1024} KiB asked; kernel asked the daemon "
                         f"for {d['bytes_served'] / 1024:,.0f} KiB; {elapsed * 1e3:.0f} ms "
                         f"({elapsed * 1e6 / count:.0f} us/read)")

    def samtools(self) -> None:
        region = self.args.region
        size = self.size("region_r0.bam")
        self.log(f"\n== samtools view BAM {region} on a cold {size / 1e6:.1f} MB BAM (+ .bai)")
        samtools = shutil.which("samtools")
        if samtools is None:
            self.notes.append("samtools: not installed, region query skipped")
            self.log("  samtools is not installed: skipped")
            return
        for r in range(self.args.rounds):
            bam = self.path(f"region_r{r}.bam")
            os.stat(bam)
            os.stat(str(bam) + ".bai")
            proc, elapsed, d = self.measured(
                lambda b=bam: subprocess.run([samtools, "view", str(b), region], capture_output=True))
            if proc.returncode != 0:
                raise RuntimeError(f"samtools view failed: {proc.stderr.decode(errors='replace').strip()}")
            reads = proc.stdout.count(b"\n")
            row = {"round": r, "ms": elapsed * 1e3, "reads": reads, "bam_size": size, **d,
                   "percent": 100 * d["s3_bytes_fetched"] / size,
                   "per_served": d["s3_bytes_fetched"] / d["bytes_served"] if d["bytes_served"] else float("nan")}
            self.record("samtools", row)
            self.log(f"  round {r + 1}: {reads} reads; fetched {d['s3_bytes_fetched'] / 1024:,.0f} KiB in "
                     f"{d['s3_requests']} GETs = {row['percent']:.2f}% of the BAM; samtools (via the kernel) read "
                     f"{d['bytes_served'] / 1024:,.0f} KiB = {row['per_served']:.2f}x; {elapsed * 1e3:.0f} ms")

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
                return {"mbps": size / elapsed / 1e6, "seconds": elapsed, "puts": d["server_put_requests"],
                        "bytes_received": d["server_bytes_received"]}

            def via_upload(r: int) -> dict:
                key = f"bench-uploads/upload_{r}.bin"
                _, elapsed, d = self.measured(lambda: self.client.upload_file(str(source), self.bucket, key))
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
        rows.append(["sequential MB/s", f"{mount:.0f}", f"{get:.0f} (1 GET)", f"{ratio_get:.2f}x", ">= 1.0x",
                     verdict(ratio_get >= 1.0)])
        rows.append(["sequential MB/s", f"{mount:.0f}", f"{dl:.0f} (download_file)", f"{ratio_dl:.2f}x", "-", "-"])
        rows.append(["  S3 bytes / file size", f"{fetched:.3f}", "1.000", "", "", ""])
        mean_get = median([x["bpfs"]["s3_bytes_fetched"] / max(1, x["bpfs"]["s3_requests"]) for x in seq])
        summary["sequential"]["mean_get_bytes"] = mean_get
        rows.append(["  mean S3 GET size", f"{mean_get / MiB:.2f} MiB", "", "", "", ""])
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
        rows.append(["  vs bytes samtools read", f"{fetched / 1024:,.0f} KiB", f"{served / 1024:,.0f} KiB read",
                     f"{fetched / served:.2f}x" if served else "-", "-", "-"])
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


def print_table(rows: list[list[str]]) -> None:
    header = ["metric", "bpfs", "baseline", "ratio", "goal", "result"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def fmt(r: list[str]) -> str:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) if i < 4 else r[i].ljust(widths[i])
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
                        help="comma-separated subset of: stream,ttfb,head,random,samtools,sequential,write")
    parser.add_argument("--s3-latency-ms", type=float, default=0.0, metavar="MS",
                        help="make the emulator's S3 wait MS before answering every GET (both sides pay it): "
                             "loopback has no latency, real S3 has ~10-50 ms to the first byte")
    parser.add_argument("--s3-mbps", type=float, default=0.0, metavar="MB/S",
                        help="cap each S3 response body at MB/S (real S3 gives one connection ~50-100 MB/s; "
                             "loopback gives GB/s); with --s3-latency-ms 20 the emulator behaves like S3")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 2) if "--rounds" not in (argv or sys.argv) else args.rounds
        args.size_mib, args.bam_reads, args.stream_gib = 32, 40000, 1 / 16
    if args.rounds < 1 or args.size_mib < 1 or args.bam_reads < 100 or args.stream_gib <= 0:
        parser.error("--rounds, --size-mib, --bam-reads and --stream-gib must be positive (bam-reads >= 100)")
    # the stream first: its peak RSS is then the daemon's own, not what earlier sections left in its heap
    sections = ("stream", "ttfb", "head", "random", "samtools", "sequential", "write")
    chosen = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else set(sections)
    args.sections = tuple(s for s in sections if s in chosen)  # always in the canonical order
    unknown = chosen - set(sections)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))} (known: {', '.join(sections)})")
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
    spec = {"size": args.size_mib * MiB, "stream_size": stream_size, "rounds": args.rounds,
            "small_size": 4 * MiB, "bam_reads": args.bam_reads, "bam_seed": 20240701,
            "s3_latency": args.s3_latency_ms / 1000, "s3_mbps": args.s3_mbps}
    if args.drop_caches and os.geteuid() != 0:
        print("bench: --drop-caches needs root", file=sys.stderr)
        return 2
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bpfs-bench-"))
    args.workdir = str(workdir)
    emu: EmulatorProcess | None = None
    mount: Mount | None = None
    status = 0
    interrupted = False
    try:
        need = ((1 + args.rounds) * spec["size"] + stream_size + 2 * args.rounds * spec["small_size"]
                + args.rounds * args.bam_reads * 140  # a BAM takes ~125 bytes per read
                + (3 * args.rounds + 1) * spec["size"] * ("write" in args.sections))  # uploads land in the store
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
        bam_size = info["files"]["region_r0.bam"]["size"]
        print(f"emulator up at {info['s3_url']} in {time.monotonic() - t0:.0f}s (BAM {bam_size / 1e6:.1f} MB, "
              f"analysis {info['analysis']})", flush=True)
        mount = Mount(workdir, info["config"], args.options)
        mount.wait_live()
        machine = describe_machine(mount, args)
        print(f"mounted at {mount.path} (daemon pid {mount.pid}); "
              + ", ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
        bench = Bench(args, mount, emu)
        bench.results["machine"] = machine
        bench.results["args"] = {k: v for k, v in vars(args).items() if k not in ("workdir",)}
        if not bench.dir.is_dir():
            raise RuntimeError(f"{bench.dir} is not in the mount")
        for section in args.sections:
            {"ttfb": bench.ttfb, "head": bench.head, "random": bench.random_reads, "samtools": bench.samtools,
             "sequential": bench.sequential, "stream": bench.stream_rss, "write": bench.write}[section]()
        with contextlib.suppress(OSError, KeyError):
            bench.results["end_status"] = mount.status()
        rows = summarize(bench)
        print(f"\n== results (medians of {args.rounds} rounds; ratio = bpfs / baseline, per round, then median)")
        print_table(rows)
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
            if mount is not None:
                mount.stop()
            if emu is not None:
                emu.stop()
            if mount is not None and is_mounted(mount.path):
                print(f"bench: {mount.path} is still mounted; left {workdir} in place", file=sys.stderr)
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
