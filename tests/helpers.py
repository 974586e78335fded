"""Helpers shared by the tests: the emulator's own view of the account (records, objects) to check the
mount against, generated files, and waiting for a condition."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path

import requests

SEED_GENOMES = ["hg19", "mm10", "mm9", "danRer10", "tair10", "dm6", "danRer7", "sacCer3", "SL2.40", "Xla.v91",
                "xenTro7", "taeGut2", "Streptococcus_sanguinis", "CENPK113-7D-RP", "rn6", "susScr11", "ce11",
                "Manis_javanica", "Ictalurus_punctatus", "mouse_GRCm38_M18", "Citrus_clementina.v1",
                "Nematostella_vectensis", "Gallus_gallus"]


def api(emulator, resource: str, **params) -> object:
    params = {"username": emulator.username, "api_key": emulator.api_key, "limit": 0, **params}
    response = requests.get(f"{emulator.api_url}api/v3/{resource}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def s3_bytes(emulator, path: str) -> bytes:
    if path.startswith("s3://"):
        bucket, _, key = path[5:].partition("/")
    else:
        bucket, key = emulator.bucket, path
    return emulator.store.get_bytes(bucket, key)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


MiB = 1 << 20


# -- helpers -------------------------------------------------------------------------------------------
def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def make_file(path: Path, size: int) -> Path:
    """Random bytes, written in 8 MiB pieces so a big file never sits in the test's memory at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        block = os.urandom(min(size, 8 * MiB)) if size else b""
        n = 0
        while left > 0:
            piece = block[: min(left, len(block))]
            out.write(n.to_bytes(8, "little") + piece[8:] if len(piece) > 8 else piece)
            left -= len(piece)
            n += 1
    return path


def new_draft(m, name: str) -> Path:
    """mkdir samples/new/<name>: a sample being created."""
    draft = m.path / "samples" / "new" / name
    draft.mkdir()
    return draft


def digest(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def cp(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["cp", *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def samples_named(emu, name: str) -> list[dict]:
    with emu.state.lock:
        return [dict(s) for s in emu.state.table("samples").values() if s["name"] == name]


def the_sample(emu, name: str) -> dict:
    found = samples_named(emu, name)
    assert len(found) == 1, f"{len(found)} samples named {name}"
    return found[0]


def uploads_of(emu, sample_id: int) -> list[dict]:
    with emu.state.lock:
        rows = [dict(u) for u in emu.state.table("uploads").values() if u["sample"] == sample_id]
    return sorted(rows, key=lambda u: (u["order"], u["id"]))


def uploads_with_key(emu, pattern: str) -> list[dict]:
    with emu.state.lock:
        return [dict(u) for u in emu.state.table("uploads").values() if pattern in (u["key"] or "")]


def stored(emu, key: str) -> bytes:
    return emu.store.get_bytes(emu.bucket, key)


def stored_md5(emu, key: str) -> str:
    return digest(emu.store.path(emu.bucket, key))


def open_mpus(emu) -> list:
    return list(emu.s3.multipart_uploads.values())


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
