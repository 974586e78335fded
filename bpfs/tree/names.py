"""Safe, collision-free, stable file names for one flat directory.

API names may hold `/`, NUL or be empty or `..`; basenames repeat inside one analysis.
Every entry must stay reachable under a name that does not change between listings,
so a colliding name gets its record id: `summary.txt` -> `summary~70013.txt`.
"""

from __future__ import annotations

import hashlib
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
    if len(encoded) > MAX_NAME_BYTES:  # cut the stem, keep a short extension: x.fastq.gz stays a .fastq.gz
        stem, ext = split_ext(cleaned)
        cleaned = _fit(stem, ext) if len(ext.encode("utf-8", "surrogateescape")) <= 32 else _fit(cleaned, "")
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


def _fit(stem: str, suffix: str) -> str:
    """`stem + suffix` in at most 255 bytes: the stem is cut, never the suffix that makes the name unique."""
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8", "surrogateescape"))
    encoded = stem.encode("utf-8", "surrogateescape")
    if len(encoded) > room:
        stem = encoded[:max(room, 0)].decode("utf-8", "ignore")
    return stem + suffix


def with_id(name: str, ident: object) -> str:
    """`summary.txt` -> `summary~70013.txt`, still within 255 bytes (an overlong extension is dropped; an
    absurdly long id is shortened to a digest of it, so that different ids stay different)."""
    stem, ext = split_ext(safe_name(name))
    text = str(ident)
    if len(text) > 40:
        text = "h" + hashlib.sha1(text.encode()).hexdigest()[:16]
    tag = f"~{text}"
    if len((tag + ext).encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES // 2:
        stem, ext = stem + ext, ""
    return safe_name(_fit(stem, tag + ext))


def unique_names(items: Iterable[tuple[str, object]], reserved: Iterable[str] = ()) -> list[str]:
    """Names for (wanted name, id) pairs, all distinct and none of them reserved.

    A name that is wanted once keeps it; a shared (or reserved) one becomes `<stem>~<id><ext>`. Where
    that too is taken (an original name that already reads `x~7.txt`, two records with one id, a name
    cut at 255 bytes), a counter follows the id, `x~7~2.txt`, until the name is free.
    """
    items = list(items)
    wanted = [safe_name(name) for name, _ in items]
    counts = Counter(wanted)
    taken = set(reserved)
    out: list[str | None] = [None] * len(items)
    for index, name in enumerate(wanted):  # plain names first: they never move
        if counts[name] == 1 and name not in taken:
            out[index] = name
            taken.add(name)
    for index, (name, (_, ident)) in enumerate(zip(wanted, items, strict=True)):
        if out[index] is not None:
            continue
        candidate = _free(name, ident, taken)
        out[index] = candidate
        taken.add(candidate)
    return [name for name in out if name is not None]


def unique_in(taken: Iterable[str] | dict, name: str, ident: object) -> str:
    """One more name in a directory that already holds `taken`: `name`, or else a free `~<id>` form."""
    if name not in taken:
        return name
    return _free(name, ident, taken)


def _free(name: str, ident: object, taken: Iterable[str] | dict) -> str:
    """The first free `~<id>` form of a name; every try differs from the last, so this always ends."""
    candidate, n = with_id(name, ident), 1
    while candidate in taken:
        n += 1
        candidate = with_id(name, f"{ident}~{n}")
    return candidate
