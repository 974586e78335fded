"""Logging to a rotated file a user can find, with secrets scrubbed from every line."""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path

DEFAULT_LOG = Path("~/.cache/bpfs/bpfs.log")
_QUERY_SECRETS = re.compile(r"(api_key|key|secret|X-Amz-Signature|Signature|X-Amz-Credential)=[^&\s'\"]*")


class RedactingFilter(logging.Filter):
    """Replaces known secret values and credential-looking query parameters with ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        message = _QUERY_SECRETS.sub(r"\1=***", message)
        record.msg, record.args = message, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text = record.exc_text
            for secret in self.secrets:
                text = text.replace(secret, "***")
            record.exc_text = _QUERY_SECRETS.sub(r"\1=***", text)
        return True


def setup_logging(log_file: str | None, debug: bool, secrets: list[str], stderr: bool) -> Path:
    path = Path(log_file or DEFAULT_LOG).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    redact = RedactingFilter(secrets)
    fmt = logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=10 << 20, backupCount=3)
    file_handler.setFormatter(fmt)
    file_handler.addFilter(redact)
    root.addHandler(file_handler)
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("bpfs: %(levelname)s %(message)s"))
        console.setLevel(logging.DEBUG if debug else logging.WARNING)
        console.addFilter(redact)
        root.addHandler(console)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
    logging.getLogger("mfusepy").setLevel(logging.INFO if debug else logging.WARNING)
    return path
