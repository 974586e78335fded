"""Logging to a rotated file a user can find (mode 0600), with secrets scrubbed from every line."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from bpfs.redact import redact, register

DEFAULT_LOG = Path("~/.cache/bpfs/bpfs.log")
LOG_BYTES = 10 << 20  # one log file; with 3 backups a busy mount keeps about 40 MB of history
LOG_BACKUPS = 3
QUIET = "quiet"  # `log.error(..., extra={QUIET: True})`: to the file only, the user is told otherwise


class RedactingFilter(logging.Filter):
    """Runs every record (message, arguments, traceback) through the one redaction."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class _NotQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, QUIET, False)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Log files hold paths, sample names and request lines: created 0600, rotated ones too."""

    def _open(self):  # noqa: ANN202 - the stdlib's signature
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a file an older version created with the umask's mode
        except OSError:
            pass
        return os.fdopen(fd, self.mode.replace("w", "a"), encoding=self.encoding, errors=self.errors)


def setup_logging(log_file: str | None, debug: bool, secrets: list[str], stderr: bool) -> Path:
    register(*secrets)
    path = Path(log_file or DEFAULT_LOG).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    scrub = RedactingFilter()
    fmt = logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    file_handler = PrivateRotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS)
    file_handler.setFormatter(fmt)
    file_handler.addFilter(scrub)
    root.addHandler(file_handler)
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("bpfs: %(levelname)s %(message)s"))
        console.setLevel(logging.DEBUG if debug else logging.WARNING)
        console.addFilter(scrub)
        console.addFilter(_NotQuiet())
        root.addHandler(console)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # urllib3 and botocore warn on every retry they make: bpfs logs the outcome itself, once
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.ERROR)
    logging.getLogger("mfusepy").setLevel(logging.INFO if debug else logging.WARNING)
    return path
