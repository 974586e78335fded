"""The emulator's Basepair REST server: both dialects (v1 and v3) over one `AccountState`.

Why it exists: bpfs must work against the real service, which we cannot call from tests, and
against both official client dialects (docs/basepair-api.md §3-§4, §12). This server follows
the minimal emulator contract of §12 so the filesystem, the demo and the tests exercise the same
wire formats a real account produces: Tastypie list envelopes (or v1 bare lists on request),
URIs versus bare ids as foreign keys, naive versus `Z` timestamps, 201 + `Location` on create,
204 versus 200 on update, trailing slashes accepted everywhere, auth in the query string.

It is a stdlib `ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive, bound to 127.0.0.1 only,
silent on stderr, with request counters and a request log (secrets removed) that tests use to
assert how many calls the filesystem made, and a `Faults` hook to inject delays, error statuses
and truncated responses.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from bpfs.emulator.account import AccountState, BadRequest, NotFound, RecordError
from bpfs.emulator.faults import Fault, Faults, SlowHeaders

log = logging.getLogger(__name__)

SECRET_PARAMS = frozenset({"api_key", "key", "secret", "aws_secret"})
DEFAULT_LIMIT = 20  # Tastypie's default page size when `limit` is absent
DIALECTS = ("v1", "v3")
# resource name in the URL -> table; `workflows` (v1) and `pipelines` (v3) are one table
RESOURCES = {
    "users": "users",
    "genomes": "genomes",
    "workflows": "workflows",
    "pipelines": "workflows",
    "samples": "samples",
    "uploads": "uploads",
    "analyses": "analyses",
    "files": "files",
}
BARE_LIST_TABLES = frozenset({"genomes", "workflows", "samples", "analyses"})


class HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def fmt_time(value: datetime | None, dialect: str) -> str | None:
    """v1: naive `%Y-%m-%dT%H:%M:%S.%f` (microseconds always); v3: the same with a `Z`."""
    if value is None:
        return None
    text = value.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text + "Z" if dialect == "v3" else text


class Renderer:
    """Turns neutral records into one dialect's JSON objects. Call with `state.lock` held."""

    def __init__(self, state: AccountState, dialect: str) -> None:
        self.state = state
        self.dialect = dialect
        self.v1 = dialect == "v1"

    def uri(self, resource: str, record_id: int | None) -> str | int | None:
        """A foreign key: `/api/v1/<R>/<id>` (never a trailing slash) in v1, the bare id in v3."""
        if record_id is None:
            return None
        return f"/api/v1/{resource}/{record_id}" if self.v1 else record_id

    def t(self, value: datetime | None) -> str | None:
        return fmt_time(value, self.dialect)

    def _finish(self, obj: dict[str, Any], resource: str) -> dict[str, Any]:
        if self.v1:
            obj["resource_uri"] = f"/api/v1/{resource}/{obj['id']}"
        return obj

    def user(self, rec: dict[str, Any]) -> dict[str, Any]:
        obj = {k: rec[k] for k in ("id", "username", "email", "first_name", "last_name")}
        obj["date_joined"] = self.t(rec["date_joined"])
        return self._finish(obj, "users")

    def genome(self, rec: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": rec["id"], "name": rec["name"]}
        obj["date_created" if self.v1 else "created_on"] = self.t(rec["date_created"])
        return self._finish(obj, "genomes")

    def workflow(self, rec: dict[str, Any]) -> dict[str, Any]:
        obj = {
            "id": rec["id"],
            "name": rec["name"],
            "datatype": rec["datatype"],
            "description": rec["description"],
            "tags": list(rec["tags"]),
            "visibility": rec.get("visibility", "public"),
            "date_created": self.t(rec["date_created"]),
        }
        return self._finish(obj, "workflows")

    def upload(self, rec: dict[str, Any]) -> dict[str, Any]:
        obj = {
            "id": rec["id"],
            "sample": self.uri("samples", rec["sample"]),
            "key": rec["key"],
            "uri": rec["uri"],
            "filesize": rec["filesize"],
            "order": rec["order"],
            "is_paired_end": rec["is_paired_end"],
            "status": rec["status"],
            "source": rec["source"],
            "timetaken": rec["timetaken"],
            "seq_length": rec["seq_length"],
            "date_created": self.t(rec["date_created"]),
            "last_updated": self.t(rec["last_updated"]),
        }
        return self._finish(obj, "uploads")

    def sample(self, rec: dict[str, Any]) -> dict[str, Any]:
        state = self.state
        genome = state.genomes.get(rec["genome"]) if rec["genome"] is not None else None
        obj: dict[str, Any] = {
            "id": rec["id"],
            "name": rec["name"],
            "slug": rec["slug"],
            "datatype": rec["datatype"],
        }
        if self.v1:
            obj["genome"] = genome["name"] if genome else None
        else:
            obj["genome"] = rec["genome"]
            obj["genome_name"] = genome["name"] if genome else None
        obj.update(
            {
                "platform": rec["platform"],
                "owner": self.uri("users", rec["owner"]),
                "default_workflow": self.uri("workflows", rec["default_workflow"]),
                "date_created": self.t(rec["date_created"]),
                "last_updated": self.t(rec["last_updated"]),
                "meta": copy.deepcopy(rec["meta"]),
                "info": copy.deepcopy(rec["info"]),
                "projects": list(rec["projects"]),
                "analyses": [self.uri("analyses", a) for a in state.sample_analysis_ids(rec["id"])],
                "uploads": [self.upload(state.uploads[u]) for u in state.sample_upload_ids(rec["id"])],
            }
        )
        return self._finish(obj, "samples")

    def file(self, rec: dict[str, Any]) -> dict[str, Any]:
        obj = {
            "id": rec["id"],
            "analysis": self.uri("analyses", rec["analysis"]),
            "path": rec["path"],
            "tags": list(rec["tags"]) if rec["tags"] is not None else None,
            "filesize": rec["filesize"],
            "source": rec["source"],
            "node": rec["node"],
            "date_created": self.t(rec["date_created"]),
            "last_updated": self.t(rec["last_updated"]),
        }
        return self._finish(obj, "files")

    def _sample_ref(self, sample_id: int) -> Any:
        if self.v1:
            return self.uri("samples", sample_id)
        sample = self.state.samples.get(sample_id)
        return {"id": sample_id, "name": sample["name"] if sample else None}

    def analysis(self, rec: dict[str, Any], with_files: bool) -> dict[str, Any]:
        params = copy.deepcopy(rec["params"])
        info = params.get("info")
        if self.v1 and isinstance(info, dict) and "genome_id" in info:
            genome = self.state.genomes.get(info.pop("genome_id"))
            info["genome"] = genome["name"] if genome else None
        obj = {
            "id": rec["id"],
            "name": rec["name"],
            "status": rec["status"],
            "workflow": self.uri("workflows", rec["workflow"]),
            "samples": [self._sample_ref(s) for s in rec["samples"]],
            "controls": [self._sample_ref(s) for s in rec["controls"]],
            "owner": self.uri("users", rec["owner"]),
            "tags": list(rec["tags"]),
            "params": params,
            "date_created": self.t(rec["date_created"]),
            "started_on": self.t(rec["started_on"]),
            "completed_on": self.t(rec["completed_on"]),
            "last_updated": self.t(rec["last_updated"]),
            "meta": {"num_files": len(rec["file_ids"])},
        }
        if with_files:
            obj["files"] = [self.file(self.state.files[f]) for f in rec["file_ids"]]
        return self._finish(obj, "analyses")

    def render(self, table: str, rec: dict[str, Any], detail: bool) -> dict[str, Any]:
        if table == "analyses":
            return self.analysis(rec, with_files=detail)
        return getattr(self, {"users": "user", "genomes": "genome", "workflows": "workflow", "samples": "sample",
                              "uploads": "upload", "files": "file"}[table])(rec)


def parse_fk(value: Any, what: str) -> int | None:
    """An id from any FK spelling a client sends: 42, "42", "/api/v1/samples/42", "https://h/api/v1/samples/42/"."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{what}: unexpected value {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and "id" in value:
        return parse_fk(value["id"], what)
    if isinstance(value, str):
        tail = urlsplit(value).path.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value
        if tail.strip().isdigit():
            return int(tail)
    raise BadRequest(f"{what}: unexpected value {value!r}.")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for idle keep-alive connections
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: ApiServer) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[no-untyped-def]
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        log.debug("connection error from %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ApiServer:
    """The REST server over `state`; `start()` serves from a daemon thread on 127.0.0.1."""

    def __init__(
        self,
        state: AccountState,
        s3_url: str,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        v1_bare_lists: bool = False,
    ) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the emulator binds 127.0.0.1 only")
        self.state = state
        self.s3_url = s3_url.rstrip("/")
        self.faults = faults
        self.host = "127.0.0.1"
        self.port = port
        self.v1_bare_lists = v1_bare_lists
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self.requests_log: list[tuple[str, str, str]] = []
        # how an analysis started through the API moves: seconds queued, then seconds running while its
        # files appear one by one; then it is completed
        self.analysis_pace = (1.0, 4.0)
        # A hostile or broken server, for tests: each transform may rewrite a reply before it is sent,
        # `transform(method, path, params, status, payload) -> payload` (malformed records, broken paging);
        # one that returns bytes sends them as the body (what no JSON encoder writes, such as invalid UTF-8).
        self.transforms: list = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ApiServer:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"bp-api-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # ------------------------------------------------------------------ stats

    @property
    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._stats.clear()
            self.requests_log.clear()

    def _count(self, method: str, resource: str, path: str, query: str) -> None:
        safe = urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in SECRET_PARAMS])
        with self._stats_lock:
            self._stats["requests"] += 1
            if resource:
                self._stats[f"{method} {resource}"] += 1
            self.requests_log.append((method, path, safe))

    # ------------------------------------------------------------------ dispatch

    def respond(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any, dict[str, str], int | None]:
        """One request as the network sees it: counted, faults applied, answered, transformed. Returns
        (status, JSON-able payload or None, headers, drop_after). The HTTP handler and the tests'
        in-process client (no socket) both go through here."""
        parts = [p for p in path.split("/") if p]
        resource = ""
        if len(parts) >= 3 and parts[0] == "api":
            resource = parts[2]
            if len(parts) >= 4 and not parts[3].isdigit():
                resource = f"{parts[2]}/{parts[3]}"
        self._count(method, resource, path, query)
        self.state.advance_analyses(*self.analysis_pace)
        fault: Fault | None = self.faults.take(method, path, query) if self.faults is not None else None
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            detail = fault.code or f"Injected fault: HTTP {fault.status}."
            return fault.status, {"errors": [{"detail": detail}]}, dict(fault.headers or {}), fault.drop_after
        try:
            status, payload, headers = self.handle("GET" if method == "HEAD" else method, path, query, body)
        except HttpError as exc:
            status, payload, headers = exc.status, {"errors": [{"detail": exc.detail}]}, {}
        except RecordError as exc:
            status, payload, headers = exc.status, {"errors": [{"detail": exc.detail}]}, {}
        except Exception as exc:  # noqa: BLE001 - a bug must answer 500, not kill the connection
            log.exception("emulator API error on %s %s", method, path)
            status, payload, headers = 500, {"errors": [{"detail": f"Internal error: {exc}"}]}, {}
        if self.transforms:
            params = dict(parse_qsl(query, keep_blank_values=True))
            for transform in list(self.transforms):
                payload = transform(method, path, params, status, payload)
        if fault is not None and fault.trickle:
            headers = {**headers, "X-Emulator-Trickle": str(fault.trickle)}
        if fault is not None and fault.trickle_headers:
            headers = {**headers, "X-Emulator-Trickle-Headers": str(fault.trickle_headers)}
        return status, payload, headers, fault.drop_after if fault is not None else None

    def handle(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        """Answer one request: (status, JSON-able body or None, extra headers). Raises HttpError."""
        params: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(key, value)  # repeated params: the first wins
        parts = [p for p in path.split("/") if p]
        if len(parts) < 3 or parts[0] != "api" or parts[1] not in DIALECTS:
            raise HttpError(404, f"No such endpoint: {path}")
        dialect, name, rest = parts[1], parts[2], parts[3:]
        if params.get("username") != self.state.username or not hmac.compare_digest(
            params.get("api_key", "").encode(), self.state.api_key.encode()
        ):
            raise HttpError(401, "Authentication failed: missing or invalid username/api_key.")
        table = RESOURCES.get(name)
        if table is None:
            raise HttpError(404, f"Unknown resource: {name}")
        if len(rest) > 1:
            raise HttpError(404, f"No such endpoint: {path}")
        data = self._json_body(body) if method in ("POST", "PUT") else None
        renderer = Renderer(self.state, dialect)

        if rest and not rest[0].isdigit():  # action endpoints
            action = rest[0]
            if table == "users" and action == "get_configuration" and method == "GET":
                return 200, self._configuration(), {}
            if table == "samples" and action == "sign" and method == "POST":
                return 200, self._sign(data), {}
            raise HttpError(404, f"No such endpoint: {path}")

        if not rest:  # collection
            if method == "GET":
                return 200, self._list(renderer, table, name, params), {}
            if method == "POST":
                return self._create(renderer, dialect, table, data)
            raise HttpError(405, f"Method {method} not allowed on {name}.")

        record_id = int(rest[0])
        if method == "GET":
            with self.state.lock:
                rec = self.state.table(table).get(record_id)
                if rec is None or (table == "users" and record_id != self.state.user_id):
                    raise HttpError(404, f"{name} with id {record_id} not found.")
                return 200, renderer.render(table, rec, detail=True), {}
        if method == "PUT":
            return self._update(renderer, dialect, table, record_id, data)
        if method == "DELETE":
            if table == "samples":
                self.state.delete_sample(record_id)
            elif table == "uploads":
                self.state.delete_upload(record_id)
            elif table == "analyses":
                self.state.delete_analysis(record_id)
            else:
                raise HttpError(405, f"Method DELETE not allowed on {name}.")
            return 204, None, {}
        raise HttpError(405, f"Method {method} not allowed on {name}.")

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise HttpError(400, f"Malformed JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise HttpError(400, "The JSON body must be an object.")
        return data

    def _list(self, renderer: Renderer, table: str, name: str, params: dict[str, str]) -> Any:
        state = self.state
        bare = self.v1_bare_lists and renderer.v1 and table in BARE_LIST_TABLES
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
            offset = int(params.get("offset", 0))
        except ValueError:
            raise HttpError(400, "limit and offset must be integers.") from None
        if limit < 0 or offset < 0:
            raise HttpError(400, "limit and offset must not be negative.")
        with state.lock:
            records = self._filtered(table, params)
            total = len(records)
            if bare:
                page = records
            else:
                page = records[offset:] if limit == 0 else records[offset : offset + limit]
            objects = [renderer.render(table, rec, detail=False) for rec in page]
        if bare:
            return objects
        base = f"/api/{renderer.dialect}/{name}"
        extra = [(k, v) for k, v in params.items() if k not in SECRET_PARAMS and k not in ("limit", "offset")]

        def link(off: int) -> str:
            return f"{base}?{urlencode(extra + [('limit', limit), ('offset', off)])}"

        more = limit != 0 and offset + limit < total
        meta = {
            "limit": limit,
            "offset": offset,
            "total_count": total,
            "next": link(offset + limit) if more else None,
            "previous": link(max(offset - limit, 0)) if limit != 0 and offset > 0 else None,
        }
        return {"meta": meta, "objects": objects}

    def _filtered(self, table: str, params: dict[str, str]) -> list[dict[str, Any]]:
        state = self.state
        rows = state.table(table)
        if table == "users":
            records = [rows[state.user_id]] if state.user_id in rows else []
            if "username" in params:
                records = [r for r in records if r["username"] == params["username"]]
            return records
        records = [rows[k] for k in sorted(rows)]
        if table == "samples" and "name" in params:
            records = [r for r in records if r["name"] == params["name"]]
        elif table == "uploads":
            if "uri" in params:
                records = [r for r in records if r["uri"] == params["uri"] or r["key"] == params["uri"]]
            if "sample" in params:
                try:
                    sample_id = parse_fk(params["sample"], "sample")
                except BadRequest as exc:
                    raise HttpError(400, exc.detail) from None
                records = [r for r in records if r["sample"] == sample_id]
        elif table == "files" and "analysis" in params:
            try:
                analysis_id = parse_fk(params["analysis"], "analysis")
            except BadRequest as exc:
                raise HttpError(400, exc.detail) from None
            records = [r for r in records if r["analysis"] == analysis_id]
        return records

    def _resolve_genome(self, value: Any) -> int | None:
        """v3 sends the genome id, v1 the genome name; URIs are accepted too."""
        if value is None or value == "":
            return None
        if isinstance(value, str) and not value.strip().isdigit() and "/" not in value:
            genome = self.state.genome_by_name(value)
            if genome is None:
                raise BadRequest(f"genome: unknown genome {value!r}.")
            return genome["id"]
        return parse_fk(value, "genome")

    def _neutral(self, table: str, data: dict[str, Any]) -> dict[str, Any]:
        fields = dict(data)
        if table == "samples":
            if "genome" in fields:
                fields["genome"] = self._resolve_genome(fields["genome"])
            if "default_workflow" in fields:
                fields["default_workflow"] = parse_fk(fields["default_workflow"], "default_workflow")
            if "projects" in fields and fields["projects"] is None:
                fields["projects"] = []
        elif table == "uploads" and "sample" in fields:
            fields["sample"] = parse_fk(fields["sample"], "sample")
        elif table == "analyses":
            fields["workflow"] = parse_fk(fields.get("workflow"), "workflow")
            for key in ("samples", "controls"):
                if isinstance(fields.get(key), list):
                    fields[key] = [parse_fk(v, key) for v in fields[key]]
        return fields

    def _location(self, dialect: str, name: str, record_id: int) -> str:
        return f"{self.url}api/{dialect}/{name}/{record_id}"

    def _create(self, renderer: Renderer, dialect: str, table: str, data: dict[str, Any] | None) -> Any:
        if table not in ("samples", "uploads", "analyses"):
            raise HttpError(405, f"Creating {table} is not supported by the emulator.")
        fields = self._neutral(table, data or {})
        with self.state.lock:
            if table == "analyses":
                rec = self.state.create_analysis(fields)
                if "warning" in rec:
                    return 200, rec, {}  # nothing created: the client must confirm
            elif table == "samples":
                rec = self.state.create_sample(fields)
            else:
                rec = self.state.create_upload(fields)
            obj = renderer.render(table, rec, detail=True)
        return 201, obj, {"Location": self._location(dialect, table, rec["id"])}

    def _update(self, renderer: Renderer, dialect: str, table: str, record_id: int, data: dict[str, Any] | None) -> Any:
        if table not in ("samples", "uploads"):
            raise HttpError(405, f"Updating {table} is not supported by the emulator.")
        fields = self._neutral(table, data or {})
        with self.state.lock:
            if table == "samples":
                rec = self.state.update_sample(record_id, fields)
            else:
                rec = self.state.update_upload(record_id, fields)
            obj = renderer.render(table, rec, detail=True)
        if renderer.v1:
            return 204, None, {}
        return 200, obj, {}

    def _configuration(self) -> dict[str, Any]:
        state = self.state
        return {
            "storage": {
                "user": {
                    "settings": {"bucket": state.bucket, "region": state.region, "endpoint_url": self.s3_url},
                    "credentials": {"id": state.s3_key_id, "secret": state.s3_secret},
                }
            }
        }

    def _sign(self, data: dict[str, Any] | None) -> dict[str, Any]:
        """Presigned-looking GET URLs for a sample's raw files (the emulator's S3 does not check them)."""
        sample_id = parse_fk((data or {}).get("sample_id"), "sample_id")
        if sample_id is None:
            raise BadRequest("sample_id: this field is required.")
        state = self.state
        with state.lock:
            if sample_id not in state.samples:
                raise NotFound(f"Sample with id {sample_id} not found.")
            keys = [state.uploads[u]["key"] for u in state.sample_upload_ids(sample_id)]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        urls = []
        for key in keys:
            if not key or "://" in key:
                continue
            signature = hashlib.sha256(f"{state.s3_secret}|{state.bucket}|{key}|{stamp}".encode()).hexdigest()
            query = urlencode(
                {
                    "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                    "X-Amz-Credential": f"{state.s3_key_id}/{stamp[:8]}/{state.region}/s3/aws4_request",
                    "X-Amz-Date": stamp,
                    "X-Amz-Expires": "604800",
                    "X-Amz-SignedHeaders": "host",
                    "X-Amz-Signature": signature,
                }
            )
            urls.append(f"{self.s3_url}/{state.bucket}/{quote(key, safe='/~')}?{query}")
        return {"signed_urls": urls}


class _Handler(SlowHeaders, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BasepairEmulator/1.0"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this long
    # TCP_NODELAY: headers and body are two writes; with Nagle on, the body waits for the client's delayed
    # ACK of the headers (40 ms on Linux) on every keep-alive request
    disable_nagle_algorithm = True

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve("PATCH")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, method: str) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        path, query = split.path, split.query
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(400, {"errors": [{"detail": "Unreadable request body."}]}, {}, method)
            return
        status, payload, headers, drop_after = api.respond(method, path, query, body)
        self._send(status, payload, headers, method, drop_after)

    def _send(
        self, status: int, payload: Any, headers: dict[str, str], method: str, drop_after: int | None = None
    ) -> None:
        # bytes are sent as they are: a test's transform can answer a body no JSON encoder would write
        data = payload if isinstance(payload, bytes) else b"" if payload is None or status == 204 else \
            json.dumps(payload).encode()
        slow = headers.get("X-Emulator-Trickle-Headers")
        self.slow_headers = float(slow) if slow else None
        self.send_response(status)
        if data or status != 204:
            self.send_header("Content-Type", "application/json")
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        if drop_after is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if method == "HEAD":
            return
        if drop_after is not None:
            self.wfile.write(data[:drop_after])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        trickle = headers.get("X-Emulator-Trickle")
        if data and trickle:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(float(trickle))
            return
        if data:
            self.wfile.write(data)
