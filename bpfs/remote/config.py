"""The Basepair config file, in both formats the dashboard hands out.

v1: `api` (host with scheme + prefix `api/v1/`, `api_key`) and an optional `aws` section.
v3: `api_v3` (bare host, prefix `/api/v3/`, `ssl`, `key`, `timeout`, `cli`) and `storage`, or, when
`cli` is set, the storage document fetched from `users/get_configuration` at mount time.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from bpfs.errors import ConfigError

DEFAULT_PATH = Path("~/.basepair/config.json")
DEFAULT_TIMEOUT = 10.0
MAX_CONFIG = 1 << 20  # a dashboard config is under 1 KB
MAX_TIMEOUT = 600.0  # seconds an API call may wait for an answer: longer would look like a hang


@dataclass(frozen=True)
class Config:
    dialect: str  # "v1" or "v3": decides URL, foreign-key and timestamp conventions
    base_url: str  # ends with "/": resources are appended to it
    username: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    fetch_storage: bool = False  # v3 `cli`: the bucket and S3 keys come from users/get_configuration
    bucket: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    aws_id: str | None = field(default=None, repr=False)
    aws_secret: str | None = field(default=None, repr=False)
    source: str = ""
    warnings: tuple[str, ...] = ()

    def with_storage(self, document: dict, where: str = "storage configuration") -> Config:
        """Fill the S3 settings from a v3 configuration document (the file itself or the server's)."""
        storage = _section(document, "storage", where, optional=True)
        user = _section(storage, "user", f"{where}: storage", optional=True)
        settings = _section(user, "settings", f"{where}: storage.user", optional=True)
        creds = _section(user, "credentials", f"{where}: storage.user", optional=True)
        _strings(settings, ("bucket", "region", "endpoint_url"), f"{where}: storage.user.settings")
        _strings(creds, ("id", "secret"), f"{where}: storage.user.credentials")
        if creds.get("role"):
            creds = {}  # an IAM role: the ambient AWS credentials apply
        return replace(
            self,
            bucket=settings.get("bucket") or self.bucket,
            region=settings.get("region") or self.region,
            endpoint_url=self.endpoint_url or settings.get("endpoint_url"),
            aws_id=creds.get("id") or self.aws_id,
            aws_secret=creds.get("secret") or self.aws_secret,
        )


def find_config(explicit: str | None = None, environ: os._Environ | dict | None = None) -> Path:
    """`-c`, then `BP_CONFIG_FILE`, then `~/.basepair/config.json`, as the contract orders them."""
    env = os.environ if environ is None else environ
    for candidate, origin in ((explicit, "-c"), (env.get("BP_CONFIG_FILE"), "BP_CONFIG_FILE")):
        if candidate:
            path = Path(candidate).expanduser()
            if not _is_file(path):
                raise ConfigError(f"config file {path} (from {origin}) does not exist")
            return path
    path = DEFAULT_PATH.expanduser()
    if not _is_file(path):
        raise ConfigError(
            f"no config file: pass -c CONFIG, set BP_CONFIG_FILE, or save the dashboard's API config as {path}"
        )
    return path


def _is_file(path: Path) -> bool:
    """Whether the path is a file; a directory we may not enter says so in one line."""
    try:
        return path.is_file()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def load_config(path: str | os.PathLike, environ: os._Environ | dict | None = None) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG:
        raise ConfigError(f"config file {path} is {len(raw)} bytes: not a Basepair config (at most {MAX_CONFIG})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}): save the dashboard's "
                          "JSON file as it was downloaded") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is not a Basepair config (JSON nested too deeply)") from None
    config = parse_config(data, source=str(path), environ=environ)
    warnings = list(config.warnings)
    try:
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"config file {path} holds secrets but is readable by others: chmod 600 {path}")
    except OSError:
        pass
    return replace(config, warnings=tuple(warnings))


