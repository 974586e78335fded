"""The `bpfs` command: mount, umount, refresh, demo.

A user mistake (bad config, missing mount point, refused credentials) is one line on
stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from bpfs import __version__
from bpfs.errors import BpfsError
from bpfs.logs import DEFAULT_LOG, QUIET, setup_logging
from bpfs.mounting.assembly import serve
from bpfs.mounting.daemon import Readiness, daemonize
from bpfs.mounting.mountpoints import check_fuse, check_mountpoint, mounted_fuse, unmount
from bpfs.mounting.service import render_status, systemd_unit
from bpfs.options import parse_options
from bpfs.redact import redact
from bpfs.remote.config import find_config, load_config

log = logging.getLogger("bpfs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpfs",
        description="Mount a Basepair account (genomes, samples, analyses and their files) as a directory tree.",
    )
    parser.add_argument("--version", action="version", version=f"bpfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    mount = sub.add_parser("mount", help="mount an account", description="Mount a Basepair account.")
    mount.add_argument("mountpoint")
    mount.add_argument("-c", "--config", help="config file (default: $BP_CONFIG_FILE, ~/.basepair/config.json)")
    mount.add_argument("-f", "--foreground", action="store_true", help="stay attached; Ctrl-C unmounts")
    mount.add_argument("-o", dest="options", action="append", metavar="OPTION[,OPTION...]",
                       help="mount options: ro, allow_other, allow_delete, uid=, gid=, umask=, list_ttl=, "
                            "running_ttl=, s3_timeout=, cache_mb=, part_mb=, readers=, read_ahead_kb=, direct_io, "
                            "disk_cache=, cache_dir=, genome=, datatype=, platform=, default_workflow=")
    mount.add_argument("--debug", action="store_true", help="log every request (secrets are scrubbed)")
    mount.add_argument("--log-file", help="log file (default ~/.cache/bpfs/bpfs.log)")

    umount = sub.add_parser("umount", help="unmount", description="Unmount a bpfs mount.")
    umount.add_argument("mountpoint")
    umount.add_argument("--lazy", action="store_true", help="detach now even if busy (fusermount -uz)")

    refresh = sub.add_parser("refresh", help="drop cached listings now",
                             description="Make a mount re-read listings now instead of after list_ttl.")
    refresh.add_argument("mountpoint")
    refresh.add_argument("path", nargs="?", help="only below this path (e.g. analyses/10000); default: all")

    status = sub.add_parser("status", help="what a mount is doing: requests, bytes, cache, uploads, errors",
                            description="A readable view of MOUNTPOINT/.bpfs/stats.")
    status.add_argument("mountpoint")
    status.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C")

    unit = sub.add_parser("systemd-unit", help="print a systemd user unit that keeps a mount up",
                          description="Print a systemd user service for MOUNTPOINT (install it as README says).")
    unit.add_argument("mountpoint")
    unit.add_argument("-c", "--config", help="config file the unit mounts with")
    unit.add_argument("-o", dest="options", action="append", metavar="OPTION[,OPTION...]")

    demo = sub.add_parser("demo", help="mount a local emulated account (no Basepair login needed)",
                          description="Start the bundled Basepair emulator and mount it; Ctrl-C stops both.")
    demo.add_argument("mountpoint", nargs="?", default="~/basepair-demo")
    demo.add_argument("-o", dest="options", action="append", metavar="OPTION[,OPTION...]")
    demo.add_argument("--dialect", choices=("v1", "v3"), default="v3", help="API dialect the demo speaks")
    demo.add_argument("--debug", action="store_true")
    demo.add_argument("--log-file")
    return parser


COMMANDS = ("mount", "umount", "refresh", "status", "systemd-unit", "demo")


def helper_form(argv: list[str]) -> list[str]:
    """`bpfs SOURCE MOUNTPOINT -o OPTS`, as mount(8) calls a FUSE helper for an fstab line of type fuse.bpfs:
    SOURCE is the config file (`bpfs` or `none`: the usual lookup)."""
    positional = [a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "-o")]
    if len(positional) != 2 or argv[0] in COMMANDS or argv[0].startswith("-"):
        return argv
    source, mountpoint = positional
    options = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-o"]
    out = ["mount", mountpoint]
    if source not in ("bpfs", "none"):
        out += ["-c", source]
    for group in options:
        out += ["-o", group]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = helper_form(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "umount":
            unmount(args.mountpoint, lazy=args.lazy)
            return 0
        if args.command == "refresh":
            return cmd_refresh(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "systemd-unit":
            return cmd_systemd_unit(args)
    except BpfsError as exc:
        print(f"bpfs: {one_line(redact(str(exc)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def check_log_file(log_file: str | None) -> Path:
    """The log file, writable: a mistake here is one line now, not a daemon that dies unseen."""
    path = Path(log_file or DEFAULT_LOG).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise BpfsError(f"cannot write the log file {path}: {exc.strerror}") from None
    return path


def one_line(text: str) -> str:
    """A message stays one line even when a path in it holds a newline."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def cmd_mount(args: argparse.Namespace) -> int:
    options = parse_options(args.options)
    config = load_config(find_config(args.config))
    mountpoint = check_mountpoint(args.mountpoint)
    check_fuse()
    for warning in config.warnings:
        print(f"bpfs: warning: {warning}", file=sys.stderr)
    log_path = check_log_file(args.log_file)
    readiness = Readiness(None) if args.foreground else daemonize()  # before any thread or socket exists
    setup_logging(str(log_path), args.debug, [config.api_key, config.aws_secret or "", config.aws_id or ""],
                  stderr=args.foreground)
    for warning in config.warnings:
        log.warning(warning)
    try:
        serve(config, options, mountpoint, on_ready=readiness.ready, debug=args.debug)
    except BpfsError as exc:
        log.error("mount failed: %s", exc, extra={QUIET: True})  # the user gets it once, below
        readiness.failed(redact(str(exc)))
        if args.foreground:
            raise
        return 1
    except Exception as exc:
        log.exception("mount failed", extra={QUIET: True})
        message = redact(f"mount failed: {exc} (details in {log_path})")
        readiness.failed(message)
        if args.foreground:
            raise BpfsError(message) from None
        return 1
    if readiness.fd is not None:  # the loop ended before init: libfuse refused the mount
        readiness.failed(f"libfuse could not mount {mountpoint} (details in {log_path})")
        return 1
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(os.path.expanduser(args.mountpoint))
    if not mounted_fuse(mountpoint):
        raise BpfsError(f"{mountpoint} is not mounted")
    control = Path(mountpoint, ".bpfs", "refresh")
    try:
        if args.path:
            target = os.path.abspath(args.path) if args.path.startswith(("/", ".")) else args.path
            if target.startswith(mountpoint + "/") or target == mountpoint:
                target = target[len(mountpoint):]
            try:
                control.write_text("/" + target.lstrip("/") + "\n")
                return 0
            except OSError as exc:
                if exc.errno == errno.ENOTCONN:
                    raise
                # a read-only mount refuses writes: fall back to dropping everything
        control.read_bytes()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise BpfsError(f"the bpfs daemon of {mountpoint} is gone (Transport endpoint is not connected): "
                            f"run `bpfs mount {mountpoint}` again, which detaches the dead mount first, or "
                            f"`bpfs umount --lazy {mountpoint}`") from None
        raise BpfsError(f"{mountpoint} is not a bpfs mount ({exc.strerror})") from None
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(os.path.expanduser(args.mountpoint))
    if not mounted_fuse(mountpoint):
        raise BpfsError(f"{mountpoint} is not mounted")
    previous: dict | None = None
    while True:
        try:
            snapshot = json.loads(Path(mountpoint, ".bpfs", "stats").read_bytes())
        except OSError as exc:
            raise BpfsError(f"cannot read {mountpoint}/.bpfs/stats: {exc.strerror}") from None
        except ValueError:
            raise BpfsError(f"{mountpoint}/.bpfs/stats is not what bpfs writes: is this a bpfs mount?") from None
        text = render_status(mountpoint, snapshot, previous, args.watch)
        if args.watch:
            sys.stdout.write("\x1b[H\x1b[2J" if sys.stdout.isatty() else "\n")
        sys.stdout.write(text)
        sys.stdout.flush()
        if not args.watch:
            return 0
        previous = snapshot
        time.sleep(args.watch)


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(os.path.expanduser(args.mountpoint))
    print(systemd_unit(mountpoint, os.path.abspath(os.path.expanduser(args.config)) if args.config else None,
                       args.options or []), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bpfs.emulator import Emulator  # the emulator never loads in a real mount

    options = parse_options(args.options)
    mountpoint = os.path.abspath(os.path.expanduser(args.mountpoint))
    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    mountpoint = check_mountpoint(mountpoint)
    setup_logging(args.log_file, args.debug, [], stderr=True)
    print("bpfs demo: generating the demo account (a few seconds)...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bpfs-demo-") as tmp, Emulator() as emulator:
        config_path = emulator.write_config(Path(tmp) / "config.json", dialect=args.dialect)
        config = load_config(config_path)

        def ready() -> None:
            print(f"bpfs demo: the emulated account is mounted at {mountpoint}\n"
                  f"  try:  ls {mountpoint}/analyses/10000\n"
                  f"        cat {mountpoint}/genomes/index.tsv\n"
                  f"        samtools view {mountpoint}/analyses/10000/bam/liver_rep1.bam chr1:10000-20000 | head\n"
                  f"        echo '{{\"workflow\": 7, \"samples\": [10001]}}' > {mountpoint}/analyses/new/run.json\n"
                  f"        cat {mountpoint}/analyses/new/run.json   # the new analysis, running\n"
                  f"  config: {config_path}; press Ctrl-C to unmount and stop", file=sys.stderr, flush=True)

        try:
            serve(config, options, mountpoint, on_ready=ready, debug=args.debug)
        finally:
            if mounted_fuse(mountpoint):
                unmount(mountpoint, lazy=True)
    print("bpfs demo: unmounted and stopped", file=sys.stderr)
    return 0

