"""A local Basepair look-alike: the REST API (v1 + v3) and an S3 endpoint over one demo account.

Why: `bpfs demo` and the test-suite need a Basepair account without a Basepair login or AWS.
`Emulator` composes the pieces (an on-disk `ObjectStore`, the `S3Server` over it, the
deterministic demo account, the `ApiServer`) on 127.0.0.1 with ephemeral ports, and writes
the config files (v1 `api`+`aws`, v3 `api_v3`+`storage`) a user would download from the
dashboard, pointed at these local servers.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

from bpfs.emulator.account import AccountState, build_demo_account
from bpfs.emulator.apiserver import ApiServer
from bpfs.emulator.faults import Faults

__all__ = ["Emulator", "AccountState", "ApiServer", "Faults", "build_demo_account"]


class Emulator:
    """Both servers over the demo account. `start()` returns self; use it as a context manager."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        extra_analyses: int = 0,
        big_file_mib: int = 64,
        bam_reads: int = 60000,
        v1_bare_lists: bool = False,
        accept_aws_chunked: bool = True,
        api_port: int = 0,
        s3_port: int = 0,
        analysis_pace: tuple[float, float] = (1.0, 4.0),
    ) -> None:
        self.data_dir: pathlib.Path | None = pathlib.Path(data_dir) if data_dir is not None else None
        self.extra_analyses = extra_analyses
        self.big_file_mib = big_file_mib
        self.bam_reads = bam_reads
        self.v1_bare_lists = v1_bare_lists
        self.accept_aws_chunked = accept_aws_chunked
        self.api_port = api_port
        self.s3_port = s3_port
        self.analysis_pace = analysis_pace  # an analysis started through the API: seconds queued, then running
        self.faults_api = Faults()
        self.faults_s3 = Faults()
        self._temp_dir: pathlib.Path | None = None
        self.state: AccountState | None = None
        self.store: Any = None
        self.api: ApiServer | None = None
        self.s3: Any = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Emulator:
        if self.api is not None:
            return self
        from bpfs.emulator.s3server import ObjectStore, S3Server

        try:
            if self.data_dir is None:
                self._temp_dir = pathlib.Path(tempfile.mkdtemp(prefix="bpfs-emulator-"))
                root = self._temp_dir
            else:
                root = self.data_dir
                root.mkdir(parents=True, exist_ok=True)
            self.store = ObjectStore(root / "s3")
            self.s3 = S3Server(
                self.store, faults=self.faults_s3, port=self.s3_port, accept_aws_chunked=self.accept_aws_chunked
            ).start()
            self.state = build_demo_account(
                self.store,
                extra_analyses=self.extra_analyses,
                big_file_mib=self.big_file_mib,
                bam_reads=self.bam_reads,
            )
            self.api = ApiServer(
                self.state, self.s3.url, faults=self.faults_api, port=self.api_port, v1_bare_lists=self.v1_bare_lists
            )
            self.api.analysis_pace = self.analysis_pace
            self.api.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        api, self.api = self.api, None
        s3, self.s3 = self.s3, None
        if api is not None:
            api.stop()
        if s3 is not None:
            s3.stop()
        temp, self._temp_dir = self._temp_dir, None
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ account facts

    def _running(self) -> tuple[AccountState, ApiServer, Any]:
        if self.api is None or self.s3 is None or self.state is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self.state, self.api, self.s3

    @property
    def api_url(self) -> str:
        """`http://127.0.0.1:PORT/` (with the trailing slash a v1 `host` needs)."""
        return self._running()[1].url

    @property
    def s3_url(self) -> str:
        """`http://127.0.0.1:PORT` (no trailing slash, as an `endpoint_url`)."""
        return self._running()[2].url.rstrip("/")

    @property
    def bucket(self) -> str:
        return self._running()[0].bucket

    @property
    def user_id(self) -> int:
        return self._running()[0].user_id

    @property
    def username(self) -> str:
        return self._running()[0].username

    @property
    def api_key(self) -> str:
        return self._running()[0].api_key

    # ------------------------------------------------------------------ config files

    def _storage(self) -> dict[str, Any]:
        state = self._running()[0]
        return {
            "user": {
                "settings": {"bucket": state.bucket, "region": state.region, "endpoint_url": self.s3_url},
                "credentials": {"id": state.s3_key_id, "secret": state.s3_secret},
            }
        }

    def config_v1(self) -> dict[str, Any]:
        """The dashboard's v1 config (`api` + `aws`), with `aws.endpoint_url` pointing at the local S3."""
        state = self._running()[0]
        return {
            "api": {"host": self.api_url, "prefix": "api/v1/", "username": state.username, "api_key": state.api_key},
            "aws": {
                "aws_id": state.s3_key_id,
                "aws_secret": state.s3_secret,
                "endpoint_url": self.s3_url,
                "s3": {"bucket": state.bucket, "region": state.region},
            },
        }

    def config_v3(self, cli: bool = False) -> dict[str, Any]:
        """The v3 config (`api_v3`); with `cli=False` the `storage` section is in the file (§1.3)."""
        state, api, _ = self._running()
        config: dict[str, Any] = {
            "api_v3": {
                "host": f"{api.host}:{api.port}",
                "prefix": "/api/v3/",
                "ssl": False,
                "username": state.username,
                "key": state.api_key,
                "timeout": 10,
                "cli": cli,
            }
        }
        if not cli:
            config["storage"] = self._storage()
        return config

    def write_config(self, path: str | os.PathLike[str], dialect: str = "v3") -> pathlib.Path:
        """Write one config file (mode 0600: it holds secrets). `dialect` is "v1", "v3" or "v3-cli"."""
        if dialect == "v1":
            config = self.config_v1()
        elif dialect == "v3":
            config = self.config_v3()
        elif dialect == "v3-cli":
            config = self.config_v3(cli=True)
        else:
            raise ValueError(f"unknown config dialect {dialect!r} (v1, v3, v3-cli)")
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh, indent=2)
            fh.write("\n")
        os.chmod(target, 0o600)
        return target
