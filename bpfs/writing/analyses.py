"""Analysis requests: what a `<name>.json` written into `analyses/new/` asks for, checked, and sent.

A request names a workflow and samples by id or by exact name, with optional controls, parameter
overrides in the seed's `{"node": {node: {param: value}}}` format, projects, an instance type and
`ignore_validation_warning`. Everything that can be checked here is checked before anything is sent
(unknown keys, wrong types, unknown or ambiguous names), so a refusal never leaves half an analysis.
The request body is the mount's dialect's (basepair-api.md §9).
"""

from __future__ import annotations

import errno
import json
import logging
import time
from dataclasses import dataclass, field

from bpfs.errors import AccessDenied, BpfsError, NotFound, RemoteError
from bpfs.remote.api import ApiClient, error_detail, parse_json
from bpfs.remote.records import Analysis, fk_id
from bpfs.tree.catalog import Catalog
from bpfs.writing.jsonfile import read_object
from bpfs.writing.lost_replies import Adopter, maybe_made

log = logging.getLogger("bpfs.analyses")

KEYS = ("workflow", "samples", "controls", "params", "projects", "instance", "ignore_validation_warning")
REQUEST_LIMIT = 1 << 20  # one request file; a request with thousands of samples is still far below


class Refused(BpfsError):
    """The request cannot be sent, or the server refused it: EINVAL, with the reason for the answer file."""

    errno = errno.EINVAL


