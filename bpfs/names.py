"""Safe, collision-free, stable file names for one flat directory.

API names may hold `/`, NUL or be empty or `..`; basenames repeat inside one analysis.
Every entry must stay reachable under a name that does not change between listings,
so a colliding name gets its record id: `summary.txt` -> `summary~70013.txt`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

MAX_NAME_BYTES = 255
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".bgz")


def safe_name(name: str) -> str:
    """A single path component that the kernel accepts and that means nothing special."""
    cleaned = name.replace("/", "_").replace("\0", "")
    if cleaned in ("", ".", ".."):
        cleaned = "_" + cleaned
    encoded = cleaned.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_NAME_BYTES:
        cleaned = encoded[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    return cleaned


def split_ext(name: str) -> tuple[str, str]:
    """(stem, extension), keeping a compression suffix with the one before it (`x.vcf.gz`)."""
    ext = ""
    stem = name
    if stem.lower().endswith(COMPRESSION_SUFFIXES):
        dot = stem.rfind(".")
        ext, stem = stem[dot:], stem[:dot]
    dot = stem.rfind(".")
    if dot > 0:
        ext, stem = stem[dot:] + ext, stem[:dot]
    if not stem:  # a name like ".gz": no stem to keep
        return name, ""
    return stem, ext


def with_id(name: str, ident: object) -> str:
    stem, ext = split_ext(name)
    return safe_name(f"{stem}~{ident}{ext}")


def unique_names(items: Iterable[tuple[str, object]], reserved: Iterable[str] = ()) -> list[str]:
    """Names for (wanted name, id) pairs: each name that would be shared, or reserved, gets its id."""
    items = list(items)
    wanted = [safe_name(name) for name, _ in items]
    counts = Counter(wanted)
    taken = set(reserved)
    out = []
    for name, (_, ident) in zip(wanted, items, strict=True):
        out.append(with_id(name, ident) if counts[name] > 1 or name in taken else name)
    return out
