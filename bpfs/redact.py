"""The one redaction of secrets, for every text a user can read: log lines, `.bpfs/stats`, error messages.

Credentials travel in the API's query string (`api_key=`), S3 secrets sit in the config, presigned URLs
carry signatures. Two rules cover them: every secret value the process knows is replaced, and every
credential-looking query parameter is blanked, whatever its value. Texts also carry a server's own words
(error bodies), so control characters are shown escaped: an ESC or BEL would drive the user's terminal,
a carriage return would hide what came before it.
"""

from __future__ import annotations

import re
import threading

_QUERY_SECRETS = re.compile(
    r"(api_key|key|secret|password|token|X-Amz-Signature|Signature|X-Amz-Credential|X-Amz-Security-Token)"
    r"=[^&\s'\"]*",
    re.IGNORECASE,
)
# C0 controls but newline and tab (a traceback's lines), DEL and C1: shown as \xNN; and lone surrogates, a
# file name's bytes that are not UTF-8 (surrogateescape), which no log file or terminal could encode
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_MIN_SECRET = 4  # shorter values would blank ordinary words

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(*secrets: str | None) -> None:
    """Remember secret values (the API key, the S3 secret) so that no output shows them."""
    global _secrets
    with _lock:
        known = set(_secrets)
        known.update(s for s in secrets if s and len(s) >= _MIN_SECRET)
        _secrets = tuple(sorted(known, key=len, reverse=True))  # longest first: no partial leftovers


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    text = _CONTROLS.sub(_escape, text)
    return _QUERY_SECRETS.sub(r"\1=***", text)
