"""Reading a JSON object a user wrote into the mount (sample.json, a request in analyses/new/)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable


def read_object(text: bytes, where: str, keys: Iterable[str], fail: Callable[[str], BaseException],
                shape: str = "must be a JSON object") -> dict | None:
    """The object `text` holds (None when it is blank), or `fail(message)` raised saying what is wrong:
    not JSON, nested too deeply for the parser, not an object, or keys outside `keys`."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except RecursionError:
        raise fail(f"{where}: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise fail(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise fail(f"{where}: {shape}")
    known = list(keys)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise fail(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(known)})")
    return data
