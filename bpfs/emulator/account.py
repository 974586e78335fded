"""The deterministic demo account the emulator serves: records plus the bytes of their S3 objects.

Why a fixed, hand-shaped account rather than random data: every bpfs test and the demo need to
name things ("analysis 10000", "the BAM of liver_rep1", "the file with a null filesize") and
the seed documentation's examples (genome table, analysis 10000, download filters by tag) must
work verbatim. So ids, names, dates and tags are fixed here, and the file contents come from
seeded generators, so the same account is rebuilt byte for byte on every start.

Records are kept dialect-neutral: foreign keys are ids, timestamps are naive UTC `datetime`s,
`params.info` carries `genome_id`. The API server renders them as v1 (URIs, genome names,
naive timestamps) or v3 (ids, ISO `Z` timestamps). Everything is guarded by one lock so the
threaded server can mutate the account (sample creation through the mount) safely.

The account's quirks are deliberate, each one a case the filesystem must handle: a null
`filesize`, untagged files (`tags: null` and `tags: []`), two files with one basename, an
`s3://` path, an analysis whose keys do not share `analyses/7/<id>/`, a `running` and an
`error` analysis, a sample name with spaces and parentheses, a sample without uploads.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bpfs.emulator import genomics

DEMO_USER_ID = 7
DEMO_USERNAME = "demo@basepair.local"
DEMO_API_KEY = "demo-api-key-0000000000000000000000"
DEMO_S3_KEY_ID = "AKIADEMO00000000000"
DEMO_S3_SECRET = "demo/secret/0000000000000000000000000"
DEMO_BUCKET = "bp-demo-user-7"
DEMO_REGION = "us-east-1"

FIRST_SAMPLE_ID = 10001
FIRST_ANALYSIS_ID = 10000
FIRST_FILE_ID = 70001
FIRST_UPLOAD_ID = 9001

UPLOAD_STATUSES = ("in_progress", "completed", "failed")

# The genome table of the seed documentation (basepair 1.3.59 README), ids and dates verbatim.
SEED_GENOMES: tuple[tuple[int, str, str], ...] = (
    (1, "hg19", "2018-04-18T14:58:15.865993"),
    (2, "mm10", "2018-04-18T15:05:39.770488"),
    (3, "mm9", "2018-04-18T15:10:33.438603"),
    (4, "danRer10", "2018-04-18T15:15:11.281866"),
    (5, "tair10", "2018-04-18T15:17:19.582104"),
    (6, "dm6", "2018-04-18T15:23:27.298556"),
    (7, "danRer7", "2018-04-18T15:28:12.977544"),
    (8, "sacCer3", "2018-04-18T15:30:50.993198"),
    (9, "SL2.40", "2018-04-18T15:31:50.603006"),
    (10, "Xla.v91", "2018-04-18T15:36:55.491452"),
    (11, "xenTro7", "2018-04-18T15:43:42.386466"),
    (12, "taeGut2", "2018-04-18T15:44:56.550366"),
    (13, "Streptococcus_sanguinis", "2018-04-18T15:45:06.695995"),
    (14, "CENPK113-7D-RP", "2018-04-18T15:45:26.305311"),
    (15, "rn6", "2018-04-18T15:46:13.155202"),
    (16, "susScr11", "2018-04-18T15:48:53.443899"),
    (17, "ce11", "2018-04-18T15:49:32.644737"),
    (18, "Manis_javanica", "2018-04-18T16:09:05.805615"),
    (19, "Ictalurus_punctatus", "2018-04-18T16:16:12.306990"),
    (20, "mouse_GRCm38_M18", "2018-10-04T15:40:16.284047"),
    (21, "Citrus_clementina.v1", "2018-10-04T15:46:23.320161"),
    (22, "Nematostella_vectensis", "2018-10-26T18:06:36.340901"),
    (23, "Gallus_gallus", "2018-10-30T14:02:58.811138"),
)

SEED_WORKFLOWS: tuple[dict[str, Any], ...] = (
    {
        "id": 7,
        "name": "RNA-Seq expression (STAR)",
        "datatype": "rna-seq",
        "description": "Trim, align with STAR, count reads per gene, QC with FastQC and RNA-SeQC.",
        "tags": ["alignment"],
    },
    {
        "id": 8,
        "name": "DNA-Seq variant calling (BWA-GATK)",
        "datatype": "dna-seq",
        "description": "Align with BWA-MEM, mark duplicates, call variants with GATK HaplotypeCaller.",
        "tags": ["alignment", "variants"],
    },
    {
        "id": 9,
        "name": "ChIP-Seq peaks (MACS2)",
        "datatype": "chip-seq",
        "description": "Align with Bowtie2, call peaks with MACS2, make bigWig tracks.",
        "tags": ["alignment", "peaks"],
    },
    {
        "id": 10,
        "name": "FastQC only",
        "datatype": "other",
        "description": "Read quality control with FastQC; no alignment.",
        "tags": ["qc"],
    },
)


class RecordError(Exception):
    """A request the account refuses; `status` is the HTTP status the API server answers with."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(RecordError):
    status = 400


class NotFound(RecordError):
    status = 404


