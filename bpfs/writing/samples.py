"""The Basepair records behind the drop box: which sample and upload a file makes, and how to ask for them.

Naming: a file dropped on its own makes a sample named after it (`sample_name`); rsync's temporary
`.NAME.XXXXXX` is uploaded under NAME (`upload_name`); in a sample directory a `_R2`-style name is
read 2 (`is_read2`). Settings come from the mount options (`-o genome=,datatype=,...`) overridden by
the draft's `sample.json`, validated here so a bad one is refused with a clear message at close().
`SampleRecords` builds the request bodies in the mount's API dialect (v1 or v3, basepair-api.md §8)
and sends them through `ApiClient`.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from dataclasses import dataclass

from bpfs.errors import BpfsError, NotFound, RemoteError
from bpfs.remote.api import ApiClient
from bpfs.remote.records import Genome, Sample, fk_id
from bpfs.tree.catalog import Catalog
from bpfs.writing.jsonfile import read_object
from bpfs.writing.lost_replies import Adopter, maybe_made, unanswered

log = logging.getLogger("bpfs.writer")  # the drop box's one log: its lines tell one story

META_NAME = "sample.json"
META_KEYS = ("genome", "datatype", "platform", "default_workflow", "info", "projects")
READ2 = re.compile(r"(?:_R2|_2|\.R2|_R2_001)\.(?:fastq|fq)(?:\.gz|\.bz2)?$", re.IGNORECASE)
RSYNC_TEMP = re.compile(r"^\.(.+)\.[A-Za-z0-9]{6}$")  # rsync writes .NAME.XXXXXX, then renames it to NAME


def sample_name(filename: str) -> str:
    """The sample a single file makes: `.gz`/`.bz2` dropped, then `.fastq`/`.fq`."""
    name = re.sub(r"\.(gz|bz2)$", "", filename, flags=re.IGNORECASE)
    name = re.sub(r"\.(fastq|fq)$", "", name, flags=re.IGNORECASE)
    return name or filename


# what a name cannot hold: C0 controls and DEL, and the lone surrogates that stand for bytes not UTF-8
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def check_name(path: str, name: str) -> None:
    """EINVAL before anything is created for a name Basepair cannot hold as text or that names nothing: not
    UTF-8, control characters, blank, "." or ".." (a sample's, or a file's: rsync's `....XXXXXX` is `..`)."""
    if _BAD_NAME.search(name) or not name.strip() or name in (".", ".."):
        raise logged_error(f"{path}: refused: a sample or file name must be UTF-8 text without control "
                           "characters, and not blank, '.' or '..'", errno.EINVAL)


def upload_name(filename: str) -> str:
    """The basename a file is uploaded under: an rsync temporary file goes straight to its final name."""
    match = RSYNC_TEMP.match(filename)
    return match.group(1) if match else filename


def is_read2(filename: str) -> bool:
    return READ2.search(filename) is not None


def logged_error(message: str, code: int) -> BpfsError:
    """An error the user caused: logged too, since the errno alone does not say what to fix."""
    log.error("%s", message)
    return BpfsError(message, code)


def _invalid(message: str) -> BpfsError:
    return logged_error(message, errno.EINVAL)


@dataclass(frozen=True)
class SampleSettings:
    """Defaults for every sample the drop box creates (the mount options genome=, datatype=, ...)."""

    genome: str = ""  # a genome name on the server
    datatype: str = "rna-seq"  # the official CLI's default
    platform: str = ""
    default_workflow: str = ""  # a workflow id


class SampleRecords:
    """Sample and upload records: validation, request bodies, and the API calls.

    Every change that alters what `samples/` lists drops its cached listing; creating a sample does
    not, so a sample shows up once its first file is complete.
    """

    def __init__(self, api: ApiClient, catalog: Catalog, settings: SampleSettings) -> None:
        self.api, self.catalog, self.options = api, catalog, settings
        self.dialect = api.dialect
        self.adopter = Adopter()  # a sample whose POST lost its answer
        self.upload_adopter = Adopter()  # an upload record whose POST lost its answer

    # -- settings ----------------------------------------------------------------------------------
    def defaults(self) -> dict:
        """The settings the mount options give every new sample (checked each time: genomes come and go)."""
        out: dict = {}
        opts = self.options
        for key in ("genome", "datatype", "platform"):
            if getattr(opts, key):
                out[key] = getattr(opts, key)
        if opts.default_workflow:
            out["default_workflow"] = self.workflow_id(opts.default_workflow, "mount option default_workflow")
        if "genome" in out:
            self.genome(out["genome"], "mount option genome")
        return out

    def parse_meta(self, text: bytes) -> dict:
        """The settings in a sample.json (empty: none), or a BpfsError (EINVAL) saying what is wrong."""
        where = META_NAME
        data = read_object(text, where, META_KEYS, _invalid)
        if data is None:
            return {}
        settings = {k: v for k, v in data.items() if v is not None}
        for key in ("datatype", "platform"):
            if key in settings and not isinstance(settings[key], str):
                raise _invalid(f"{where}: {key} must be a string")
        if "genome" in settings:
            if not isinstance(settings["genome"], str | int) or isinstance(settings["genome"], bool):
                raise _invalid(f"{where}: genome must be a genome name")
            self.genome(settings["genome"], where)
        if "default_workflow" in settings:
            settings["default_workflow"] = self.workflow_id(settings["default_workflow"], where)
        if "info" in settings and not isinstance(settings["info"], dict):
            raise _invalid(f"{where}: info must be an object of key/values")
        projects = settings.get("projects")
        if projects is not None and (not isinstance(projects, list)
                                     or not all(isinstance(p, int) and not isinstance(p, bool) for p in projects)):
            raise _invalid(f"{where}: projects must be a list of project ids")
        return settings

    def genome(self, value: object, where: str) -> Genome:
        """The genome a setting names (by name, or by id); `where` says which setting in the error."""
        for g in self.catalog.genomes():
            if (isinstance(value, str) and g.name == value) or (isinstance(value, int) and g.id == value):
                return g
        raise _invalid(f"{where}: unknown genome {value!r} (see genomes/index.tsv)")

    def workflow_id(self, value: object, where: str) -> int:
        # an int, or digits (mount options arrive as text); never a float or a bool silently truncated
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            raise _invalid(f"{where}: default_workflow must be a workflow id, not {value!r}")
        workflow_id = int(value)
        if not any(w.id == workflow_id for w in self.catalog.workflows()):
            raise _invalid(f"{where}: unknown workflow {value!r} (see workflows/index.tsv)")
        return workflow_id

    # -- sample records ----------------------------------------------------------------------------
    def create_sample(self, name: str, settings: dict) -> int:
        """POST the sample (§8 step 2) with the mount's defaults under `settings`; its id."""
        merged = {**self.defaults(), **settings}
        body = self._sample_body(name, merged)
        genome = self.genome(merged["genome"], name) if merged.get("genome") is not None else None
        sent = time.time()
        try:
            sample_id = self.api.create("samples", body)
            self.adopter.answered(sample_id)
        except RemoteError as exc:
            if not unanswered(exc):
                raise
            # a sample of that name, data type and genome, with no file yet, made since: another client's
            # one, made the same minute with the same settings, cannot be told apart (the log names it)
            def ours(s: Sample) -> bool:
                return s.name == name and s.datatype == body["datatype"] and not s.uploads and \
                    (genome is None or bool(_genomes(s) & {str(genome.id), genome.name}))

            found = self.adopter.made_anyway(self.api.samples, ours, sent, f"sample {name!r}")
            if found is None:
                raise maybe_made(exc, f"sample {name!r}", "samples/") from None
            log.warning("POST samples: %s; the server had created sample %d (%s) all the same: using it",
                        exc, found.id, name)
            sample_id = found.id
        log.info("created sample %d (%s)", sample_id, name)
        return sample_id

    def update_sample(self, sample_id: int, settings: dict) -> None:
        """Apply a sample.json to a sample that exists already (nothing to send: no request)."""
        body = self._sample_body(None, settings)
        if body:
            self.api.update("samples", sample_id, body)
            self.catalog.samples_changed(sample_id)

    def rename_sample(self, sample_id: int, name: str) -> None:
        self.api.update("samples", sample_id, {"name": name})
        self.catalog.samples_changed(sample_id)

    def delete_sample(self, sample_id: int) -> None:
        try:
            self.api.delete("samples", sample_id)
        finally:  # even a failed DELETE may have gone through
            self.catalog.samples_changed(sample_id, deleted=True)

    def _sample_body(self, name: str | None, settings: dict) -> dict:
        """POST samples in the mount's dialect; without a name, the fields of an update."""
        body: dict = {}
        if name is not None:
            body = {"name": name, "datatype": settings.get("datatype") or "rna-seq"}
        elif settings.get("datatype"):
            body["datatype"] = settings["datatype"]
        if settings.get("genome") is not None:
            genome = self.genome(settings["genome"], name or META_NAME)
            body["genome"] = self.dialect.sample_genome(genome.id, genome.name)
        if settings.get("platform"):
            body["platform"] = settings["platform"]
        if settings.get("default_workflow") is not None:
            body["default_workflow"] = self.dialect.fk(self.dialect.workflows, settings["default_workflow"])
        if settings.get("projects"):
            body.update(self.dialect.sample_projects(settings["projects"]))
        if settings.get("info"):
            body["info"] = dict(settings["info"])
        if name is not None:
            body.update(self.dialect.sample_extra())
        return body

    # -- upload records ----------------------------------------------------------------------------
    def upload_key(self, sample_id: int, basename: str) -> str:
        return f"uploads/{self.api.user_id}/{sample_id}/{basename}"

    def start_upload(self, sample_id: int, key: str, order: int, paired: bool) -> int:
        """POST the upload record `in_progress` (§8 step 3), before any byte goes to S3; its id."""
        try:
            upload_id = self.api.create("uploads", {
                "sample": self.dialect.upload_sample(sample_id), "key": key, "filesize": 0, "status": "in_progress",
                "order": order, "is_paired_end": paired, "source": "api", "uri": None})
        except RemoteError as exc:
            if not unanswered(exc):
                raise
            # a key is one file's in its sample: an in-progress record of it is this request's
            found = self.upload_adopter.made_anyway(
                lambda: [u for u in self.api.sample(sample_id).uploads or () if u.key == key],
                lambda u: u.status == "in_progress", None, f"the upload record of {key}")
            if found is None:
                raise maybe_made(exc, f"the upload record of {key}", f"samples/{sample_id}/") from None
            log.warning("POST uploads: %s; the server had created upload %d all the same: using it", exc, found.id)
            return found.id
        self.upload_adopter.answered(upload_id)
        return upload_id

    def end_upload(self, upload_id: int, key: str, status: str, size: int, seconds: float) -> None:
        """PUT the upload's outcome: `completed` (lists the file in its sample) or `failed`."""
        body = {"filesize": size, "status": status, "timetaken": int(seconds), "seq_length": 0,
                **self.dialect.upload_end_extra(key)}
        self.api.update("uploads", upload_id, body)
        if status == "completed":
            self.catalog.samples_changed()

    def move_upload(self, upload_id: int, key: str, paired: bool) -> None:
        """The record follows an uploaded file that was renamed (copied to a new key)."""
        self.api.update("uploads", upload_id, {"key": key, "is_paired_end": paired})
        self.catalog.samples_changed()

    def remove_upload(self, sample_id: int | None, upload_id: int, key: str, path: str) -> None:
        """DELETE an upload record, refused once the sample has an analysis (it may have read the file)."""
        if sample_id is not None:
            try:
                record = self.api.get_json(f"samples/{sample_id}")
            except NotFound:
                record = {}
            analyses = [a for a in (fk_id(x) for x in (record.get("analyses") or [])) if a] \
                if isinstance(record, dict) and isinstance(record.get("analyses"), list) else []
            if analyses:
                raise logged_error(f"{path}: sample {sample_id} already has analyses "
                                   f"({', '.join(map(str, analyses[:5]))}); its files cannot be removed", errno.EBUSY)
        try:
            self.api.delete("uploads", upload_id)
        except NotFound:
            pass  # gone already
        finally:
            self.catalog.samples_changed(sample_id)


def _genomes(sample: Sample) -> set[str]:
    """Every way the record names its genome (a v1 name or URI, a v3 id, `genome_name`)."""
    out = {sample.genome} if sample.genome else set()
    for value in (sample.raw.get("genome"), sample.raw.get("genome_name")):
        if isinstance(value, dict):
            value = value.get("id") or value.get("name")
        if value is not None and not isinstance(value, bool):
            out.add(str(fk_id(value) or value))
    return out
