#!/usr/bin/env python3
"""bpfs soak test: does the daemon's memory stay bounded under sustained mixed load?

    .venv/bin/python scripts/soak.py              # 12 minutes (the issue's soak)
    .venv/bin/python scripts/soak.py --quick      # ~1 minute smoke run
    .venv/bin/python scripts/soak.py --minutes 60 --json soak.json

Why: a mount lives for days. A leak of a few MB a minute is invisible in the tests and in
bench.py (which measure seconds), and shows only as a daemon that has grown to gigabytes
by Friday. This script runs what a busy user does, all at once, for as long as asked, and
samples the daemon's VmRSS, VmHWM, open fds and threads every few seconds, so anyone can
rerun it after a change and compare.

What it does:

* starts the bundled emulator in a child process (as bench.py does: its threaded HTTP servers
  would otherwise share a GIL with the load threads here; a child also has its own RSS, which
  is reported separately). The child obeys a small command channel (a Pipe): the parent arms
  faults in the emulator's `Faults` (S3 503 SlowDown, stalls, bodies cut off, API 5xx) while
  the load runs;
* mounts the account with `python -m bpfs mount MNT -c CONFIG --foreground --log-file ...` as a
  child process, so the daemon's PID is known, with `-o allow_delete` (the samples the load
  creates are deleted again through the mount, so the account stays the same size and any
  growth of the daemon is its own; `--keep-samples` keeps them);
* runs the load in threads of this process, each through the mount: sequential readers (the
  whole bigWig and BAMs in 1 MiB reads, md5-checked; the kernel's page cache of the file is
  dropped before each pass so the bytes come from the daemon), random 4 KiB preads, `ls -lR`
  walks of analyses/ and samples/ with tag expressions and lookups of analyses that do not
  exist, sample writes (`cp` of seeded files of a few MiB into `samples/new/<name>/x_R1.fastq.gz`
  and `samples/new/<name>.fastq.gz`, read back and md5-checked, then deleted), refreshes
  (`cat MNT/.bpfs/refresh`, `bpfs refresh MNT analyses/10000`) and faults;
* prints one line per sample and a summary: RSS at the start (mounted, before the load), peak
  (VmHWM) and end, the growth rate over the last third of the run (a least-squares slope of
  VmRSS: the start includes the caches filling up, the end should be flat), fds and threads,
  and the errors the load saw (faults make some expected: a cp whose upload is refused fails);
* always unmounts (fusermount3 -u, then -uz), stops the daemon and the emulator by PID and removes
  its temp directory, also on Ctrl-C. Nothing is ever killed by name.

The data is seeded (the demo account is deterministic; the files written come from --seed), so
two runs do the same work. A default run needs about 1 GB in $TMPDIR.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import itertools
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench import EmulatorProcess, Mount, is_mounted, run_emulator_child  # noqa: E402 - bench.py's helpers

MiB = 1 << 20
BIGWIG = ("analyses", "10000", "bigwig", "liver_rep1.bigwig")
BAMS = (("analyses", "10000", "bam", "liver_rep1.bam"), ("analyses", "10000", "all", "star", "liver_rep1.bam"),
        ("analyses", "10001", "bam", "tumor_wgs.bam"))
# the faults armed in turn while the load runs; all but the last are survived (botocore retries, bodies
# resume, listings are served stale); the last refuses one upload part, so one cp fails on purpose
FAULTS = (
    ("s3", {"method": "GET", "status": 503, "code": "SlowDown", "times": 2}),
    ("s3", {"method": "GET", "path": "liver_rep1", "drop_after": 100_000, "times": 2}),
    ("s3", {"method": "GET", "delay": 1.5, "times": 2}),
    ("api", {"method": "GET", "path": "/api/v3/analyses", "status": 503, "times": 2}),
    ("api", {"method": "GET", "delay": 1.0, "times": 3}),
    ("s3", {"method": "PUT", "status": 503, "code": "SlowDown", "times": 1}),
    ("s3", {"method": "PUT", "path": "/uploads/", "status": 403, "code": "AccessDenied", "times": 1}),
)


# =====================================================================================================
# the emulator, in a child process that obeys a command channel
# =====================================================================================================


def _emulator_child(conn: Any, data_dir: str, spec: dict) -> None:
    from bpfs.emulator import Emulator

    root = pathlib.Path(data_dir)
    run_emulator_child(conn, lambda: Emulator(data_dir=root / "emulator", big_file_mib=spec["big_file_mib"],
                                              bam_reads=spec["bam_reads"],
                                              extra_analyses=spec["extra_analyses"]).start(),
                       lambda emu: _soak_account(emu, root), _soak_command)


def _soak_account(emu: Any, root: pathlib.Path) -> dict:
    md5s = {}
    for key in (f"analyses/{emu.state.user_id}/10000/star/liver_rep1.bigwig",
                f"analyses/{emu.state.user_id}/10000/star/liver_rep1.bam",
                f"analyses/{emu.state.user_id}/10001/bwa/tumor_wgs.bam"):
        md5s[key.rsplit("/", 1)[-1]] = hashlib.md5(emu.store.get_bytes(emu.bucket, key)).hexdigest()
    config = emu.write_config(root / "config-v3.json", dialect="v3")
    return {"config": str(config), "md5": md5s, "analyses": sorted(emu.state.analyses)}


def _soak_command(emu: Any, command: str, *args: Any) -> Any:
    if command == "fault":
        server, kwargs = args
        (emu.faults_s3 if server == "s3" else emu.faults_api).add(**kwargs)
        return True
    if command == "clear":
        emu.faults_s3.clear()
        emu.faults_api.clear()
        return True
    if command == "stats":
        return {"s3": dict(emu.s3.stats), "samples": len(emu.state.samples)}
    raise ValueError(f"unknown command {command!r}")


def start_emulator(data_dir: pathlib.Path, spec: dict) -> EmulatorProcess:
    return EmulatorProcess(data_dir, spec, child=_emulator_child, name="bpfs-soak-emulator")


# =====================================================================================================
# the load
# =====================================================================================================


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon (kB), Threads, and the number of open fds of a process."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
                out[name] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def drop_page_cache(path: pathlib.Path) -> None:
    """Forget the kernel's pages of a mounted file (bpfs keeps them across opens of immutable files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Load:
    """The worker threads and what they saw. Each worker loops until `stop` is set."""

    def __init__(self, args: argparse.Namespace, mnt: pathlib.Path, emu: EmulatorProcess, workdir: pathlib.Path):
        self.args, self.mnt, self.emu, self.workdir = args, mnt, emu, workdir
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.faults: Counter[str] = Counter()
        self.threads: list[threading.Thread] = []
        self.md5 = emu.info["md5"]
        self.analyses = emu.info["analyses"]
        self.staging = workdir / "staging"
        self.staging.mkdir(exist_ok=True)
        self.write_seq = itertools.count()

    # -- bookkeeping ------------------------------------------------------------------------------
    def ok(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1

    def failed(self, op: str, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno:
            kind = f"{op}: {errno.errorcode.get(exc.errno, exc.errno)}"
        else:
            kind = f"{op}: {type(exc).__name__}"
        with self.lock:
            self.errors[kind] += 1
            self.examples.setdefault(kind, str(exc)[:300])

    def pause(self, seconds: float) -> bool:
        """Sleep unless stopping; False once the run is over."""
        return not self.stop.wait(seconds)

    def start(self) -> None:
        workers = [("seq-1", self.sequential, 0), ("seq-2", self.sequential, 1), ("random", self.random_reads, 0),
                   ("list", self.listings, 0), ("write", self.writes, 0), ("refresh", self.refreshes, 0)]
        if not self.args.no_faults:
            workers.append(("faults", self.inject_faults, 0))
        for name, target, n in workers:
            thread = threading.Thread(target=self._run, args=(name, target, n), name=f"soak-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, name: str, target, n: int) -> None:
        rng = random.Random(f"{self.args.seed}-{name}")
        while not self.stop.is_set():
            try:
                target(rng, n)
            except Exception as exc:  # noqa: BLE001 - a worker counts its failure and carries on
                self.failed(name, exc)
                if not isinstance(exc, (OSError, AssertionError, subprocess.SubprocessError)):
                    traceback.print_exc()  # a bug in this script, not a finding about the mount
                self.pause(1.0)

    def join(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]

    # -- workers ----------------------------------------------------------------------------------
    def sequential(self, rng: random.Random, n: int) -> None:
        """cat | md5sum of the big files, in 1 MiB reads, each pass from the daemon (not the page cache)."""
        for parts in (BIGWIG, BAMS[n % len(BAMS)], BAMS[2]):
            if self.stop.is_set():
                return
            path = self.mnt.joinpath(*parts)
            drop_page_cache(path)
            digest = hashlib.md5()
            buf = bytearray(MiB)
            fd = os.open(path, os.O_RDONLY)
            try:
                while (got := os.readv(fd, [buf])) > 0:
                    digest.update(memoryview(buf)[:got])
            finally:
                os.close(fd)
            if digest.hexdigest() != self.md5[parts[-1]]:
                raise AssertionError(f"{'/'.join(parts)}: md5 differs from the object's")
            self.ok("sequential pass")
            self.pause(0.2)

    def random_reads(self, rng: random.Random, n: int) -> None:
        """200 random 4 KiB preads on a BAM or the bigWig (a samtools/IGV user), cold in the page cache."""
        path = self.mnt.joinpath(*rng.choice((BIGWIG, *BAMS)))
        drop_page_cache(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            for _ in range(200):
                offset = rng.randrange(0, max(1, size - 4096))
                if len(os.pread(fd, 4096, offset)) != min(4096, size - offset):
                    raise AssertionError(f"{path}: short pread at {offset}")
        finally:
            os.close(fd)
        self.ok("200 random preads")
        self.pause(0.3)

    def listings(self, rng: random.Random, n: int) -> None:
        """ls -lR of analyses/ and samples/, tag expressions, index files, and paths that do not exist."""
        for top in ("analyses", "samples", "genomes", "workflows"):
            for dirpath, dirnames, filenames in os.walk(self.mnt / top):
                for name in dirnames + filenames:
                    with contextlib.suppress(FileNotFoundError):  # a sample deleted during the walk
                        os.lstat(os.path.join(dirpath, name))
                if self.stop.is_set():
                    return
            (self.mnt / top / "index.tsv").read_bytes()
        self.ok("ls -lR")
        for expression in ("-bam", "fastqc+zip", "bam,bai", "rnaseq_metrics+json,fastqc+zip", "text"):
            with contextlib.suppress(FileNotFoundError):
                os.listdir(self.mnt / "analyses" / str(rng.choice(self.analyses[:5])) / expression)
        # ids that are not (yet) there: a script polling for a new analysis, a typo, shell completion
        for _ in range(20):
            missing = self.mnt / "analyses" / str(rng.randrange(100_000, 10_000_000))
            if os.path.exists(missing):
                raise AssertionError(f"{missing} exists")
        self.ok("tag expressions and lookups")
        self.pause(0.5)

    def writes(self, rng: random.Random, n: int) -> None:
        """cp a seeded file into samples/new/ (a directory sample, then a single-file one), read it back, delete."""
        seq = next(self.write_seq)
        size = rng.choice((1, 3, 5, 12)) * MiB  # 12 MiB: a two-part multipart upload
        data = random.Random(f"{self.args.seed}-file-{seq}").randbytes(size)
        source = self.staging / f"soak{seq}.fastq.gz"
        source.write_bytes(data)
        name = f"soak_{seq}"
        try:
            new = self.mnt / "samples" / "new"
            if seq % 2 == 0:
                draft = new / name
                draft.mkdir()
                target, basename = draft / f"{name}_R1.fastq.gz", f"{name}_R1.fastq.gz"
            else:
                draft, target, basename = None, new / f"{name}.fastq.gz", f"{name}.fastq.gz"
            try:
                result = subprocess.run(["cp", str(source), str(target)], capture_output=True, text=True)
                if result.returncode != 0:
                    raise OSError(errno.EIO, f"cp into {target.relative_to(self.mnt)}: {result.stderr.strip()}")
                sample_id = self.sample_id(name)
                copy = (self.mnt / "samples" / str(sample_id) / basename).read_bytes()
                if hashlib.md5(copy).digest() != hashlib.md5(data).digest():
                    raise AssertionError(f"samples/{sample_id}/{basename}: md5 differs from what was copied")
                self.ok("sample written")
                if not self.args.keep_samples:
                    os.rmdir(self.mnt / "samples" / str(sample_id))  # -o allow_delete
                    self.ok("sample deleted")
            finally:
                if draft is not None and not self.args.keep_samples:
                    with contextlib.suppress(OSError):
                        for leftover in os.listdir(draft):
                            os.unlink(draft / leftover)
                        os.rmdir(draft)
        finally:
            source.unlink(missing_ok=True)
        self.pause(1.0)

    def sample_id(self, name: str) -> int:
        """The id of the sample a copy created, from samples/index.tsv (dropped from the cache by the upload)."""
        for line in (self.mnt / "samples" / "index.tsv").read_text().splitlines()[1:]:
            fields = line.split("\t")
            if len(fields) > 1 and fields[1] == name:
                return int(fields[0])
        raise OSError(errno.ENOENT, f"sample {name} is not in samples/index.tsv after its cp")

    def refreshes(self, rng: random.Random, n: int) -> None:
        """Drop all cached listings, or only one analysis's (a user who wants to see new results now)."""
        if not self.pause(self.args.refresh_every):
            return
        if self.ops["refresh"] % 2 == 0:
            (self.mnt / ".bpfs" / "refresh").read_bytes()
        else:
            subprocess.run([sys.executable, "-m", "bpfs", "refresh", str(self.mnt), "analyses/10000"], check=True,
                           capture_output=True, timeout=60)
        self.ok("refresh")

    def inject_faults(self, rng: random.Random, n: int) -> None:
        if not self.pause(self.args.fault_every):
            return
        server, kwargs = FAULTS[sum(self.faults.values()) % len(FAULTS)]
        self.emu.ask("fault", server, kwargs)
        with self.lock:
            self.faults[f"{server} {json.dumps(kwargs, sort_keys=True)}"] += 1


# =====================================================================================================
# the run
# =====================================================================================================


def slope_mib_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, kB) points, in MiB per minute."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return float("nan")
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60 / 1024


def summarize(samples: list[dict], duration: float) -> dict:
    first, last = samples[0], samples[-1]
    tail = [(s["t"], s["VmRSS"]) for s in samples if s["t"] >= duration * 2 / 3]
    return {
        "rss_start_mib": first["VmRSS"] / 1024, "rss_peak_mib": max(s["VmHWM"] for s in samples) / 1024,
        "rss_end_mib": last["VmRSS"] / 1024, "rss_max_sampled_mib": max(s["VmRSS"] for s in samples) / 1024,
        "rss_growth_last_third_mib_per_min": slope_mib_per_min(tail),
        "rss_growth_whole_run_mib_per_min": slope_mib_per_min([(s["t"], s["VmRSS"]) for s in samples]),
        "fds_start": first["fds"], "fds_end": last["fds"], "fds_max": max(s["fds"] for s in samples),
        "threads_start": first["Threads"], "threads_end": last["Threads"],
        "threads_max": max(s["Threads"] for s in samples),
    }


def print_summary(summary: dict, load: Load, stats: dict | None, emu_stats: dict | None) -> None:
    s = summary
    print("\n== summary")
    print(f"daemon RSS   start {s['rss_start_mib']:.0f} MiB, peak (VmHWM) {s['rss_peak_mib']:.0f} MiB, "
          f"end {s['rss_end_mib']:.0f} MiB")
    print(f"RSS growth   {s['rss_growth_last_third_mib_per_min']:+.2f} MiB/min over the last third "
          f"({s['rss_growth_whole_run_mib_per_min']:+.2f} MiB/min over the whole run)")
    print(f"fds          start {s['fds_start']}, end {s['fds_end']}, max {s['fds_max']}")
    print(f"threads      start {s['threads_start']}, end {s['threads_end']}, max {s['threads_max']}")
    print("load         " + ", ".join(f"{count} {op}" for op, count in sorted(load.ops.items())))
    if load.faults:
        print(f"faults       {sum(load.faults.values())} armed in the emulator ({len(load.faults)} kinds)")
    if load.errors:
        print(f"errors       {sum(load.errors.values())} seen by the load:")
        for kind, count in load.errors.most_common():
            print(f"  {count:5d}  {kind}  (e.g. {load.examples[kind]})")
    else:
        print("errors       none seen by the load")
    if stats:
        keys = ("s3_requests", "s3_errors", "s3_bytes_fetched", "api_requests", "api_errors", "uploads_completed",
                "uploads_failed", "fuse_errors")
        print("daemon stats " + ", ".join(f"{k}={stats.get(k)}" for k in keys))
    if emu_stats:
        print(f"emulator     {emu_stats.get('samples')} samples in the account at the end")


def sample_line(sample: dict) -> str:
    return (f"{sample['t']:7.0f}s  rss {sample['VmRSS'] / 1024:6.1f} MiB  hwm {sample['VmHWM'] / 1024:6.1f} MiB  "
            f"anon {sample.get('RssAnon', 0) / 1024:6.1f} MiB  fds {sample['fds']:4d}  threads {sample['Threads']:3d}  "
            f"ops {sample['ops']:6d}  errors {sample['errors']:4d}")


def run(args: argparse.Namespace) -> int:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bpfs-soak-"))
    emu: EmulatorProcess | None = None
    mount: Mount | None = None
    load: Load | None = None
    status = 0
    interrupted = False
    try:
        spec = {"big_file_mib": args.big_file_mib, "bam_reads": args.bam_reads, "extra_analyses": args.extra_analyses}
        print(f"bpfs soak: {args.minutes:g} minutes, a sample every {args.interval:g}s; workdir {workdir}", flush=True)
        t0 = time.monotonic()
        emu = start_emulator(workdir, spec)
        emu.wait_ready(timeout=600)
        options = list(args.options) + ([] if args.keep_samples else ["allow_delete"])
        if args.tracemalloc:
            os.environ["BPFS_TRACEMALLOC"] = "60"  # the daemon inherits it: a report in its log every minute
        mount = Mount(workdir, emu.info["config"], options)
        mount.wait_live()
        print(f"emulator up and mounted at {mount.path} in {time.monotonic() - t0:.0f}s (daemon pid {mount.pid}, "
              f"emulator pid {emu.proc.pid}, options {','.join(options) or 'none'})", flush=True)
        load = Load(args, mount.path, emu, workdir)
        duration = args.minutes * 60
        samples: list[dict] = []
        started = time.monotonic()

        def take_sample() -> dict:
            sample = {"t": round(time.monotonic() - started, 1), **proc_status(mount.pid),
                      "emulator_rss_kb": proc_status(emu.proc.pid)["VmRSS"],
                      "ops": sum(load.ops.values()), "errors": sum(load.errors.values())}
            samples.append(sample)
            print(sample_line(sample), flush=True)
            return sample

        take_sample()  # mounted, before any load
        load.start()
        next_at = started + args.interval
        while time.monotonic() - started < duration:
            time.sleep(max(0.0, min(next_at, started + duration) - time.monotonic()))
            next_at += args.interval
            if mount.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with status {mount.proc.returncode} during the run")
            take_sample()
        load.stop.set()
        stuck = load.join(timeout=120)
        if stuck:
            print(f"soak: workers still busy after 120s: {', '.join(stuck)}", file=sys.stderr)
            status = 1
        take_sample()
        stats = None
        with contextlib.suppress(OSError, ValueError):
            stats = json.loads((mount.path / ".bpfs" / "stats").read_bytes())
        emu_stats = None
        with contextlib.suppress(Exception):
            emu_stats = emu.ask("stats")
        summary = summarize(samples, duration)
        print_summary(summary, load, stats, emu_stats)
        if args.json:
            report = {"args": {k: v for k, v in vars(args).items()}, "summary": summary, "samples": samples,
                      "ops": dict(load.ops), "errors": dict(load.errors), "error_examples": load.examples,
                      "faults": dict(load.faults), "daemon_stats": stats, "emulator": emu_stats,
                      "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                                  "python": sys.version.split()[0]}}
            pathlib.Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
            print(f"results written to {args.json}")
    except KeyboardInterrupt:
        interrupted = True
        status = 130
    except Exception as exc:
        print(f"soak: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not isinstance(exc, (RuntimeError, OSError)):
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
            if load is not None:
                load.stop.set()
            if mount is not None:
                mount.stop()  # fusermount3 -u, then -uz; workers still in the mount get errors and end
            if load is not None:
                load.join(timeout=30)
            if emu is not None:
                emu.stop()
            if args.keep_workdir:
                print(f"kept {workdir} (bpfs.log is the daemon's log)")
            elif mount is not None and is_mounted(mount.path):
                print(f"soak: {mount.path} is still mounted; left {workdir} in place", file=sys.stderr)
                status = status or 1
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    return status


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="bpfs soak: a mixed load on a mount of the emulator for N minutes, "
                                                 "sampling the daemon's RSS, fds and threads.")
    parser.add_argument("--minutes", type=float, default=12.0, help="how long the load runs (default 12)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 minute, a sample every 2 s")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--json", metavar="FILE", help="also write the samples and the summary as JSON")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTION[,OPTION...]",
                        help="bpfs mount options, e.g. -o cache_mb=64")
    parser.add_argument("--seed", type=int, default=20240701, help="seed of the files written and the random reads")
    parser.add_argument("--big-file-mib", type=int, default=160,
                        help="size of the demo's bigWig (default 160: with the BAMs, more than cache_mb=128, "
                             "so the readers keep fetching)")
    parser.add_argument("--bam-reads", type=int, default=60000, help="reads in the demo BAM (default 60000)")
    parser.add_argument("--extra-analyses", type=int, default=200,
                        help="small analyses added to the demo account, so ls -lR walks a real listing (200)")
    parser.add_argument("--refresh-every", type=float, default=15.0, help="seconds between refreshes (15)")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between injected faults (10)")
    parser.add_argument("--no-faults", action="store_true", help="inject no faults")
    parser.add_argument("--keep-samples", action="store_true",
                        help="keep the samples the load creates (the account then grows, and so do listings)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="run the daemon with BPFS_TRACEMALLOC=60: its log gets the top Python allocation "
                             "sites every minute (with --keep-workdir to read it)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temp directory (the daemon's log)")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes = 1.0 if "--minutes" not in (argv or sys.argv) else args.minutes
        args.interval = 2.0 if "--interval" not in (argv or sys.argv) else args.interval
    if args.minutes <= 0 or args.interval <= 0:
        parser.error("--minutes and --interval must be positive")
    return args


def main() -> int:
    args = parse_args()
    try:
        import bpfs.emulator  # noqa: F401
    except ImportError as exc:
        print(f"soak: {exc}: run it with the project's venv (.venv/bin/python scripts/soak.py; "
              "scripts/setup.sh makes it)", file=sys.stderr)
        return 2
    if not os.path.exists("/dev/fuse") or not (shutil.which("fusermount3") or shutil.which("fusermount")):
        print("soak: needs /dev/fuse and fusermount3 (scripts/setup.sh installs fuse3)", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