def parse_config(data: object, source: str = "<config>", environ: os._Environ | dict | None = None) -> Config:
    """Build a Config from the parsed JSON of either format; the environment's S3 endpoint wins."""
    env = os.environ if environ is None else environ
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    if "api_v3" in data:
        config = _parse_v3(data, source)
    elif "api" in data:
        config = _parse_v1(data, source)
    else:
        raise ConfigError(f"{source}: neither an 'api' (v1) nor an 'api_v3' (v3) section")
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        config = replace(config, endpoint_url=endpoint)
    return config


def _parse_v1(data: dict, source: str) -> Config:
    api = _section(data, "api", source)
    host, prefix, username, key = _required(api, ("host", "prefix", "username", "api_key"), f"{source}: api")
    if "v1" not in prefix:
        raise ConfigError(
            f"{source}: api.prefix {prefix!r} is not a v1 prefix (api/v1/); for v3 use an 'api_v3' section"
        )
    if "://" not in host:
        raise ConfigError(f"{source}: api.host {host!r} needs a scheme, e.g. https://app.basepairtech.com/")
    base = host + prefix  # the official client concatenates them as they are
    if not base.endswith("/"):
        base += "/"
    aws = _section(data, "aws", source, optional=True)
    s3 = _section(aws, "s3", f"{source}: aws", optional=True)
    _strings(aws, ("aws_id", "aws_secret", "endpoint_url"), f"{source}: aws")
    _strings(s3, ("bucket", "region"), f"{source}: aws.s3")
    return Config(
        dialect="v1",
        base_url=base,
        username=username,
        api_key=key,
        bucket=s3.get("bucket"),
        region=s3.get("region"),
        endpoint_url=aws.get("endpoint_url"),
        aws_id=aws.get("aws_id") or None,
        aws_secret=aws.get("aws_secret") or None,
        source=source,
    )


def _parse_v3(data: dict, source: str) -> Config:
    api = _section(data, "api_v3", source)
    host, prefix, username, key = _required(api, ("host", "prefix", "username", "key"), f"{source}: api_v3")
    if prefix != "/api/v3/":
        raise ConfigError(f"{source}: api_v3.prefix must be exactly '/api/v3/', not {prefix!r}")
    if "://" in host:
        raise ConfigError(f"{source}: api_v3.host {host!r} must not have a scheme (use 'ssl': true/false)")
    scheme = "https" if api.get("ssl", True) else "http"
    try:
        timeout = float(int(api.get("timeout", DEFAULT_TIMEOUT)))
    except (TypeError, ValueError, OverflowError):
        timeout = DEFAULT_TIMEOUT  # the official client falls back to 10 s too
    if not 1 <= timeout <= MAX_TIMEOUT:
        raise ConfigError(f"{source}: api_v3.timeout {api.get('timeout')!r} is not a number of seconds from 1 to "
                          f"{MAX_TIMEOUT:.0f}")
    config = Config(
        dialect="v3",
        base_url=f"{scheme}://{host.rstrip('/')}{prefix}",
        username=username,
        api_key=key,
        timeout=timeout,
        fetch_storage=bool(api.get("cli")),
        source=source,
    )
    if not config.fetch_storage:
        config = config.with_storage(data, source)
    return config


def _section(data: object, name: str, where: str, optional: bool = False) -> dict:
    """`data[name]`, which must be an object; an absent optional one is empty."""
    value = data.get(name) if isinstance(data, dict) else None
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{name}' must be an object")
    return value


def _strings(section: dict, keys: tuple[str, ...], where: str) -> None:
    """Optional settings that, when present, must be text (a number where a bucket goes is a broken file)."""
    for name in keys:
        if section.get(name) is not None and not isinstance(section[name], str):
            raise ConfigError(f"{where}.{name} must be a string")


def _required(section: dict, keys: tuple[str, ...], where: str) -> list[str]:
    missing = [k for k in keys if not isinstance(section.get(k), str) or not section.get(k)]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    return [section[k] for k in keys]
