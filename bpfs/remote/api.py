"""The Basepair REST client: pagination, timeouts, retries, and a server's mistakes kept in bounds.

Credentials travel in the query string (the service's only scheme), so they go to the configured
host only: a redirect elsewhere is refused, and every message passes the one redaction. Every
wait and every buffer is bounded: a reply body is read up to `MAX_BODY`, a listing stops at
pages the `total_count` could honestly need and refuses a server that repeats pages, and one
malformed record costs that record only (a log line and the `bad_records` counter).
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bpfs.errors import AccessDenied, BpfsError, NotFound, RemoteError
from bpfs.redact import redact
from bpfs.remote.config import Config
from bpfs.remote.dialects import Dialect, dialect_for
from bpfs.remote.records import Analysis, Genome, Sample, Workflow, fk_id
from bpfs.remote.watchdog import Watchdog, bounded_replies, cut
from bpfs.stats import Stats

log = logging.getLogger("bpfs.api")

PAGE_SIZE = 100  # the v3 client's page size; a Tastypie server pages 20 when no limit is sent
# A server may page fewer than asked (Tastypie caps `limit` at its max_limit) but no fewer than its default
# page: pages of one record would let a count of thousands ask for thousands of pages
MIN_SERVER_PAGE = 20
CONNECT_TIMEOUT = 5.0
# Idempotent requests are retried on refused connections and 5xx with backoff 0, 0.5, 1 s (a Retry-After
# within what is left of RETRY_WAITS), but a server that stalls is retried once only: one call costs at
# most 2 * (5 s + timeout) + 2 s.
RETRIES = 3
READ_RETRIES = 1
RETRY_WAITS = 2.0  # seconds one call may sleep between its attempts, all of them together
MAX_BODY = 64 << 20  # one reply; a page of 100 analyses is ~200 KB, a detail with 10,000 files ~5 MB
MAX_LIST_OBJECTS = 100_000  # one collection; the largest accounts hold thousands, and 100k records is ~200 MB
# One listing's replies together, all held until it ends: MAX_LIST_OBJECTS honest records fit, while a
# server sending huge records (up to MAX_BODY a page) grew the daemon to 3 GB in 42 s without it
MAX_LIST_BYTES = 256 << 20
LIST_CALLS = 4  # one listing may take the bounds of this many calls: pages that each come in time still end
MAX_REDIRECTS = 3  # same-origin redirects (a trailing slash added by the server)
T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """What bpfs keeps of an HTTP reply besides its body."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive in practice (requests' CaseInsensitiveDict)
    is_redirect: bool = False


class BrokenOff(RemoteError):
    """A reply whose body stopped before its end (the connection dropped): worth asking again once."""


IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})  # what urllib3 retries too


def _session(retry: Retry, reply_bound: float) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)  # 16: FUSE threads at once
    manager = adapter.poolmanager  # a reply's headers trickled a byte a second: bounded like its body
    manager.pool_classes_by_scheme = bounded_replies(manager.pool_classes_by_scheme, reply_bound)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "bpfs"
    return session


class BoundedRetry(Retry):
    """urllib3's Retry whose sleeps between one call's attempts total at most RETRY_WAITS. A server's
    Retry-After is honoured within that: "Retry-After: 3600" (or its HTTP-date form) on a 503 would
    otherwise hold a listing, and the FUSE call waiting on it, for an hour. One that cannot be read
    falls back to the backoff instead of failing the call."""

    waited = 0.0  # slept so far in this call; each attempt's Retry is a new() copy of the last

    def new(self, **kw: Any) -> BoundedRetry:
        retry = super().new(**kw)
        retry.waited = self.waited
        return retry

    def sleep(self, response: urllib3.BaseHTTPResponse | None = None) -> None:
        wait = self.get_backoff_time()
        if self.respect_retry_after_header and response is not None:
            try:
                asked = self.get_retry_after(response)
            except urllib3.exceptions.InvalidHeader:
                asked = None
            wait = asked if asked is not None else wait
        wait = max(0.0, min(wait, RETRY_WAITS - self.waited))
        self.waited += wait
        if wait:
            time.sleep(wait)