def parse_time(text: str) -> datetime:
    """A naive UTC datetime from an ISO-8601 text (with or without `Z`)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def slugify(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return slug or "sample"


class AccountState:
    """All records of one Basepair account, in dict tables keyed by id, guarded by `lock`.

    Readers (the API server) take the lock while they copy out what they render; the mutators
    below take it themselves. Objects in `store` are deleted together with their records.
    """

    def __init__(
        self,
        store: Any = None,
        bucket: str = DEMO_BUCKET,
        user_id: int = DEMO_USER_ID,
        username: str = DEMO_USERNAME,
        api_key: str = DEMO_API_KEY,
        s3_key_id: str = DEMO_S3_KEY_ID,
        s3_secret: str = DEMO_S3_SECRET,
        region: str = DEMO_REGION,
    ) -> None:
        self.lock = threading.RLock()
        self.store = store
        self.bucket = bucket
        self.user_id = user_id
        self.username = username
        self.api_key = api_key
        self.s3_key_id = s3_key_id
        self.s3_secret = s3_secret
        self.region = region
        self.users: dict[int, dict[str, Any]] = {}
        self.genomes: dict[int, dict[str, Any]] = {}
        self.workflows: dict[int, dict[str, Any]] = {}
        self.samples: dict[int, dict[str, Any]] = {}
        self.uploads: dict[int, dict[str, Any]] = {}
        self.analyses: dict[int, dict[str, Any]] = {}
        self.files: dict[int, dict[str, Any]] = {}
        # secondary indexes, kept in step with the tables by the methods below
        self._uploads_by_sample: dict[int, list[int]] = {}
        self._analyses_by_sample: dict[int, list[int]] = {}
        self._next_id = {
            "samples": FIRST_SAMPLE_ID,
            "uploads": FIRST_UPLOAD_ID,
            "analyses": FIRST_ANALYSIS_ID,
            "files": FIRST_FILE_ID,
        }

    # ------------------------------------------------------------------ ids and lookups

    def _new_id(self, table: str) -> int:
        with self.lock:
            value = self._next_id[table]
            self._next_id[table] = value + 1
            return value

    def _bump(self, table: str, used: int) -> None:
        self._next_id[table] = max(self._next_id[table], used + 1)

    def table(self, name: str) -> dict[int, dict[str, Any]]:
        return getattr(self, name)

    def genome_by_name(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            for genome in self.genomes.values():
                if genome["name"] == name:
                    return genome
        return None

    def sample_upload_ids(self, sample_id: int) -> list[int]:
        with self.lock:
            return sorted(self._uploads_by_sample.get(sample_id, []), key=self._upload_sort_key)

    def _upload_sort_key(self, upload_id: int) -> tuple[int, int]:
        upload = self.uploads[upload_id]
        order = upload.get("order")
        return (order if isinstance(order, int) else 1 << 30, upload_id)

    def sample_analysis_ids(self, sample_id: int) -> list[int]:
        with self.lock:
            return list(self._analyses_by_sample.get(sample_id, []))

    def analysis_file_ids(self, analysis_id: int) -> list[int]:
        with self.lock:
            return list(self.analyses[analysis_id]["file_ids"])

    # ------------------------------------------------------------------ builders (no validation)

    def add_user(self, user_id: int, username: str, date_joined: datetime) -> dict[str, Any]:
        record = {
            "id": user_id,
            "username": username,
            "email": username,
            "first_name": "Demo",
            "last_name": "User",
            "date_joined": date_joined,
        }
        with self.lock:
            self.users[user_id] = record
        return record

    def add_genome(self, genome_id: int, name: str, date_created: datetime) -> dict[str, Any]:
        record = {"id": genome_id, "name": name, "date_created": date_created}
        with self.lock:
            self.genomes[genome_id] = record
        return record

    def add_workflow(self, record: dict[str, Any], date_created: datetime) -> dict[str, Any]:
        record = dict(record, date_created=date_created, visibility="public")
        with self.lock:
            self.workflows[record["id"]] = record
        return record

    def add_sample(
        self,
        name: str,
        datatype: str = "rna-seq",
        genome: int | None = None,
        date_created: datetime | None = None,
        last_updated: datetime | None = None,
        platform: str | None = "illumina",
        default_workflow: int | None = None,
        meta: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
        projects: list[Any] | None = None,
        sample_id: int | None = None,
    ) -> dict[str, Any]:
        now = utcnow()
        with self.lock:
            if sample_id is None:
                sample_id = self._new_id("samples")
            else:
                self._bump("samples", sample_id)
            record = {
                "id": sample_id,
                "name": name,
                "slug": slugify(name),
                "datatype": datatype,
                "genome": genome,
                "platform": platform,
                "owner": self.user_id,
                "default_workflow": default_workflow,
                "date_created": date_created or now,
                "last_updated": last_updated or date_created or now,
                "meta": dict(meta or {}),
                "info": dict(info or {}),
                "projects": list(projects or []),
            }
            self.samples[sample_id] = record
            self._uploads_by_sample.setdefault(sample_id, [])
            self._analyses_by_sample.setdefault(sample_id, [])
        return record

    def add_upload(
        self,
        sample: int,
        key: str | None,
        filesize: int | None,
        order: int,
        is_paired_end: bool,
        status: str = "completed",
        uri: str | None = None,
        source: str = "api",
        timetaken: int | None = None,
        date_created: datetime | None = None,
        upload_id: int | None = None,
    ) -> dict[str, Any]:
        now = date_created or utcnow()
        with self.lock:
            if upload_id is None:
                upload_id = self._new_id("uploads")
            else:
                self._bump("uploads", upload_id)
            record = {
                "id": upload_id,
                "sample": sample,
                "key": key,
                "uri": uri,
                "filesize": filesize,
                "order": order,
                "is_paired_end": bool(is_paired_end),
                "status": status,
                "source": source,
                "timetaken": timetaken,
                "seq_length": 0,
                "date_created": now,
                "last_updated": now,
            }
            self.uploads[upload_id] = record
            self._uploads_by_sample.setdefault(sample, []).append(upload_id)
        return record

    def add_analysis(
        self,
        name: str,
        status: str,
        workflow: int,
        samples: list[int],
        tags: list[str],
        params: dict[str, Any],
        date_created: datetime,
        started_on: datetime | None,
        completed_on: datetime | None,
        last_updated: datetime,
        controls: list[int] | None = None,
        analysis_id: int | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            if analysis_id is None:
                analysis_id = self._new_id("analyses")
            else:
                self._bump("analyses", analysis_id)
            record = {
                "id": analysis_id,
                "name": name,
                "status": status,
                "workflow": workflow,
                "samples": list(samples),
                "controls": list(controls or []),
                "owner": self.user_id,
                "tags": list(tags),
                "params": params,
                "date_created": date_created,
                "started_on": started_on,
                "completed_on": completed_on,
                "last_updated": last_updated,
                "file_ids": [],
            }
            self.analyses[analysis_id] = record
            for sample_id in record["samples"] + record["controls"]:
                self._analyses_by_sample.setdefault(sample_id, []).append(analysis_id)
        return record

    def add_file(
        self,
        analysis: int,
        path: str,
        tags: list[str] | None,
        filesize: int | None,
        node: str,
        last_updated: datetime,
        source: str = "analysis",
        file_id: int | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            if file_id is None:
                file_id = self._new_id("files")
            else:
                self._bump("files", file_id)
            record = {
                "id": file_id,
                "analysis": analysis,
                "path": path,
                "tags": tags,
                "filesize": filesize,
                "source": source,
                "node": node,
                "date_created": last_updated,
                "last_updated": last_updated,
            }
            self.files[file_id] = record
            self.analyses[analysis]["file_ids"].append(file_id)
        return record

    # ------------------------------------------------------------------ mutations used by the REST server

    def _check_fk(self, table: str, value: Any, what: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{what}: expected an id, got {value!r}.")
        if value not in self.table(table):
            raise BadRequest(f"{what}: no {table[:-1]} with id {value}.")
        return value

    @staticmethod
    def _check_type(fields: dict[str, Any], name: str, types: tuple[type, ...], nullable: bool = True) -> None:
        if name not in fields:
            return
        value = fields[name]
        if value is None and nullable:
            return
        if isinstance(value, bool) and bool not in types:
            raise BadRequest(f"{name}: unexpected value {value!r}.")
        if not isinstance(value, types):
            raise BadRequest(f"{name}: unexpected value {value!r}.")

    def create_sample(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Create a sample from a neutral body (`genome`/`default_workflow` already resolved to ids).

        Only `name` is required; `datatype` defaults to rna-seq (what the v3 CLI does).
        `filepaths1`/`filepaths2` (the client's local paths) are kept as information only.
        """
        name = fields.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("name: this field is required.")
        datatype = fields.get("datatype") or "rna-seq"
        if not isinstance(datatype, str):
            raise BadRequest(f"datatype: unexpected value {datatype!r}.")
        for key in ("meta", "info"):
            self._check_type(fields, key, (dict,))
        self._check_type(fields, "platform", (str,))
        self._check_type(fields, "projects", (list,))
        with self.lock:
            genome = self._check_fk("genomes", fields.get("genome"), "genome")
            workflow = self._check_fk("workflows", fields.get("default_workflow"), "default_workflow")
            record = self.add_sample(
                name=name,
                datatype=datatype,
                genome=genome,
                platform=fields.get("platform"),
                default_workflow=workflow,
                meta=fields.get("meta"),
                info=fields.get("info"),
                projects=fields.get("projects"),
            )
            for key in ("filepaths1", "filepaths2"):
                if fields.get(key) is not None:
                    record[key] = copy.deepcopy(fields[key])
        return record

    def update_sample(self, sample_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Partial update: only the fields present change."""
        with self.lock:
            record = self.samples.get(sample_id)
            if record is None:
                raise NotFound(f"Sample with id {sample_id} not found.")
            changes: dict[str, Any] = {}
            if "name" in fields:
                if not isinstance(fields["name"], str) or not fields["name"].strip():
                    raise BadRequest("name: may not be empty.")
                changes["name"] = fields["name"]
                changes["slug"] = slugify(fields["name"])
            if "datatype" in fields:
                if not isinstance(fields["datatype"], str) or not fields["datatype"]:
                    raise BadRequest(f"datatype: unexpected value {fields['datatype']!r}.")
                changes["datatype"] = fields["datatype"]
            if "genome" in fields:
                changes["genome"] = self._check_fk("genomes", fields["genome"], "genome")
            if "default_workflow" in fields:
                changes["default_workflow"] = self._check_fk(
                    "workflows", fields["default_workflow"], "default_workflow"
                )
            for key, types in (("platform", (str,)), ("meta", (dict,)), ("info", (dict,)), ("projects", (list,))):
                if key in fields:
                    self._check_type(fields, key, types)
                    changes[key] = copy.deepcopy(fields[key])
            record.update(changes)
            record["last_updated"] = utcnow()
            return record

    def delete_sample(self, sample_id: int) -> None:
        """Remove the sample, its upload records and their objects in the bucket (the server's cleanup)."""
        with self.lock:
            if sample_id not in self.samples:
                raise NotFound(f"Sample with id {sample_id} not found.")
            for upload_id in list(self._uploads_by_sample.get(sample_id, [])):
                self.delete_upload(upload_id)
            del self.samples[sample_id]
            self._uploads_by_sample.pop(sample_id, None)
            self._analyses_by_sample.pop(sample_id, None)

    # ------------------------------------------------------------------ analyses started through the API

    def create_analysis(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Start an analysis from a neutral body (workflow, samples, controls already ids), or answer
        {"warning": ...} and create nothing when the samples' genomes differ and the caller did not pass
        ignore_validation_warning (the v3 CLI then asks the user and sends the request again)."""
        for key in ("params", "meta"):
            self._check_type(fields, key, (dict,))
        self._check_type(fields, "instance", (str,))
        self._check_type(fields, "projects", (list,))
        samples, controls = fields.get("samples"), fields.get("controls") or []
        if not isinstance(samples, list) or not samples:
            raise BadRequest("samples: a non-empty list of samples is required.")
        if not isinstance(controls, list):
            raise BadRequest("controls: a list of samples is expected.")
        with self.lock:
            workflow = self._check_fk("workflows", fields.get("workflow"), "workflow")
            if workflow is None:
                raise BadRequest("workflow: this field is required.")
            sample_ids = [self._check_fk("samples", s, "samples") for s in samples]
            control_ids = [self._check_fk("samples", s, "controls") for s in controls]
            genomes = {self.samples[s]["genome"] for s in sample_ids + control_ids} - {None}
            if len(genomes) > 1 and fields.get("ignore_validation_warning") is not True:
                names = sorted(self.genomes[g]["name"] for g in genomes if g in self.genomes)
                return {"warning": f"The samples use different genomes ({', '.join(names)}); send "
                                   "ignore_validation_warning to start the analysis anyway."}
            params = copy.deepcopy(fields.get("params") or {})
            info = params.setdefault("info", {}) if isinstance(params, dict) else {}
            if genomes:
                info.setdefault("genome_id", next(iter(genomes)))
            if fields.get("instance"):
                info["instance_type"] = fields["instance"]
            now = utcnow()
            names = ", ".join(self.samples[s]["name"] for s in sample_ids)
            record = self.add_analysis(
                name=f"{names} - {self.workflows[workflow]['name']}", status="queued", workflow=workflow,
                samples=sample_ids, tags=list(self.workflows[workflow].get("tags") or []), params=params,
                date_created=now, started_on=None, completed_on=None, last_updated=now, controls=control_ids)
            record["plan"] = {"created": time.monotonic(), "done": []}
        return record

    def advance_analyses(self, queued_seconds: float, run_seconds: float) -> None:
        """Move analyses started through the API along: queued, then running with files appearing, then
        completed. Called before every request, so time alone drives them (no thread of its own)."""
        now = time.monotonic()
        with self.lock:
            for record in self.analyses.values():
                plan = record.get("plan")
                if plan is None or record["status"] in ("completed", "error"):
                    continue
                age = now - plan["created"]
                if age >= queued_seconds and record["status"] == "queued":
                    record["status"], record["started_on"] = "running", utcnow()
                    record["last_updated"] = record["started_on"]
                outputs = self._outputs(record)
                for index, (path, tags, data) in enumerate(outputs):
                    if index in plan["done"] or age < queued_seconds + run_seconds * (index + 1) / (len(outputs) + 1):
                        continue
                    if self.store is not None:
                        self.store.put(self.bucket, path, data)
                    self.add_file(record["id"], path, tags, len(data), path.rsplit("/", 2)[-2], utcnow())
                    plan["done"].append(index)
                    record["last_updated"] = utcnow()
                if age >= queued_seconds + run_seconds:
                    record["status"], record["completed_on"] = "completed", utcnow()
                    record["last_updated"] = record["completed_on"]

    def _outputs(self, record: dict[str, Any]) -> list[tuple[str, list[str], bytes]]:
        """What an analysis started through the API writes: per sample a QC report and gene counts, then a log."""
        base = f"analyses/{self.user_id}/{record['id']}"
        out = []
        for sample_id in record["samples"]:
            name = slugify(self.samples[sample_id]["name"]) if sample_id in self.samples else str(sample_id)
            seed = _seed("api-analysis", record["id"], sample_id)
            html, _zip = genomics.make_fastqc(seed, name)
            out.append((f"{base}/fastqc/{name}_fastqc.html", ["fastqc", "html"], html))
            out.append((f"{base}/counts/{name}.genes.txt", ["expression_count", "by_gene", "text"],
                        genomics.make_gene_counts(seed, n_genes=200)))
        out.append((f"{base}/logs/pipeline.log", ["log"], _log_text([f"analysis {record['id']} done"])))
        return out

    def delete_analysis(self, analysis_id: int) -> None:
        """Remove the analysis, its file records and their objects."""
        with self.lock:
            record = self.analyses.get(analysis_id)
            if record is None:
                raise NotFound(f"Analysis with id {analysis_id} not found.")
            for file_id in record["file_ids"]:
                f = self.files.pop(file_id, None)
                if f is not None and self.store is not None and not f["path"].startswith("s3://"):
                    self.store.delete(self.bucket, f["path"])
            for sample_id in record["samples"] + record["controls"]:
                ids = self._analyses_by_sample.get(sample_id, [])
                if analysis_id in ids:
                    ids.remove(analysis_id)
            del self.analyses[analysis_id]

    def create_upload(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Create an upload record (`sample` already resolved to an id). `order` defaults to the next one."""
        sample_id = fields.get("sample")
        if sample_id is None:
            raise BadRequest("sample: this field is required.")
        self._check_type(fields, "key", (str,))
        self._check_type(fields, "uri", (str,))
        self._check_type(fields, "filesize", (int,))
        self._check_type(fields, "order", (int,))
        self._check_type(fields, "timetaken", (int, float))
        self._check_type(fields, "source", (str,))
        status = fields.get("status") or "in_progress"
        if status not in UPLOAD_STATUSES:
            raise BadRequest(f"status: must be one of {', '.join(UPLOAD_STATUSES)}.")
        if not fields.get("key") and not fields.get("uri"):
            raise BadRequest("key: this field is required (or uri).")
        with self.lock:
            self._check_fk("samples", sample_id, "sample")
            order = fields.get("order")
            if order is None:
                existing = [self.uploads[u]["order"] for u in self._uploads_by_sample.get(sample_id, [])]
                order = max((o for o in existing if isinstance(o, int)), default=-1) + 1
            record = self.add_upload(
                sample=sample_id,
                key=fields.get("key"),
                uri=fields.get("uri"),
                filesize=fields.get("filesize"),
                order=order,
                is_paired_end=bool(fields.get("is_paired_end", False)),
                status=status,
                source=fields.get("source") or "api",
                timetaken=fields.get("timetaken"),
            )
            if "seq_length" in fields:
                record["seq_length"] = fields["seq_length"]
            self.samples[sample_id]["last_updated"] = record["last_updated"]
        return record

    def update_upload(self, upload_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Partial update (the client finishes an upload with filesize, status, timetaken, seq_length)."""
        with self.lock:
            record = self.uploads.get(upload_id)
            if record is None:
                raise NotFound(f"Upload with id {upload_id} not found.")
            self._check_type(fields, "key", (str,))
            self._check_type(fields, "uri", (str,))
            self._check_type(fields, "filesize", (int,))
            self._check_type(fields, "order", (int,))
            self._check_type(fields, "timetaken", (int, float))
            self._check_type(fields, "seq_length", (int,))
            self._check_type(fields, "source", (str,))
            if "status" in fields and fields["status"] not in UPLOAD_STATUSES:
                raise BadRequest(f"status: must be one of {', '.join(UPLOAD_STATUSES)}.")
            if "is_paired_end" in fields and not isinstance(fields["is_paired_end"], bool):
                raise BadRequest(f"is_paired_end: unexpected value {fields['is_paired_end']!r}.")
            for key in ("key", "uri", "filesize", "order", "timetaken", "seq_length", "source", "status",
                        "is_paired_end"):
                if key in fields:
                    record[key] = fields[key]
            record["last_updated"] = utcnow()
            sample = self.samples.get(record["sample"])
            if sample is not None:
                sample["last_updated"] = record["last_updated"]
            return record

    def delete_upload(self, upload_id: int) -> None:
        """Remove an upload record and its object (raw uploads live only under the user's `uploads/`)."""
        with self.lock:
            record = self.uploads.pop(upload_id, None)
            if record is None:
                raise NotFound(f"Upload with id {upload_id} not found.")
            siblings = self._uploads_by_sample.get(record["sample"], [])
            if upload_id in siblings:
                siblings.remove(upload_id)
            key = record.get("key")
            if self.store is not None and key and key.startswith("uploads/"):
                try:
                    if self.store.exists(self.bucket, key):
                        self.store.delete(self.bucket, key)
                except Exception:  # noqa: BLE001 - a missing object is not the client's problem
                    pass

    def object_keys(self) -> set[str]:
        """Every key in the user's bucket that a record points at."""
        keys: set[str] = set()
        prefix = f"s3://{self.bucket}/"
        with self.lock:
            for upload in self.uploads.values():
                if upload.get("key"):
                    keys.add(upload["key"])
            for record in self.files.values():
                path = record["path"]
                keys.add(path[len(prefix):] if path.startswith(prefix) else path)
        return keys


# ---------------------------------------------------------------------------------------- the demo account


def _t(text: str) -> datetime:
    return parse_time(text)


def _seed(*parts: object) -> int:
    """A stable integer seed from a few labels (so generated bytes never depend on build order)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _log_text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def build_demo_account(
    store: Any,
    bucket: str = DEMO_BUCKET,
    extra_analyses: int = 0,
    big_file_mib: int = 64,
    bam_reads: int = 60000,
) -> AccountState:
    """Create the demo account's records and put every object they reference into `store`.

    `extra_analyses` adds that many small completed FastQC analyses (ids after the fixed ones)
    for listing-scale tests. Generation is in memory and takes a couple of seconds for the
    default sizes (the BAM and the bigWig dominate), so nothing is cached between runs.
    """
    store.create_bucket(bucket)
    state = AccountState(store=store, bucket=bucket)
    uid = state.user_id

    def put(key: str, data: bytes) -> int:
        store.put(bucket, key, data)
        return len(data)

    def put_all(keys: list[str], blobs: Iterable[bytes]) -> list[int]:
        return [put(key, data) for key, data in zip(keys, blobs, strict=True)]

    state.add_user(uid, state.username, _t("2019-02-11T10:20:30.400500"))
    for genome_id, name, created in SEED_GENOMES:
        state.add_genome(genome_id, name, _t(created))
    for index, workflow in enumerate(SEED_WORKFLOWS):
        state.add_workflow(dict(workflow), _t("2019-01-15T09:00:00.000000") + timedelta(days=index))

    # ---------------------------------------------------------------- samples and their raw uploads
    hg19 = 1
    mm10 = 2
    sample_specs: list[dict[str, Any]] = [
        {"name": "liver_rep1", "datatype": "rna-seq", "genome": hg19, "reads": 8000, "paired": True,
         "created": "2024-03-05T14:07:31.123456", "workflow": 7, "info": {"stranded": "reverse"}},
        {"name": "liver_rep2", "datatype": "rna-seq", "genome": hg19, "reads": 8000, "paired": True,
         "created": "2024-03-05T14:09:02.654321", "workflow": 7, "info": {"stranded": "reverse"},
         "null_size": "liver_rep2_R2.fastq.gz"},
        {"name": "tumor_wgs", "datatype": "dna-seq", "genome": hg19, "reads": 12000, "paired": False,
         "created": "2024-03-12T08:30:00.000001", "workflow": 8, "info": {}},
        {"name": "brain cortex (rep 1)", "datatype": "rna-seq", "genome": mm10, "reads": 6000, "paired": False,
         "created": "2024-04-02T16:45:10.500000", "workflow": 7, "info": {"stranded": "unstranded"},
         "basename": "brain cortex (rep 1).fastq.gz"},
        {"name": "pending_sample", "datatype": "chip-seq", "genome": None, "reads": 0, "paired": False,
         "created": "2024-05-20T11:00:00.000000", "workflow": 9, "info": {}},
    ]
    sample_ids: dict[str, int] = {}
    for spec in sample_specs:
        created = _t(spec["created"])
        sample = state.add_sample(
            name=spec["name"],
            datatype=spec["datatype"],
            genome=spec["genome"],
            date_created=created,
            last_updated=created + timedelta(minutes=12, seconds=3, microseconds=250),
            default_workflow=spec["workflow"],
            meta={"num_reads": spec["reads"] * (2 if spec["paired"] else 1), "source": "api"} if spec["reads"]
            else {"source": "api"},
            info=spec["info"],
        )
        sid = sample["id"]
        sample_ids[spec["name"]] = sid
        if not spec["reads"]:
            continue
        if spec["paired"]:
            names = [f"{spec['name']}_R1.fastq.gz", f"{spec['name']}_R2.fastq.gz"]
        else:
            names = [spec.get("basename") or f"{spec['name']}.fastq.gz"]
        for order, basename in enumerate(names):
            key = f"uploads/{uid}/{sid}/{basename}"
            mate = order + 1
            size = put(
                key,
                genomics.make_fastq_gz(
                    _seed("fastq", spec["name"]), spec["reads"], mate=mate, name=spec["name"].replace(" ", "_")
                ),
            )
            state.add_upload(
                sample=sid,
                key=key,
                filesize=None if basename == spec.get("null_size") else size,
                order=order,
                is_paired_end=order == 1,
                status="completed",
                timetaken=3 + order,
                date_created=created + timedelta(minutes=1 + order),
            )

    # ---------------------------------------------------------------- analysis 10000: RNA-Seq of liver_rep1
    a = state.add_analysis(
        name="liver_rep1 - RNA-Seq expression (STAR)",
        status="completed",
        workflow=7,
        samples=[sample_ids["liver_rep1"]],
        tags=["alignment"],
        params={"info": {"genome_id": hg19}, "node": {"star": {"outFilterMultimapNmax": "20"}}},
        date_created=_t("2024-03-05T15:00:00.000000"),
        started_on=_t("2024-03-05T15:01:10.250000"),
        completed_on=_t("2024-03-05T17:44:03.500000"),
        last_updated=_t("2024-03-05T17:44:05.000001"),
        analysis_id=FIRST_ANALYSIS_ID,
    )
    aid = a["id"]
    base = f"analyses/{uid}/{aid}"
    t0 = _t("2024-03-05T15:10:00.000000")

    def add(path: str, tags: list[str] | None, size: int | None, minutes: int, analysis: int = aid) -> None:
        node = path.split("/")[-2] if "/" in path else "root"
        state.add_file(analysis, path, tags, size, node, t0 + timedelta(minutes=minutes, microseconds=minutes * 7))

    bam_size, bai_size = put_all(
        [f"{base}/star/liver_rep1.bam", f"{base}/star/liver_rep1.bam.bai"],
        genomics.make_bam(_seed("bam", "liver_rep1"), bam_reads),
    )
    add(f"{base}/star/liver_rep1.bam", ["bam", "dedup"], bam_size, 80)
    add(f"{base}/star/liver_rep1.bam.bai", ["bai"], bai_size, 81)
    for minute, mate in ((20, "R1"), (22, "R2")):
        stem = f"liver_rep1_{mate}_fastqc"
        html_size, zip_size = put_all(
            [f"{base}/fastqc/{stem}.html", f"{base}/fastqc/{stem}.zip"],
            genomics.make_fastqc(_seed("fastqc", "liver_rep1", mate), f"liver_rep1_{mate}"),
        )
        add(f"{base}/fastqc/{stem}.html", ["fastqc", "html"], html_size, minute)
        add(f"{base}/fastqc/{stem}.zip", ["fastqc", "zip"], zip_size, minute + 1)
    size = put(
        f"{base}/metrics/rnaseq_metrics.json",
        genomics.make_rnaseq_metrics(_seed("metrics", "liver_rep1"), "liver_rep1"),
    )
    add(f"{base}/metrics/rnaseq_metrics.json", ["rnaseq_metrics", "json"], size, 150)
    put(
        f"{base}/counts/liver_rep1.genes.txt",
        genomics.make_gene_counts(_seed("counts", "liver_rep1")),
    )
    add(f"{base}/counts/liver_rep1.genes.txt", ["expression_count", "by_gene", "text"], None, 140)
    big_key, big_seed = f"{base}/star/liver_rep1.bigwig", _seed("bigwig", "liver_rep1")
    if hasattr(store, "new_temp_path"):  # streamed to disk and moved in: a 1 GiB object never sits in memory
        big = store.new_temp_path()
        size = genomics.write_random_file(big_seed, big_file_mib * 1024 * 1024, big)
        store.put(bucket, big_key, big)
    else:  # an in-memory store of a unit test
        size = put(big_key, genomics.random_bytes(big_seed, big_file_mib * 1024 * 1024))
    add(f"{base}/star/liver_rep1.bigwig", ["bigwig"], size, 95)
    small: dict[str, bytes] = {
        f"{base}/logs/pipeline.log": _log_text(
            [f"2024-03-05 15:{m:02d}:00 INFO step {m} of 40 done" for m in range(40)]
            + ["2024-03-05 17:44:03 INFO analysis 10000 completed"]
        ),
        f"{base}/logs/star.log": _log_text(
            ["STAR --runThreadN 8 --genomeDir /ref/hg19 --outSAMtype BAM SortedByCoordinate",
             "Mar 05 15:20:11 ..... started STAR run", "Mar 05 16:40:52 ..... finished successfully"]
        ),
        f"{base}/star/summary.txt": _log_text(
            ["Number of input reads |\t16000", "Uniquely mapped reads number |\t14112",
             "Uniquely mapped reads % |\t88.20%", "Number of reads mapped to multiple loci |\t944"]
        ),
        f"{base}/counts/summary.txt": _log_text(
            ["Status\tliver_rep1.bam", "Assigned\t11874", "Unassigned_NoFeatures\t1502",
             "Unassigned_Ambiguity\t736", "Unassigned_MultiMapping\t944"]
        ),
    }
    for key, data in small.items():
        store.put(bucket, key, data)
    add(f"{base}/logs/pipeline.log", None, len(small[f"{base}/logs/pipeline.log"]), 164)
    add(f"{base}/logs/star.log", [], len(small[f"{base}/logs/star.log"]), 90)
    add(f"{base}/star/summary.txt", ["summary", "text"], len(small[f"{base}/star/summary.txt"]), 91)
    add(f"{base}/counts/summary.txt", ["summary", "text"], len(small[f"{base}/counts/summary.txt"]), 141)

    # ---------------------------------------------------------------- analysis 10001: DNA-Seq of tumor_wgs
    a = state.add_analysis(
        name="tumor_wgs - DNA-Seq variant calling (BWA-GATK)",
        status="completed",
        workflow=8,
        samples=[sample_ids["tumor_wgs"]],
        tags=["alignment", "variants"],
        params={"info": {"genome_id": hg19, "bucket": bucket}, "node": {"gatk": {"stand_call_conf": "30"}}},
        date_created=_t("2024-03-12T09:00:00.000000"),
        started_on=_t("2024-03-12T09:02:41.000000"),
        completed_on=_t("2024-03-12T13:27:19.750000"),
        last_updated=_t("2024-03-12T13:27:20.000000"),
    )
    aid = a["id"]
    base = f"analyses/{uid}/{aid}"
    t0 = _t("2024-03-12T09:30:00.000000")
    vcf_size, tbi_size = put_all(
        [f"{base}/gatk/tumor_wgs.vcf.gz", f"{base}/gatk/tumor_wgs.vcf.gz.tbi"],
        genomics.make_vcf(_seed("vcf", "tumor_wgs"), 2000),
    )
    add(f"{base}/gatk/tumor_wgs.vcf.gz", ["vcf", "gz"], vcf_size, 230, aid)
    add(f"{base}/gatk/tumor_wgs.vcf.gz.tbi", ["tbi"], tbi_size, 231, aid)
    bam_size, bai_size = put_all(
        [f"{base}/bwa/tumor_wgs.bam", f"{base}/bwa/tumor_wgs.bam.bai"],
        genomics.make_bam(_seed("bam", "tumor_wgs"), 8000),
    )
    add(f"{base}/bwa/tumor_wgs.bam", ["bam", "dedup"], bam_size, 120, aid)
    add(f"{base}/bwa/tumor_wgs.bam.bai", ["bai"], bai_size, 121, aid)
    flagstat = _log_text(
        ["12000 + 0 in total (QC-passed reads + QC-failed reads)", "0 + 0 secondary",
         "11712 + 0 mapped (97.60% : N/A)", "403 + 0 duplicates"]
    )
    store.put(bucket, f"{base}/qc/tumor_wgs.flagstat.txt", flagstat)
    add(f"s3://{bucket}/{base}/qc/tumor_wgs.flagstat.txt", ["flagstat", "text"], len(flagstat), 125, aid)

    # ---------------------------------------------------------------- analysis 10002: running, liver_rep2
    a = state.add_analysis(
        name="liver_rep2 - RNA-Seq expression (STAR)",
        status="running",
        workflow=7,
        samples=[sample_ids["liver_rep2"]],
        tags=["alignment"],
        params={"info": {"genome_id": hg19}, "node": {}},
        date_created=_t("2024-06-01T10:00:00.000000"),
        started_on=_t("2024-06-01T10:01:30.000000"),
        completed_on=None,
        last_updated=_t("2024-06-01T10:25:45.125000"),
    )
    aid = a["id"]
    base = f"analyses/{uid}/{aid}"
    t0 = _t("2024-06-01T10:10:00.000000")
    stem = "liver_rep2_R1_fastqc"
    html_size, zip_size = put_all(
        [f"{base}/fastqc/{stem}.html", f"{base}/fastqc/{stem}.zip"],
        genomics.make_fastqc(_seed("fastqc", "liver_rep2", "R1"), "liver_rep2_R1"),
    )
    add(f"{base}/fastqc/{stem}.html", ["fastqc", "html"], html_size, 5, aid)
    add(f"{base}/fastqc/{stem}.zip", ["fastqc", "zip"], zip_size, 6, aid)

    # ---------------------------------------------------------------- analysis 10003: error, brain cortex
    a = state.add_analysis(
        name="brain cortex (rep 1) - FastQC only",
        status="error",
        workflow=10,
        samples=[sample_ids["brain cortex (rep 1)"]],
        tags=["qc"],
        params={"info": {"genome_id": mm10}, "node": {}},
        date_created=_t("2024-04-02T17:00:00.000000"),
        started_on=_t("2024-04-02T17:00:55.000000"),
        completed_on=_t("2024-04-02T17:03:12.000000"),
        last_updated=_t("2024-04-02T17:03:12.000100"),
    )
    aid = a["id"]
    base = f"analyses/{uid}/{aid}"
    t0 = _t("2024-04-02T17:00:00.000000")
    log = _log_text(["2024-04-02 17:01:02 INFO fastqc started",
                     "2024-04-02 17:03:11 ERROR fastqc: truncated gzip input in 'brain cortex (rep 1).fastq.gz'",
                     "2024-04-02 17:03:12 ERROR analysis 10003 failed"])
    store.put(bucket, f"{base}/logs/pipeline.log", log)
    add(f"{base}/logs/pipeline.log", ["log", "text"], len(log), 3, aid)

    # ---------------------------------------------------------------- analysis 10004: keys outside analyses/7/<id>/
    a = state.add_analysis(
        name="liver_rep2 - FastQC only",
        status="completed",
        workflow=10,
        samples=[sample_ids["liver_rep2"]],
        tags=["qc"],
        params={"info": {"genome_id": hg19}, "node": {}},
        date_created=_t("2024-03-06T08:00:00.000000"),
        started_on=_t("2024-03-06T08:00:40.000000"),
        completed_on=_t("2024-03-06T08:09:58.000000"),
        last_updated=_t("2024-03-06T08:10:00.000000"),
    )
    aid = a["id"]
    base = f"analyses/{uid}/{aid}"
    t0 = _t("2024-03-06T08:00:00.000000")
    stem = "liver_rep2_R2_fastqc"
    html_size, zip_size = put_all(
        [f"{base}/fastqc/{stem}.html", f"{base}/fastqc/{stem}.zip"],
        genomics.make_fastqc(_seed("fastqc", "liver_rep2", "R2"), "liver_rep2_R2"),
    )
    add(f"{base}/fastqc/{stem}.html", ["fastqc", "html"], html_size, 7, aid)
    add(f"{base}/fastqc/{stem}.zip", ["fastqc", "zip"], zip_size, 8, aid)
    refs = f"analyses/{uid}/shared-refs/hg19"
    adapters = b">TruSeq_Adapter_Index_1\nGATCGGAAGAGCACACGTCTGAACTCCAGTCACATCACGATCTCGTATGCCGTCTTCTGCTTG\n" \
               b">Nextera_Transposase_1\nCTGTCTCTTATACACATCTCCGAGCCCACGAGAC\n"
    store.put(bucket, f"{refs}/adapters.fa", adapters)
    add(f"{refs}/adapters.fa", ["reference", "fasta"], len(adapters), 1, aid)
    contaminants = _log_text([f"contaminant_{i:02d}\t{'ACGT'[i % 4] * 24}" for i in range(30)])
    store.put(bucket, f"{refs}/contaminants.txt", contaminants)
    add(f"{refs}/contaminants.txt", ["reference", "text"], len(contaminants), 1, aid)

    # ---------------------------------------------------------------- listing-scale extras
    if extra_analyses:
        add_extra_analyses(state, store, bucket, extra_analyses, [sample_ids[n] for n in
                            ("liver_rep1", "liver_rep2", "tumor_wgs", "brain cortex (rep 1)")])

    return state


def add_extra_analyses(state: AccountState, store: Any, bucket: str, count: int, samples: list[int]) -> None:
    """`count` small completed FastQC analyses with two files each, built for speed (5,000 in well under 2 s).

    Both files of every extra analysis point at two small objects under `analyses/7/shared-refs/qc/`
    written once: one object per analysis would mean thousands of file writes, which on a slow
    disk alone takes seconds. So these analyses, like 10004, have keys outside `analyses/7/<id>/`.
    """
    uid = state.user_id
    limits_key = f"analyses/{uid}/shared-refs/qc/fastqc_limits.txt"
    limits = _log_text(["# FastQC limits used by the QC-only workflow",
                        "duplication\twarn\t70", "duplication\terror\t50", "kmer\tignore\t1",
                        "n_content\twarn\t5", "n_content\terror\t20"])
    summary_key = f"analyses/{uid}/shared-refs/qc/qc_summary.txt"
    summary = _log_text(["module\tstatus", "Basic Statistics\tPASS", "Per base sequence quality\tPASS",
                         "Per sequence GC content\tWARN", "Adapter Content\tPASS"])
    store.put(bucket, limits_key, limits)
    store.put(bucket, summary_key, summary)
    first = max(state.analyses) + 1
    base_time = _t("2023-01-02T03:04:05.000006")
    for i in range(count):
        aid = first + i
        created = base_time + timedelta(minutes=7 * i)
        sample = samples[i % len(samples)]
        done = created + timedelta(minutes=4)
        state.add_analysis(
            name=f"qc batch {i + 1:05d}",
            status="completed",
            workflow=10,
            samples=[sample],
            tags=["qc"],
            params={"info": {"genome_id": state.samples[sample]["genome"]}, "node": {}},
            date_created=created,
            started_on=created + timedelta(seconds=30),
            completed_on=done,
            last_updated=done + timedelta(seconds=1),
            analysis_id=aid,
        )
        state.add_file(aid, summary_key, ["fastqc", "text"], len(summary), "fastqc", done)
        state.add_file(aid, limits_key, ["reference", "text"], len(limits), "qc", done)
