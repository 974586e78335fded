"""Running bpfs as a service: a systemd user unit, readiness for systemd (sd_notify), and `bpfs status`,
the human view of `.bpfs/stats`."""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time


def notify(state: str) -> None:
    """Tell systemd (Type=notify) that the mount is live, or stopping; nothing outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        pass  # systemd went away: nothing to tell


def systemd_unit(mountpoint: str, config: str | None, options: list[str]) -> str:
    """A user unit: starts the mount in the foreground (Type=notify: ready once mounted), unmounts on stop,
    restarts on failure. `bpfs mount` detaches a mount left dead by a crash before mounting again."""
    command = [sys.executable, "-m", "bpfs", "mount", mountpoint, "--foreground"]
    if config:
        command += ["-c", config]
    for group in options:
        command += ["-o", group]
    stop = [sys.executable, "-m", "bpfs", "umount", mountpoint]
    return f"""[Unit]
Description=bpfs: a Basepair account mounted at {mountpoint}

[Service]
Type=notify
NotifyAccess=main
ExecStart={shlex.join(command)}
ExecStop={shlex.join(stop)}
# no network yet at login, a server down for a while: try again (a dead mount is detached first)
Restart=on-failure
RestartSec=10
# uploads in flight are aborted and recorded failed at unmount: give them time to say so
TimeoutStopSec=60

[Install]
WantedBy=default.target
"""


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def render_status(mountpoint: str, stats: dict, previous: dict | None = None, interval: float | None = None) -> str:
    """What `bpfs status` prints: the counters a user reads when a mount feels slow, in words."""
    get = stats.get
    lines = [f"bpfs at {mountpoint}, up {_duration(get('uptime_seconds', 0))}"]
    lines.append(f"  requests   API {get('api_requests', 0)} ({get('api_errors', 0)} failed), "
                 f"S3 {get('s3_requests', 0)} ({get('s3_errors', 0)} failed)")
    fetched, served = get("s3_bytes_fetched", 0), get("bytes_served", 0)
    ratio = f", {fetched / served:.2f} fetched per byte read" if served else ""
    rate = ""
    if previous is not None and interval:
        rate = f", now {_bytes((served - previous.get('bytes_served', 0)) / interval)}/s read"
    lines.append(f"  bytes      {_bytes(fetched)} fetched from S3, {_bytes(served)} read through the mount"
                 f"{ratio}{rate}")
    hits, misses = get("cache_hits", 0), get("cache_misses", 0)
    share = f" ({100 * hits / (hits + misses):.0f}% hits)" if hits + misses else ""
    lines.append(f"  cache      {hits} hits, {misses} misses{share}")
    disk = get("disk_cache")
    if disk:
        lines.append(f"  disk cache {get('disk_hits', 0)} hits, {get('disk_misses', 0)} misses, "
                     f"{_bytes(disk.get('bytes_on_disk', 0))} of {_bytes(disk.get('limit', 0))} on disk, "
                     f"{get('disk_evictions', 0)} evicted, {get('disk_corrupt', 0)} damaged blocks dropped")
    uploads = get("uploads", []) or []
    lines.append(f"  uploads    {get('uploads_completed', 0)} completed, {get('uploads_failed', 0)} failed, "
                 f"{len(uploads)} in flight, {_bytes(get('bytes_uploaded', 0))} sent")
    for upload in uploads:
        lines.append(f"    {upload['path']}: {_bytes(upload['bytes_written'])} written, "
                     f"{_bytes(upload['bytes_uploaded'])} in S3 at {_bytes(upload['bytes_per_second'])}/s, "
                     f"for {_duration(upload['seconds'])}")
    if get("analyses_started", 0) or get("analyses_refused", 0):
        lines.append(f"  analyses   {get('analyses_started', 0)} started, {get('analyses_refused', 0)} refused")
    lines.append(f"  errors     {get('fuse_errors', 0)} failed operations, {get('bad_records', 0)} malformed records, "
                 f"{get('bad_files', 0)} unreadable files")
    errors = get("last_errors", []) or []
    if errors:
        lines.append("  last errors (the log has more):")
        for error in errors[-5:]:
            when = time.strftime("%H:%M:%S", time.localtime(error.get("time", 0)))
            lines.append(f"    {when} {error.get('error', '')}")
    return "\n".join(lines) + "\n"
