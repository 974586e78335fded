"""The Basepair REST client: both dialects, pagination, timeouts and retries.

Credentials travel in the query string (the service's only scheme), so nothing here
ever logs a full URL: `_redact` strips them from every message.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bpfs.config import Config
from bpfs.errors import AccessDenied, NotFound, RemoteError
from bpfs.records import Analysis, Genome, Sample, Workflow, fk_id
from bpfs.stats import Stats

log = logging.getLogger("bpfs.api")

PAGE_SIZE = 100  # the v3 client's page size; a Tastypie server pages 20 when no limit is sent
CONNECT_TIMEOUT = 5.0
# Idempotent requests are retried on refused connections and 5xx with backoff 0.25, 0.5, 1 s, but
# a server that stalls is retried once only: one call costs at most 2 * (5 s + timeout) + 2 s.
RETRIES = 3
READ_RETRIES = 1


def _redact(text: str) -> str:
    return re.sub(r"(api_key|key|secret|X-Amz-Signature|Signature)=[^&\s]*", r"\1=***", text)


class ApiClient:
    def __init__(self, config: Config, stats: Stats | None = None, retries: int = RETRIES) -> None:
        self.config = config
        self.stats = stats or Stats()
        self.dialect = config.dialect
        self.session = requests.Session()
        retry = Retry(
            total=retries,
            connect=retries,
            read=min(retries, READ_RETRIES),
            status=retries,
            backoff_factor=0.25,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE"}),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "bpfs"
        self.auth = {"username": config.username, "api_key": config.api_key}
        self.user: dict | None = None

    # -- transport ---------------------------------------------------------------------------------
    def url(self, resource: str) -> str:
        return self.config.base_url + resource.strip("/")

    def request(self, method: str, resource: str, params: dict | None = None, body: Any = None,
                slash: bool = False) -> requests.Response:
        url = self.url(resource) + ("/" if slash else "")
        query = dict(self.auth)
        if params:
            query.update(params)
        self.stats.add("api_requests")
        started = time.monotonic()
        try:
            response = self.session.request(
                method, url, params=query, json=body, timeout=(CONNECT_TIMEOUT, self.config.timeout)
            )
        except requests.RequestException as exc:
            self.stats.add("api_errors")
            reason = _redact(f"{type(exc).__name__}: {exc}")
            raise RemoteError(f"{method} {resource}: API unreachable ({reason})") from None
        log.debug("%s %s -> %s in %.3fs", method, resource, response.status_code, time.monotonic() - started)
        if response.status_code >= 400:
            self.stats.add("api_errors")
            detail = _error_detail(response)
            where = f"{method} {resource}: HTTP {response.status_code}{': ' + detail if detail else ''}"
            if response.status_code == 401:
                raise AccessDenied(f"credentials refused by {self.config.base_url} ({where})")
            if response.status_code == 403:
                raise AccessDenied(where)
            if response.status_code == 404:
                raise NotFound(where)
            raise RemoteError(where)
        return response

    def get_json(self, resource: str, params: dict | None = None) -> Any:
        if self.dialect == "v3":
            params = {"view": "sdk", **(params or {})}
        response = self.request("GET", resource, params=params)
        try:
            body = response.json()
        except ValueError:
            raise RemoteError(f"GET {resource}: the API answered with something that is not JSON") from None
        if isinstance(body, dict) and body.get("error"):
            raise RemoteError(f"GET {resource}: {body['error']}")
        return body

    def list(self, resource: str, params: dict | None = None) -> list[dict]:
        """Every object of a collection: pages of `limit` until `total_count`; a bare list is the whole thing."""
        objects: list[dict] = []
        offset = 0
        while True:
            body = self.get_json(resource, {**(params or {}), "limit": PAGE_SIZE, "offset": offset})
            if isinstance(body, list):
                return objects + [o for o in body if isinstance(o, dict)]
            if not isinstance(body, dict) or not isinstance(body.get("objects"), list):
                raise RemoteError(f"GET {resource}: unexpected list body")
            page = [o for o in body["objects"] if isinstance(o, dict)]
            objects.extend(page)
            total = (body.get("meta") or {}).get("total_count")
            if not page or total is None or len(objects) >= int(total):
                return objects  # an empty page ends it even if total_count says more (no endless loop)
            offset += len(page)

    # -- resources ---------------------------------------------------------------------------------
    @property
    def workflows_resource(self) -> str:
        return "workflows" if self.dialect == "v1" else "pipelines"

    def whoami(self) -> dict:
        """Check the credentials and learn the user id (used in upload keys)."""
        params = {"username": self.config.username}
        if self.dialect == "v3":
            params["limit"] = 1
        body = self.get_json("users", params)
        users = body.get("objects") if isinstance(body, dict) else body
        if not users:
            raise AccessDenied(f"the API knows no user {self.config.username!r}")
        self.user = users[0]
        return self.user

    @property
    def user_id(self) -> int | None:
        return fk_id(self.user.get("id") or self.user.get("resource_uri")) if self.user else None

    def storage_configuration(self) -> dict:
        return self.get_json("users/get_configuration", {"origin": "cli"})

    def genomes(self) -> list[Genome]:
        return [Genome.parse(r) for r in self.list("genomes")]

    def workflows(self) -> list[Workflow]:
        return [Workflow.parse(r) for r in self.list(self.workflows_resource)]

    def samples(self) -> list[Sample]:
        return [Sample.parse(r, self.config.bucket) for r in self.list("samples")]

    def sample(self, sample_id: int) -> Sample:
        return Sample.parse(self.get_json(f"samples/{sample_id}"), self.config.bucket)

    def analyses(self) -> list[Analysis]:
        return [Analysis.parse(r, self.config.bucket) for r in self.list("analyses")]

    def analysis(self, analysis_id: int) -> Analysis:
        return Analysis.parse(self.get_json(f"analyses/{analysis_id}"), self.config.bucket)

    # -- writes (sample creation) ------------------------------------------------------------------
    def fk(self, resource: str, value: int) -> int | str:
        """A foreign key as the dialect wants it in a request body."""
        if self.dialect == "v1":
            return f"/{self.config.base_url.split('://', 1)[-1].split('/', 1)[-1]}{resource}/{value}"
        return value

    def create(self, resource: str, body: dict) -> int:
        """POST a new record; v1 answers 201 + Location, v3 a body with `id`."""
        response = self.request("POST", resource, body=body, slash=self.dialect == "v3")
        location = response.headers.get("Location", "")
        new_id = None
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {}
        if isinstance(payload, dict):
            if payload.get("error"):
                raise RemoteError(f"POST {resource}: {payload['error']}")
            new_id = fk_id(payload.get("id"))
        if new_id is None:
            new_id = fk_id(location)
        if new_id is None:
            raise RemoteError(f"POST {resource}: the API returned no id for the new record")
        return new_id

    def update(self, resource: str, record_id: int, body: dict) -> None:
        self.request("PUT", f"{resource}/{record_id}", body=body, slash=self.dialect == "v3")

    def delete(self, resource: str, record_id: int) -> None:
        self.request("DELETE", f"{resource}/{record_id}")


def _error_detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return _redact(response.text[:200].strip())
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("detail", ""))[:200]
        for key in ("error", "detail", "message", "msg"):
            if body.get(key):
                return str(body[key])[:200]
    return ""