class ApiClient:
    def __init__(self, config: Config, stats: Stats | None = None, retries: int = RETRIES) -> None:
        self.config = config
        self.stats = stats or Stats()
        self.dialect: Dialect = dialect_for(config.dialect, config.base_url)
        reply_bound = CONNECT_TIMEOUT + config.timeout  # one attempt's wait for its reply, as its socket's timeouts
        self.session = _session(BoundedRetry(
            total=retries,
            connect=retries,
            read=min(retries, READ_RETRIES),
            status=retries,
            redirect=0,
            backoff_factor=0.25,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=IDEMPOTENT,
            raise_on_status=False,
            raise_on_redirect=False,
            respect_retry_after_header=True,
        ), reply_bound)
        self.once = _session(Retry(0, read=False, redirect=0, raise_on_redirect=False), reply_bound)  # see exchange
        self.auth = {"username": config.username, "api_key": config.api_key}
        self.user: dict | None = None
        self.watchdog = Watchdog()

    # -- transport ---------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        parts = urlsplit(self.config.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def url(self, resource: str) -> str:
        return self.config.base_url + resource.strip("/")

    def request(self, method: str, resource: str, params: dict | None = None, body: Any = None,
                slash: bool = False) -> tuple[Reply, bytes]:
        """One call: the reply and its body (at most MAX_BODY bytes). Errors become BpfsErrors."""
        url = self.url(resource) + ("/" if slash else "")
        query = {**(params or {}), **self.auth}
        started = time.monotonic()
        for _hop in range(MAX_REDIRECTS + 1):
            self.stats.add("api_requests")
            reply, content = self.exchange(method, resource, url, query, body)
            if not reply.is_redirect:
                break
            url = self._follow(method, resource, url, reply)
        else:
            self.stats.add("api_errors")
            raise RemoteError(f"{method} {resource}: more than {MAX_REDIRECTS} redirects")
        log.debug("%s %s -> %s in %.3fs", method, resource, reply.status_code, time.monotonic() - started)
        if reply.status_code >= 400:
            self.stats.add("api_errors")
            detail = error_detail(content)
            where = f"{method} {resource}: HTTP {reply.status_code}{': ' + detail if detail else ''}"
            if reply.status_code == 401:
                raise AccessDenied(f"credentials refused by {self.config.base_url} ({where})")
            if reply.status_code == 403:
                raise AccessDenied(where)
            if reply.status_code == 404:
                raise NotFound(where)
            raise RemoteError(where, status=reply.status_code)
        return reply, content

    def exchange(self, method: str, resource: str, url: str, query: dict, body: Any) -> tuple[Reply, bytes]:
        """The transport: one HTTP request, its reply and body. The only method a fake client replaces.

        A body cut off mid-reply (a dropped connection) is asked for once more when the method is
        idempotent and a whole attempt still fits in the call's bound; that second request is not retried
        by urllib3 (`self.once`), so the call stays within `bound`."""
        deadline = time.monotonic() + self.bound
        session = self.session
        while True:
            try:
                response = session.request(method, url, params=query, json=body, stream=True,
                                           allow_redirects=False, timeout=(CONNECT_TIMEOUT, self.config.timeout))
                with response:
                    content = self._read_body(method, resource, response, deadline)
            except requests.RequestException as exc:
                self.stats.add("api_errors")
                raise RemoteError(f"{method} {resource}: cannot reach the Basepair API at {self.host}: "
                                  f"{unreachable_reason(exc, self.config.timeout)}") from None
            except BrokenOff as exc:
                if session is self.once or method not in IDEMPOTENT or \
                        deadline - time.monotonic() < CONNECT_TIMEOUT + self.config.timeout:
                    raise RemoteError(str(exc)) from None
                log.debug("%s; asking again", exc)
                self.stats.add("api_requests")
                session = self.once
                continue
            return Reply(response.status_code, response.headers, response.is_redirect), content

    @property
    def bound(self) -> float:
        """The longest one call may take, as the README says: its attempts, then its reply."""
        return (READ_RETRIES + 1) * (CONNECT_TIMEOUT + self.config.timeout) + RETRY_WAITS

    def _read_body(self, method: str, resource: str, response: requests.Response, deadline: float) -> bytes:
        """The reply body, at most MAX_BODY bytes, by the deadline: a server that trickles a reply is cut off."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise RemoteError(f"{method} {resource}: the API sent {int(declared)} bytes, more than the "
                              f"{MAX_BODY >> 20} MiB bpfs accepts in one reply")
        raw = response.raw
        token = self.watchdog.arm(deadline, lambda: cut(raw))
        chunks, size = [], 0
        try:
            while True:
                try:
                    chunk = raw.read1(1 << 16, decode_content=True)  # as requests would: gzip undone
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    if time.monotonic() < deadline:
                        raise BrokenOff(f"{method} {resource}: the API's answer broke off ({exc})") from None
                    chunk = b""
                if time.monotonic() > deadline:
                    raise RemoteError(f"{method} {resource}: the API's answer took more than {self.bound:.0f} s")
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_BODY:
                    raise RemoteError(f"{method} {resource}: the API sent more than the {MAX_BODY >> 20} MiB "
                                      "bpfs accepts in one reply")
                chunks.append(chunk)
        finally:
            self.watchdog.disarm(token)
        return b"".join(chunks)

    def _follow(self, method: str, resource: str, url: str, response: Reply) -> str:
        """The next URL of a redirect on the same origin; a redirect anywhere else would carry the key there."""
        target = urljoin(url, response.headers.get("Location", ""))
        here, there = urlsplit(url), urlsplit(target)
        if (there.scheme, there.netloc) != (here.scheme, here.netloc):
            self.stats.add("api_errors")
            shown = redact(f"{there.scheme}://{there.netloc}")
            raise RemoteError(f"{method} {resource}: the API at {self.host} redirects to {shown}; bpfs sends "
                              "credentials only to the configured host and does not follow it: put the right "
                              "address in the config file")
        return target.split("?", 1)[0]  # the query (with the credentials) is sent again by us

    @property
    def list_bound(self) -> float:
        """The longest one listing may take, all its pages (and the last page's call) together."""
        return LIST_CALLS * self.bound

    def get_json(self, resource: str, params: dict | None = None) -> Any:
        return self._get_json(resource, params)[0]

    def _get_json(self, resource: str, params: dict | None = None) -> tuple[Any, int]:
        """The parsed body and its size in bytes."""
        _, content = self.request("GET", resource, params={**self.dialect.read_params(), **(params or {})})
        body = parse_json(content, f"GET {resource}")
        if isinstance(body, dict) and body.get("error"):
            raise RemoteError(f"GET {resource}: {str(body['error'])[:200]}")
        return body, len(content)

    def list(self, resource: str, params: dict | None = None) -> list[dict]:
        """Every object of a collection, in pages; a bare list is the whole collection.

        A server may page fewer than asked: its first page tells how many a page holds (20 or more), and
        without a count a `meta.next` link says another page follows (a page of 10 is then not the last).
        A broken server cannot make this loop: a page that repeats only what was seen, more pages
        than `total_count` could need at that size, more than MAX_LIST_OBJECTS objects or
        MAX_LIST_BYTES bytes, or pages beyond `list_bound` seconds stop it with an error.
        A listing answered 404 is an error too (EIO), never an empty directory.
        """
        objects: list[dict] = []
        seen: set = set()
        offset = 0
        per_page = max_pages = 0  # learnt from the first page
        received, deadline = 0, time.monotonic() + self.list_bound
        for page_number in range(1, 1 << 30):
            if page_number > 1 and time.monotonic() > deadline:
                raise RemoteError(f"GET {resource}: {page_number - 1} pages took more than {self.list_bound:.0f} s; "
                                  "listing stopped")
            try:
                body, size = self._get_json(resource, {**(params or {}), "limit": PAGE_SIZE, "offset": offset})
            except NotFound as exc:
                raise RemoteError(f"listing {resource}: {exc}") from None
            received += size
            if received > MAX_LIST_BYTES:
                raise RemoteError(f"GET {resource}: {page_number} pages sent more than the {MAX_LIST_BYTES >> 20} MiB "
                                  "bpfs accepts in one listing; listing stopped")
            if isinstance(body, list):
                return objects + [o for o in body if isinstance(o, dict)]
            if not isinstance(body, dict) or not isinstance(body.get("objects"), list):
                raise RemoteError(f"GET {resource}: unexpected list body (no 'objects' list)")
            page = [o for o in body["objects"] if isinstance(o, dict)]
            total = _count(body.get("meta"))
            if total is not None and total > MAX_LIST_OBJECTS:
                raise RemoteError(f"GET {resource}: the API claims {total} records; bpfs lists at most "
                                  f"{MAX_LIST_OBJECTS}")
            if not per_page:  # the pages the count honestly needs, plus one; without a count, the global cap
                per_page = len(page) if min(MIN_SERVER_PAGE, PAGE_SIZE) <= len(page) <= PAGE_SIZE else PAGE_SIZE
                max_pages = math.ceil((total if total is not None else MAX_LIST_OBJECTS) / per_page) + 1
            fresh = []
            for obj in page:
                ident = _identity(obj)
                if ident not in seen:
                    seen.add(ident)
                    fresh.append(obj)
            if page and not fresh:
                raise RemoteError(f"GET {resource}: the API repeats records already listed at offset {offset} "
                                  "(it ignores offset?); listing stopped")
            if not page and offset == 0 and total:
                raise RemoteError(f"GET {resource}: the API announces {total} records but sends none")
            objects.extend(fresh)
            if len(objects) > MAX_LIST_OBJECTS:
                raise RemoteError(f"GET {resource}: more than {MAX_LIST_OBJECTS} records; listing stopped")
            if not page:
                if total is not None and len(objects) < total:
                    log.warning("GET %s: %d of the %d records announced (some were deleted while paging?)",
                                resource, len(objects), total)
                return objects
            more = _next(body.get("meta"))  # Tastypie's meta.next: a link while pages follow
            if total is None and len(page) < per_page and not more:
                return objects  # no usable count: a short page is the last one, unless the server links on
            if total is not None and len(objects) >= total:
                if more:
                    log.warning("GET %s: the API counts %d records but links to a next page; listed %d",
                                resource, total, len(objects))
                return objects
            if page_number >= max_pages:
                raise RemoteError(f"GET {resource}: {page_number} pages did not deliver the {total} records the "
                                  "API announced; listing stopped")
            offset += min(len(page), PAGE_SIZE)  # a server may page fewer than asked, never more
        raise AssertionError("unreachable")

    def parsed(self, kind: str, raws: list[dict], parse: Callable[[dict], T]) -> list[T]:
        """Records parsed one by one: a malformed one is skipped with a log line, never its neighbours."""
        out: list[T] = []
        ids: set[int] = set()
        for raw in raws:
            try:
                record = parse(raw)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                self.stats.add("bad_records")
                log.warning("skipped a malformed %s record (id %s): %s", kind, redact(repr(raw.get("id")))[:40],
                            redact(str(exc))[:200])
                continue
            _log_problems(self.stats, kind, record)
            if record.id in ids:  # type: ignore[attr-defined]
                self.stats.add("bad_records")
                log.warning("skipped a second %s record with id %s", kind, record.id)  # type: ignore[attr-defined]
                continue
            ids.add(record.id)  # type: ignore[attr-defined]
            out.append(record)
        return out

    # -- resources ---------------------------------------------------------------------------------
    def whoami(self) -> dict:
        """Check the credentials and learn the user id (used in upload keys)."""
        body = self.get_json("users", self.dialect.whoami_params(self.config.username))
        users = body.get("objects") if isinstance(body, dict) else body
        if not users or not isinstance(users, list) or not isinstance(users[0], dict):
            raise AccessDenied(f"the API knows no user {self.config.username!r}")
        self.user = users[0]
        return self.user

    @property
    def user_id(self) -> int | None:
        return fk_id(self.user.get("id") or self.user.get("resource_uri")) if self.user else None

    def storage_configuration(self) -> dict:
        body = self.get_json("users/get_configuration", {"origin": "cli"})
        if not isinstance(body, dict):
            raise RemoteError("GET users/get_configuration: expected a JSON object")
        return body

    def genomes(self) -> list[Genome]:
        return self.parsed("genome", self.list("genomes"), Genome.parse)

    def workflows(self) -> list[Workflow]:
        return self.parsed("workflow", self.list(self.dialect.workflows), Workflow.parse)

    def samples(self) -> list[Sample]:
        return self.parsed("sample", self.list("samples"), lambda r: Sample.parse(r, self.config.bucket))

    def sample(self, sample_id: int) -> Sample:
        return self._detail("sample", f"samples/{sample_id}", sample_id, lambda r: Sample.parse(r, self.config.bucket))

    def analyses(self) -> list[Analysis]:
        return self.parsed("analysis", self.list("analyses"), lambda r: Analysis.parse(r, self.config.bucket))

    def analysis(self, analysis_id: int) -> Analysis:
        record = self._detail("analysis", f"analyses/{analysis_id}", analysis_id,
                              lambda r: Analysis.parse(r, self.config.bucket))
        if record.files is None:  # an analysis without files answers []: a detail without the list is broken
            self.stats.add("bad_records")
            raise RemoteError(f"GET analyses/{analysis_id}: the API's detail has no file list")
        return record

    def _detail(self, kind: str, resource: str, record_id: int, parse: Callable[[dict], T]) -> T:
        """The detail of one record, which must be that record: another id in its place is an error for
        this one (EIO), never shown under its name."""
        body = self.get_json(resource)
        if not isinstance(body, dict):
            raise RemoteError(f"GET {resource}: expected a JSON object")
        try:
            record = parse(body)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            self.stats.add("bad_records")
            raise RemoteError(f"GET {resource}: malformed {kind} record: {str(exc)[:200]}") from None
        if record.id != record_id:  # type: ignore[attr-defined]
            self.stats.add("bad_records")
            raise RemoteError(f"GET {resource}: asked for {kind} {record_id}, the API answered with {kind} "
                              f"{record.id}; not used")  # type: ignore[attr-defined]
        _log_problems(self.stats, kind, record)
        return record

    # -- writes ------------------------------------------------------------------------------------
    def fk(self, resource: str, value: int) -> int | str:
        return self.dialect.fk(resource, value)

    def create(self, resource: str, body: dict) -> int:
        """POST a new record; v1 answers 201 + Location, v3 a body with `id`."""
        return fk_id(self.create_record(resource, body).get("id")) or 0

    def create_record(self, resource: str, body: dict) -> dict:
        """POST a new record; the server's record (at least its `id`)."""
        response, content = self.request("POST", resource, body=body, slash=self.dialect.write_slash)
        try:
            payload = json.loads(content) if content.strip() else {}
        except (ValueError, RecursionError):
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        if payload.get("error"):
            raise RemoteError(f"POST {resource}: {str(payload['error'])[:200]}")
        new_id = fk_id(payload.get("id")) or fk_id(response.headers.get("Location", ""))
        if new_id is None:
            raise RemoteError(f"POST {resource}: the API returned no id for the new record")
        return {**payload, "id": new_id}

    def update(self, resource: str, record_id: int, body: dict) -> None:
        self.request("PUT", f"{resource}/{record_id}", body=body, slash=self.dialect.write_slash)

    def delete(self, resource: str, record_id: int) -> None:
        self.request("DELETE", f"{resource}/{record_id}")


def _log_problems(stats: Stats, kind: str, record: object) -> None:
    """One line per record whose nested items (files, uploads) were partly malformed."""
    problems = getattr(record, "problems", ())
    if problems:
        stats.add("bad_records", len(problems))
        log.warning("%s %s: skipped %d malformed item(s): %s", kind, getattr(record, "id", "?"), len(problems),
                    redact("; ".join(problems))[:300])


def _number(text: str) -> int | str:
    """An integer in a reply; one too long for Python to read (over 4300 digits) stays text, so it costs only
    the field it is in (a record with it as its id is skipped), not the whole reply."""
    try:
        return int(text)
    except ValueError:
        return text


def parse_json(content: bytes, where: str) -> Any:
    """A reply's JSON. Decoded as json.loads would (UTF-8, -16 or -32), except that a byte which is not
    in that encoding becomes U+FFFD: one bad byte in one record's name costs a character, not the reply."""
    text = content.decode(json.detect_encoding(content), errors="replace")
    try:
        parsed = json.loads(text, parse_int=_number)
    except RecursionError:
        raise RemoteError(f"{where}: the API answered JSON nested too deeply") from None
    except ValueError:
        raise RemoteError(f"{where}: the API answered with something that is not JSON") from None
    if _SURROGATE_ESCAPE.search(text):
        parsed = _whole_characters(parsed)
    return parsed


# A JSON escape of a UTF-16 surrogate: in a pair it decodes to one character, alone (a cut-off emoji)
# it decodes to a lone surrogate, which no UTF-8 name, TSV or JSON file can hold
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _whole_characters(value: Any) -> Any:
    """`value` with each lone surrogate replaced by U+FFFD, so that one bad record costs a character."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_whole_characters(v) for v in value]
    if isinstance(value, dict):
        return {_whole_characters(k): _whole_characters(v) for k, v in value.items()}
    return value


def _count(meta: object) -> int | None:
    total = meta.get("total_count") if isinstance(meta, dict) else None
    if isinstance(total, bool) or not isinstance(total, int | str):
        return None
    try:
        value = int(total)
    except ValueError:
        return None
    return value if value >= 0 else None


def _next(meta: object) -> bool:
    """Whether the server links to another page (meta.next). Only a link counts: a null one ends nothing that
    a full page would go on from (a server may send null always)."""
    return isinstance(meta, dict) and isinstance(meta.get("next"), str) and bool(meta["next"].strip())


def _identity(obj: dict) -> object:
    """What makes a listed record the same as one seen before: its id, else its whole content."""
    ident = obj.get("id", obj.get("resource_uri"))
    if isinstance(ident, int | str) and not isinstance(ident, bool):
        return ("id", ident)
    return ("body", json.dumps(obj, sort_keys=True, default=str)[:4096])


def unreachable_reason(exc: BaseException, read_timeout: float) -> str:
    """Why a request never got an answer, in words a user can act on."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 12:
        chain.append(seen)
        nxt = getattr(seen, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = seen.__cause__ or seen.__context__
        if nxt is None and seen.args and isinstance(seen.args[0], BaseException):
            nxt = seen.args[0]
        seen = nxt
    text = " ".join(str(e) for e in chain)
    if isinstance(exc, requests.exceptions.SSLError) or "SSL" in text or "CERTIFICATE" in text.upper():
        return f"TLS failed ({redact(str(chain[-1]))[:160]})"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connection timed out after {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, requests.exceptions.ReadTimeout) or "Read timed out" in text:
        return f"no answer within {read_timeout:g} s (timed out)"
    if any(isinstance(e, socket.gaierror) for e in chain) or "Name or service not known" in text \
            or "Temporary failure in name resolution" in text or "NameResolution" in text:
        return "the host name could not be resolved (DNS)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
        return "connection refused (is the host and port right, is the server up?)"
    if any(isinstance(e, TimeoutError | socket.timeout) for e in chain) or "timed out" in text:
        return "timed out"
    if any(isinstance(e, ConnectionResetError) for e in chain) or "reset" in text.lower():
        return "the connection was reset"
    return redact(f"{type(chain[-1]).__name__}: {chain[-1]}")[:200]


def error_detail(content: bytes) -> str:
    """The server's own words from an error body (the v3 client's conventions, §4.3), on one line: they
    end up inside log lines and `bpfs status`, where a newline would start a line the server wrote."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return _one_line(content[:200].decode(errors="replace"))
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return _one_line(str(errors[0].get("detail", "")))[:300]
        for key in ("error", "detail", "message", "msg", "warning"):
            if body.get(key):
                return _one_line(_words(body[key]))[:300]
    return ""


def _one_line(text: str) -> str:
    return redact(" ".join(text.split()))


def _words(value: object) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_words(v)}" for k, v in value.items() if v)
    if isinstance(value, list):
        return "; ".join(_words(v) for v in value)
    return str(value)


__all__ = ["ApiClient", "BpfsError", "MAX_BODY", "PAGE_SIZE", "RETRIES", "error_detail", "parse_json"]