@dataclass
class Request:
    workflow: int | str
    samples: list[int | str]
    controls: list[int | str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    projects: list[int] = field(default_factory=list)
    instance: str | None = None
    ignore_validation_warning: bool = False


def parse_request(text: bytes, where: str) -> Request | None:
    """The request a file holds (None when it is empty), or Refused saying what is wrong."""
    data = read_object(text, where, KEYS, Refused,
                       shape='a request is a JSON object, e.g. {"workflow": 7, "samples": [10001]}')
    if data is None:
        return None
    if "workflow" not in data or "samples" not in data:
        raise Refused(f"{where}: 'workflow' and 'samples' are required")
    if not _ref(data["workflow"]):
        raise Refused(f"{where}: workflow must be a workflow id or its exact name")
    for key in ("samples", "controls"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(_ref(v) for v in value):
            raise Refused(f"{where}: {key} must be a list of sample ids or exact sample names")
    if not data["samples"]:
        raise Refused(f"{where}: samples must not be empty")
    params = data.get("params", {})
    if not isinstance(params, dict) or set(params) - {"node", "info"}:
        raise Refused(f"{where}: params must look like {{\"node\": {{\"<node>\": {{\"<param>\": \"<value>\"}}}}}}")
    node = params.get("node", {})
    if not isinstance(node, dict) or not all(isinstance(n, str) and isinstance(p, dict) and
                                             all(isinstance(k, str) and _scalar(v) for k, v in p.items())
                                             for n, p in node.items()):
        raise Refused(f"{where}: params.node maps node ids to {{parameter: value}} with plain values")
    if not isinstance(params.get("info", {}), dict):
        raise Refused(f"{where}: params.info must be an object")
    projects = data.get("projects", [])
    if not isinstance(projects, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in projects):
        raise Refused(f"{where}: projects must be a list of project ids")
    if data.get("instance") is not None and not isinstance(data["instance"], str):
        raise Refused(f"{where}: instance must be an instance type name, e.g. \"c5.4xlarge\"")
    if not isinstance(data.get("ignore_validation_warning", False), bool):
        raise Refused(f"{where}: ignore_validation_warning must be true or false")
    # values are sent as strings, as the official client sends them
    strings = {n: {k: v if isinstance(v, str) else json.dumps(v) for k, v in p.items()} for n, p in node.items()}
    return Request(workflow=data["workflow"], samples=list(data["samples"]),
                   controls=list(data.get("controls", [])), params={**params, **({"node": strings} if node else {})},
                   projects=projects, instance=data.get("instance"),
                   ignore_validation_warning=data.get("ignore_validation_warning", False))


def _ref(value: object) -> bool:
    """An id (a positive integer) or a name (non-empty text)."""
    return (isinstance(value, int) and not isinstance(value, bool) and value > 0) or \
        (isinstance(value, str) and bool(value.strip()))


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


class AnalysisRequests:
    """Resolves names through the cached listings and sends a request in the mount's dialect."""

    def __init__(self, api: ApiClient, catalog: Catalog) -> None:
        self.api, self.catalog = api, catalog
        self.adopter = Adopter()  # an analysis whose POST lost its answer

    def resolve(self, kind: str, value: int | str, where: str) -> int:
        """An id as given, or the one record whose name is exactly `value`."""
        if isinstance(value, int):
            return value
        records = self.catalog.workflows() if kind == "workflow" else self.catalog.samples()
        matches = [r.id for r in records if r.name == value]
        if not matches:  # perhaps created since the listing was cached
            self.catalog.refresh("workflows" if kind == "workflow" else "samples")
            records = self.catalog.workflows() if kind == "workflow" else self.catalog.samples()
            matches = [r.id for r in records if r.name == value]
        if not matches:
            raise Refused(f"{where}: no {kind} is named {value!r}")
        if len(matches) > 1:
            raise Refused(f"{where}: {len(matches)} {kind}s are named {value!r} ({', '.join(map(str, matches))}); "
                          "give the id instead")
        return matches[0]

    def start(self, request: Request, where: str) -> dict:
        """Send it; the created analysis's record. Refused (EINVAL) for a refusal or a warning, AccessDenied
        (EACCES) for refused credentials, RemoteError (EIO) when the server or the network failed."""
        workflow = self.resolve("workflow", request.workflow, where)
        samples = [self.resolve("sample", s, where) for s in request.samples]
        controls = [self.resolve("sample", s, where) for s in request.controls]
        params = json.loads(json.dumps(request.params))
        if request.instance:
            params.setdefault("info", {})["instance_type"] = request.instance  # as the v3 client copies it
        body = self.api.dialect.analysis_body(workflow, samples, controls, params, request.projects,
                                              request.instance, request.ignore_validation_warning)
        sent = time.time()
        try:
            reply, content = self.api.request("POST", "analyses", body=body, slash=self.api.dialect.write_slash)
        except (AccessDenied, NotFound, RemoteError) as exc:
            status = getattr(exc, "status", None)
            if isinstance(exc, AccessDenied):
                raise
            if isinstance(exc, NotFound) or (status is not None and 400 <= status < 500):
                raise Refused(f"{where}: the server refused the request: {_reason(exc)}") from None
            return self._made_anyway(exc, workflow, samples, controls, params, sent, where)
        payload = parse_json(content, "POST analyses") if content.strip() else {}
        if not isinstance(payload, dict):
            payload = {}
        if payload.get("warning"):
            raise Refused(f"{where}: the server warns: {error_detail(content)}; nothing was started. Add "
                          "\"ignore_validation_warning\": true to start it anyway")
        if payload.get("error"):
            raise Refused(f"{where}: the server refused the request: {error_detail(content)}")
        analysis_id = fk_id(payload.get("id")) or fk_id(reply.headers.get("Location", ""))
        if analysis_id is None:
            raise RemoteError(f"{where}: the server answered without the new analysis's id")
        self.adopter.answered(analysis_id)
        self.catalog.analyses_changed(analysis_id)
        for sample_id in samples + controls:
            self.catalog.samples_changed(sample_id)
        if "status" not in payload:  # v1 answers 201 + Location only: the record comes from its detail
            try:
                payload = self.api.get_json(f"analyses/{analysis_id}")
            except BpfsError as exc:
                log.warning("analysis %d started, but its record could not be read: %s", analysis_id, exc)
                payload = {"id": analysis_id}
        log.info("%s: started analysis %d (workflow %d, samples %s)", where, analysis_id, workflow,
                 ", ".join(map(str, samples)))
        return payload

    def _made_anyway(self, exc: RemoteError, workflow: int, samples: list[int], controls: list[int], params: dict,
                     sent: float, where: str) -> dict:
        """After a POST that got no answer: the analysis the server started all the same, or the error. Only
        one that is this request in every part the record shows (workflow, samples, controls, the node
        parameters and the info it echoes, the instance type) is taken: the same workflow on the same samples
        with other parameters, from another client a moment before, is not the user's analysis."""
        what = f"an analysis of workflow {workflow} on samples {', '.join(map(str, samples))}"

        def ours(a: Analysis) -> bool:
            shown = a.raw.get("params") if isinstance(a.raw.get("params"), dict) else {}
            info = shown.get("info") if isinstance(shown.get("info"), dict) else {}
            sent_info = params.get("info") or {}
            return a.workflow == workflow and sorted(a.samples) == sorted(samples) and \
                sorted(filter(None, map(fk_id, a.raw.get("controls") or []))) == sorted(controls) and \
                (shown.get("node") or {}) == (params.get("node") or {}) and \
                info.get("instance_type") == sent_info.get("instance_type") and \
                all(info.get(k) == v for k, v in sent_info.items())  # the server adds keys of its own

        found = self.adopter.made_anyway(self.api.analyses, ours, sent, what)
        self.catalog.analyses_changed(found.id if found else None)
        if found is None:
            raise maybe_made(exc, what, "analyses/") from None
        log.warning("%s: %s; the server had started analysis %d all the same: that is the answer", where, exc,
                    found.id)
        for sample_id in samples:
            self.catalog.samples_changed(sample_id)
        return {**found.raw, "id": found.id}

    def delete(self, analysis_id: int) -> None:
        try:
            self.api.delete("analyses", analysis_id)
        finally:  # even a failed DELETE may have gone through
            self.catalog.analyses_changed(analysis_id, deleted=True)
            self.catalog.samples_changed()
        log.info("deleted analysis %d", analysis_id)


def _reason(exc: BpfsError) -> str:
    text = str(exc)
    return text.split(": HTTP ", 1)[-1] if ": HTTP " in text else text
