"""The emulator's REST API over real HTTP: both dialects, pagination, writes, faults, the demo account.

Why: every filesystem test trusts the emulator to speak Basepair's wire formats
(docs/basepair-api.md §3, §4, §12). These tests pin those formats down so that a bpfs
bug is never masked by an emulator that is lenient or wrong in the same way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from bpfs.emulator import Emulator
from bpfs.emulator.account import (
    DEMO_API_KEY,
    DEMO_BUCKET,
    DEMO_USERNAME,
    SEED_GENOMES,
    AccountState,
    add_extra_analyses,
    build_demo_account,
)

V1_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
V3_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def emu(request: pytest.FixtureRequest) -> Emulator:
    emulator = Emulator(big_file_mib=3, bam_reads=4000)
    request.addfinalizer(emulator.stop)
    return emulator.start()


@pytest.fixture(scope="module")
def http() -> requests.Session:
    session = requests.Session()
    yield session
    session.close()


@pytest.fixture(autouse=True)
def _clean_faults(emu: Emulator) -> None:
    emu.faults_api.clear()
    yield
    emu.faults_api.clear()


def auth(emu: Emulator, **params: Any) -> dict[str, Any]:
    return {"username": emu.username, "api_key": emu.api_key, **params}


def call(
    http: requests.Session, emu: Emulator, method: str, path: str, body: Any = None, **params: Any
) -> requests.Response:
    return http.request(method, emu.api_url + path, params=auth(emu, **params), json=body, timeout=10)


def get(http: requests.Session, emu: Emulator, path: str, **params: Any) -> Any:
    response = call(http, emu, "GET", path, **params)
    assert response.status_code == 200, response.text
    return response.json()


def list_all(http: requests.Session, emu: Emulator, dialect: str, resource: str, page: int = 100) -> list[dict]:
    """Page like the v3 client: until the collected objects reach total_count."""
    objects: list[dict] = []
    offset = 0
    while True:
        body = get(http, emu, f"api/{dialect}/{resource}", limit=page, offset=offset)
        objects += body["objects"]
        if len(objects) >= body["meta"]["total_count"] or not body["objects"]:
            return objects
        offset += page


# ---------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("dialect", ["v1", "v3"])
@pytest.mark.parametrize(
    "params",
    [{}, {"username": DEMO_USERNAME}, {"username": DEMO_USERNAME, "api_key": "wrong"},
     {"username": "eve@example.org", "api_key": DEMO_API_KEY}, {"api_key": DEMO_API_KEY}],
)
def test_bad_credentials_answer_401_with_an_error_body(
    emu: Emulator, http: requests.Session, dialect: str, params: dict[str, str]
) -> None:
    response = http.get(f"{emu.api_url}api/{dialect}/samples", params=params, timeout=10)
    assert response.status_code == 401
    assert response.json()["errors"][0]["detail"]


def test_repeated_and_unknown_params_are_ignored(emu: Emulator, http: requests.Session) -> None:
    # the v1 client can send username twice and leak filters; v3 adds view=sdk
    query = f"username={DEMO_USERNAME}&api_key={DEMO_API_KEY}&username={DEMO_USERNAME}&view=sdk&bogus=1"
    response = http.get(f"{emu.api_url}api/v3/genomes?{query}", timeout=10)
    assert response.status_code == 200
    assert response.json()["meta"]["total_count"] == 23


def test_users_lookup_like_both_clients(emu: Emulator, http: requests.Session) -> None:
    v1 = get(http, emu, "api/v1/users/", username=emu.username)
    v3 = get(http, emu, "api/v3/users", limit=1, username=emu.username)
    assert v1["objects"][0]["id"] == v3["objects"][0]["id"] == 7 == emu.user_id
    assert v1["objects"][0]["resource_uri"] == "/api/v1/users/7"
    assert get(http, emu, "api/v3/users/7")["username"] == DEMO_USERNAME
    assert "api_key" not in json.dumps(v1) + json.dumps(v3)


# ---------------------------------------------------------------------------------------------- lists


@pytest.mark.parametrize("dialect", ["v1", "v3"])
def test_list_envelope_and_pagination(emu: Emulator, http: requests.Session, dialect: str) -> None:
    first = get(http, emu, f"api/{dialect}/genomes", limit=5, offset=0)
    assert set(first) == {"meta", "objects"}
    assert set(first["meta"]) == {"limit", "offset", "total_count", "next", "previous"}
    assert first["meta"]["total_count"] == 23 and first["meta"]["limit"] == 5
    assert [g["id"] for g in first["objects"]] == [1, 2, 3, 4, 5]
    assert first["meta"]["previous"] is None and "offset=5" in first["meta"]["next"]
    assert DEMO_API_KEY not in first["meta"]["next"]

    last = get(http, emu, f"api/{dialect}/genomes", limit=5, offset=20)
    assert [g["id"] for g in last["objects"]] == [21, 22, 23]
    assert last["meta"]["next"] is None and last["meta"]["total_count"] == 23

    past = get(http, emu, f"api/{dialect}/genomes", limit=5, offset=500)
    assert past["objects"] == [] and past["meta"]["total_count"] == 23

    everything = get(http, emu, f"api/{dialect}/genomes", limit=0)
    assert len(everything["objects"]) == 23 and everything["meta"]["next"] is None

    default = get(http, emu, f"api/{dialect}/genomes")
    assert default["meta"]["limit"] == 20 and len(default["objects"]) == 20  # Tastypie's default page


@pytest.mark.parametrize("dialect", ["v1", "v3"])
def test_paging_through_every_collection_is_consistent(emu: Emulator, http: requests.Session, dialect: str) -> None:
    for resource in ("genomes", "samples", "analyses", "uploads", "users"):
        small_pages = list_all(http, emu, dialect, resource, page=2)
        one_page = get(http, emu, f"api/{dialect}/{resource}", limit=0)
        assert len(small_pages) == one_page["meta"]["total_count"] == len(one_page["objects"])
        assert [o["id"] for o in small_pages] == [o["id"] for o in one_page["objects"]]
        assert len({o["id"] for o in small_pages}) == len(small_pages)


def test_bad_pagination_params_are_400(emu: Emulator, http: requests.Session) -> None:
    assert call(http, emu, "GET", "api/v3/samples", limit="ten").status_code == 400
    assert call(http, emu, "GET", "api/v3/samples", offset=-1).status_code == 400


def test_genome_table_matches_the_seed(emu: Emulator, http: requests.Session) -> None:
    v1 = get(http, emu, "api/v1/genomes", limit=0)["objects"]
    v3 = get(http, emu, "api/v3/genomes", limit=0)["objects"]
    assert [(g["id"], g["name"], g["date_created"]) for g in v1] == list(SEED_GENOMES)
    assert [(g["id"], g["name"], g["created_on"]) for g in v3] == [(i, n, d + "Z") for i, n, d in SEED_GENOMES]
    assert v1[0] == {"id": 1, "name": "hg19", "date_created": "2018-04-18T14:58:15.865993",
                     "resource_uri": "/api/v1/genomes/1"}


def test_workflows_on_v1_are_pipelines_on_v3(emu: Emulator, http: requests.Session) -> None:
    v1 = get(http, emu, "api/v1/workflows", limit=0)["objects"]
    v3 = get(http, emu, "api/v3/pipelines/", limit=0)["objects"]
    assert [w["id"] for w in v1] == [w["id"] for w in v3] == [7, 8, 9, 10]
    rna = get(http, emu, "api/v3/pipelines/7")
    assert rna["name"] == "RNA-Seq expression (STAR)" and rna["datatype"] == "rna-seq"
    assert rna["tags"] == ["alignment"] and rna["description"]
    assert get(http, emu, "api/v1/workflows/7/")["resource_uri"] == "/api/v1/workflows/7"
    assert {w["datatype"] for w in v3} == {"rna-seq", "dna-seq", "chip-seq", "other"}


def test_v1_bare_lists(emu: Emulator, http: requests.Session) -> None:
    emu.api.v1_bare_lists = True
    try:
        for resource in ("genomes", "workflows", "samples", "analyses"):
            body = get(http, emu, f"api/v1/{resource}", limit=2)
            assert isinstance(body, list)
            full = get(http, emu, f"api/v3/{'pipelines' if resource == 'workflows' else resource}", limit=0)
            assert len(body) == full["meta"]["total_count"]  # the whole collection, limit ignored
        assert isinstance(get(http, emu, "api/v1/users", username=emu.username), dict)  # users keep the envelope
        assert isinstance(get(http, emu, "api/v3/genomes"), dict)  # v3 never bare
        named = get(http, emu, "api/v1/samples", name="liver_rep1")
        assert [s["id"] for s in named] == [10001]
    finally:
        emu.api.v1_bare_lists = False
    assert isinstance(get(http, emu, "api/v1/genomes"), dict)


def test_filters(emu: Emulator, http: requests.Session) -> None:
    for dialect in ("v1", "v3"):
        named = get(http, emu, f"api/{dialect}/samples", name="brain cortex (rep 1)")
        assert [s["id"] for s in named["objects"]] == [10004]
        assert get(http, emu, f"api/{dialect}/samples", name="nope")["meta"]["total_count"] == 0
    by_sample = get(http, emu, "api/v3/uploads", sample=10001, limit=0)["objects"]
    assert [u["key"] for u in by_sample] == ["uploads/7/10001/liver_rep1_R1.fastq.gz",
                                             "uploads/7/10001/liver_rep1_R2.fastq.gz"]
    by_uri = get(http, emu, "api/v1/uploads", sample="/api/v1/samples/10001", limit=0)["objects"]
    assert [u["id"] for u in by_uri] == [u["id"] for u in by_sample]
    assert get(http, emu, "api/v3/uploads", uri="ftp://nowhere/x.fq", limit=2)["objects"] == []


# ---------------------------------------------------------------------------------------------- dialects


def test_v1_foreign_keys_are_uris_and_times_are_naive(emu: Emulator, http: requests.Session) -> None:
    sample = get(http, emu, "api/v1/samples/10001")
    assert sample["resource_uri"] == "/api/v1/samples/10001"
    assert sample["genome"] == "hg19" and "genome_name" not in sample
    assert sample["owner"] == "/api/v1/users/7"
    assert sample["analyses"] == ["/api/v1/analyses/10000"]
    assert V1_TIME.match(sample["date_created"]) and sample["date_created"] == "2024-03-05T14:07:31.123456"
    assert [u["sample"] for u in sample["uploads"]] == ["/api/v1/samples/10001"] * 2
    analysis = get(http, emu, "api/v1/analyses/10000")
    assert analysis["workflow"] == "/api/v1/workflows/7"
    assert analysis["samples"] == ["/api/v1/samples/10001"]
    assert analysis["params"]["info"]["genome"] == "hg19" and "genome_id" not in analysis["params"]["info"]
    for key in ("date_created", "started_on", "completed_on", "last_updated"):
        assert V1_TIME.match(analysis[key]), analysis[key]
    for f in analysis["files"]:
        assert f["resource_uri"] == f"/api/v1/files/{f['id']}" and V1_TIME.match(f["last_updated"])
    every_uri = re.findall(r'"(/api/v1/[^"]*)"', json.dumps([sample, analysis]))
    assert every_uri and not [u for u in every_uri if u.endswith("/")]


def test_v3_foreign_keys_are_ids_and_times_end_in_z(emu: Emulator, http: requests.Session) -> None:
    sample = get(http, emu, "api/v3/samples/10001")
    assert "resource_uri" not in sample
    assert sample["genome"] == 1 and sample["genome_name"] == "hg19"
    assert sample["owner"] == 7 and sample["analyses"] == [10000]
    assert sample["date_created"] == "2024-03-05T14:07:31.123456Z"
    analysis = get(http, emu, "api/v3/analyses/10000")
    assert analysis["workflow"] == 7
    assert analysis["samples"] == [{"id": 10001, "name": "liver_rep1"}]
    assert analysis["params"]["info"]["genome_id"] == 1
    for key in ("date_created", "started_on", "completed_on", "last_updated"):
        assert V3_TIME.match(analysis[key]), analysis[key]
    assert all(V3_TIME.match(f["last_updated"]) for f in analysis["files"])
    assert "/api/" not in json.dumps(sample) + json.dumps(analysis)


@pytest.mark.parametrize("dialect", ["v1", "v3"])
@pytest.mark.parametrize("path", ["analyses/10000", "analyses/10000/", "samples", "samples/", "genomes/1/"])
def test_trailing_slash_or_not(emu: Emulator, http: requests.Session, dialect: str, path: str) -> None:
    assert call(http, emu, "GET", f"api/{dialect}/{path}").status_code == 200


def test_analysis_list_has_no_files_but_detail_does(emu: Emulator, http: requests.Session) -> None:
    for dialect in ("v1", "v3"):
        listed = {a["id"]: a for a in get(http, emu, f"api/{dialect}/analyses", limit=0)["objects"]}
        assert {10000, 10001, 10002, 10003, 10004} <= set(listed)
        for analysis in listed.values():
            assert "files" not in analysis
            detail = get(http, emu, f"api/{dialect}/analyses/{analysis['id']}")
            assert len(detail["files"]) == analysis["meta"]["num_files"] == detail["meta"]["num_files"]
    statuses = {a["id"]: a["status"] for a in get(http, emu, "api/v3/analyses", limit=0)["objects"]}
    assert statuses[10000] == statuses[10001] == "completed"
    assert statuses[10002] == "running" and statuses[10003] == "error"
    assert get(http, emu, "api/v3/analyses/10002")["completed_on"] is None


def test_analysis_10000_files(emu: Emulator, http: requests.Session) -> None:
    files = get(http, emu, "api/v3/analyses/10000")["files"]
    by_path = {f["path"].removeprefix("analyses/7/10000/"): f for f in files}
    assert all(f["path"].startswith("analyses/7/10000/") for f in files)
    assert by_path["star/liver_rep1.bam"]["tags"] == ["bam", "dedup"]
    assert by_path["star/liver_rep1.bam.bai"]["tags"] == ["bai"]
    assert by_path["star/liver_rep1.bigwig"]["tags"] == ["bigwig"]
    assert by_path["star/liver_rep1.bigwig"]["filesize"] == 3 * 1024 * 1024
    for mate in ("R1", "R2"):
        assert by_path[f"fastqc/liver_rep1_{mate}_fastqc.html"]["tags"] == ["fastqc", "html"]
        assert by_path[f"fastqc/liver_rep1_{mate}_fastqc.zip"]["tags"] == ["fastqc", "zip"]
    assert by_path["metrics/rnaseq_metrics.json"]["tags"] == ["rnaseq_metrics", "json"]
    counts = by_path["counts/liver_rep1.genes.txt"]
    assert counts["tags"] == ["expression_count", "by_gene", "text"] and counts["filesize"] is None
    assert by_path["star/summary.txt"]["tags"] == by_path["counts/summary.txt"]["tags"] == ["summary", "text"]
    assert by_path["logs/pipeline.log"]["tags"] is None
    assert any(f["tags"] == [] for f in files)
    assert min(f["id"] for f in files) == 70001
    for f in files:
        assert f["node"] and f["source"] and f["last_updated"]
    assert get(http, emu, "api/v3/files/70001") == files[0]
    assert get(http, emu, "api/v1/files/70001/")["analysis"] == "/api/v1/analyses/10000"


def test_analysis_10001_bucket_and_s3_uri(emu: Emulator, http: requests.Session) -> None:
    analysis = get(http, emu, "api/v3/analyses/10001")
    assert analysis["params"]["info"]["bucket"] == emu.bucket
    tags = {tuple(f["tags"]) for f in analysis["files"]}
    assert {("vcf", "gz"), ("tbi",), ("bam", "dedup"), ("bai",)} <= tags
    assert [f for f in analysis["files"] if f["path"].startswith(f"s3://{emu.bucket}/")]


def test_an_analysis_with_keys_outside_its_prefix(emu: Emulator, http: requests.Session) -> None:
    outliers = []
    for analysis in get(http, emu, "api/v3/analyses", limit=0)["objects"]:
        files = get(http, emu, f"api/v3/analyses/{analysis['id']}")["files"]
        prefix = f"analyses/7/{analysis['id']}/"
        if not all(f["path"].startswith(prefix) or f["path"].startswith(f"s3://{emu.bucket}/{prefix}") for f in files):
            outliers.append(analysis["id"])
    assert outliers == [10004]


def test_samples_of_the_demo_account(emu: Emulator, http: requests.Session) -> None:
    samples = {s["name"]: s for s in get(http, emu, "api/v3/samples", limit=0)["objects"]}
    assert samples["liver_rep1"]["id"] == 10001
    for name in ("liver_rep1", "liver_rep2"):
        uploads = samples[name]["uploads"]
        assert [(u["order"], u["is_paired_end"]) for u in uploads] == [(0, False), (1, True)]
        assert [u["key"] for u in uploads] == [f"uploads/7/{samples[name]['id']}/{name}_R{i}.fastq.gz" for i in (1, 2)]
    assert len(samples["tumor_wgs"]["uploads"]) == 1 and samples["tumor_wgs"]["datatype"] == "dna-seq"
    brain = samples["brain cortex (rep 1)"]
    assert [u["is_paired_end"] for u in brain["uploads"]] == [False]
    assert [s for s in samples.values() if not s["uploads"]]
    every_upload = [u for s in samples.values() for u in s["uploads"]]
    assert all(u["status"] == "completed" for u in every_upload)
    assert [u["key"] for u in every_upload if u["filesize"] is None] == ["uploads/7/10002/liver_rep2_R2.fastq.gz"]


def test_every_object_exists_with_the_recorded_size(emu: Emulator, http: requests.Session) -> None:
    checked = 0
    for analysis in get(http, emu, "api/v3/analyses", limit=0)["objects"]:
        for f in get(http, emu, f"api/v3/analyses/{analysis['id']}")["files"]:
            key = f["path"].removeprefix(f"s3://{emu.bucket}/")
            assert emu.store.exists(emu.bucket, key), key
            size = emu.store.size(emu.bucket, key)
            assert size > 0
            if f["filesize"] is not None:
                assert size == f["filesize"], key
            checked += 1
    for upload in get(http, emu, "api/v3/uploads", limit=0)["objects"]:
        assert emu.store.exists(emu.bucket, upload["key"])
        if upload["filesize"] is not None:
            assert emu.store.size(emu.bucket, upload["key"]) == upload["filesize"]
    assert checked >= 25


def test_the_bam_is_a_bam(emu: Emulator) -> None:
    import gzip

    bam = emu.store.get_bytes(emu.bucket, "analyses/7/10000/star/liver_rep1.bam")
    assert gzip.decompress(bam)[:4] == b"BAM\x01"
    assert emu.store.get_bytes(emu.bucket, "analyses/7/10000/star/liver_rep1.bam.bai")[:4] == b"BAI\x01"
    assert emu.store.get_bytes(emu.bucket, "analyses/7/10001/gatk/tumor_wgs.vcf.gz.tbi")[:2] == b"\x1f\x8b"


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "path",
    ["api/v3/analyses/99999", "api/v1/samples/1", "api/v3/files/1", "api/v3/genomes/999/", "api/v3/nonsense",
     "api/v9/samples", "api/v3/samples/10001/extra/x", "api/v3/users/8", "favicon.ico"],
)
def test_unknown_things_are_404(emu: Emulator, http: requests.Session, path: str) -> None:
    response = call(http, emu, "GET", path)
    assert response.status_code == 404
    assert response.json()["errors"][0]["detail"]


def test_unsupported_methods_are_405(emu: Emulator, http: requests.Session) -> None:
    assert call(http, emu, "DELETE", "api/v3/genomes/1").status_code == 405
    assert call(http, emu, "PUT", "api/v3/samples", {}).status_code == 405


# ---------------------------------------------------------------------------------------------- writes


def test_v1_sample_and_upload_lifecycle(emu: Emulator, http: requests.Session) -> None:
    response = call(http, emu, "POST", "api/v1/samples",
                    {"name": "v1 sample", "genome": "mm10", "datatype": "chip-seq",
                     "filepaths1": ["/data/a_R1.fq.gz"], "default_workflow": "/api/v1/workflows/9"})
    assert response.status_code == 201, response.text
    location = response.headers["Location"]
    assert location.startswith(emu.api_url + "api/v1/samples/") and not location.endswith("/")
    sample_id = int(location.rsplit("/", 1)[1])
    assert response.json()["id"] == sample_id
    sample = get(http, emu, f"api/v1/samples/{sample_id}")
    assert sample["genome"] == "mm10" and sample["datatype"] == "chip-seq"
    assert sample["default_workflow"] == "/api/v1/workflows/9" and sample["uploads"] == []

    key = f"uploads/7/{sample_id}/a_R1.fq.gz"
    response = call(http, emu, "POST", "api/v1/uploads",
                    {"sample": f"{emu.api_url}api/v1/samples/{sample_id}", "key": key, "filesize": 0,
                     "status": "in_progress", "order": 0, "is_paired_end": False, "source": "cli"})
    assert response.status_code == 201, response.text
    upload_id = int(response.headers["Location"].rsplit("/", 1)[1])
    emu.store.put(emu.bucket, key, b"@r1\nACGT\n+\nIIII\n")
    response = call(http, emu, "PUT", f"api/v1/uploads/{upload_id}",
                    {"filesize": 16, "status": "completed", "timetaken": 1, "seq_length": 0})
    assert response.status_code == 204 and response.content == b""
    upload = get(http, emu, f"api/v1/uploads/{upload_id}")
    assert (upload["filesize"], upload["status"], upload["sample"]) == (16, "completed", f"/api/v1/samples/{sample_id}")

    response = call(http, emu, "PUT", f"api/v1/samples/{sample_id}", {"name": "v1 sample renamed", "genome": "hg19"})
    assert response.status_code == 204
    sample = get(http, emu, f"api/v1/samples/{sample_id}")
    assert sample["name"] == "v1 sample renamed" and sample["genome"] == "hg19"
    assert [u["id"] for u in sample["uploads"]] == [upload_id]

    assert call(http, emu, "DELETE", f"api/v1/samples/{sample_id}").status_code == 204
    assert call(http, emu, "GET", f"api/v1/samples/{sample_id}").status_code == 404
    assert call(http, emu, "GET", f"api/v1/uploads/{upload_id}").status_code == 404
    assert not emu.store.exists(emu.bucket, key)
    assert call(http, emu, "DELETE", f"api/v1/samples/{sample_id}").status_code == 404


def test_v3_sample_and_upload_lifecycle(emu: Emulator, http: requests.Session) -> None:
    response = call(http, emu, "POST", "api/v3/samples/",
                    {"name": "paired new", "genome": 2, "platform": "illumina", "default_workflow": 7,
                     "projects": [3], "meta": {"source": "cli"}, "info": {"stranded": "reverse"}})
    assert response.status_code == 201, response.text
    sample = response.json()
    sample_id = sample["id"]
    assert response.headers["Location"] == f"{emu.api_url}api/v3/samples/{sample_id}"
    assert sample["genome"] == 2 and sample["genome_name"] == "mm10" and sample["datatype"] == "rna-seq"
    assert V3_TIME.match(sample["date_created"])

    keys = [f"uploads/7/{sample_id}/paired_new_R{i}.fastq.gz" for i in (1, 2)]
    upload_ids = []
    for order, key in enumerate(keys):
        response = call(http, emu, "POST", "api/v3/uploads/",
                        {"sample": sample_id, "key": key, "filesize": 10, "status": "in_progress",
                         "order": order, "is_paired_end": order == 1, "source": "cli", "uri": None})
        assert response.status_code == 201, response.text
        assert response.json()["sample"] == sample_id and response.json()["status"] == "in_progress"
        upload_ids.append(response.json()["id"])
        emu.store.put(emu.bucket, key, b"0123456789")
    response = call(http, emu, "PUT", f"api/v3/uploads/{upload_ids[0]}/",
                    {"filesize": 10, "status": "completed", "timetaken": 2, "seq_length": 0, "key": keys[0]})
    assert response.status_code == 200 and response.json()["status"] == "completed"
    response = call(http, emu, "PUT", f"api/v3/uploads/{upload_ids[1]}/", {"status": "failed"})
    assert response.status_code == 200 and response.json()["status"] == "failed"

    listed = get(http, emu, "api/v3/samples", name="paired new")["objects"]
    assert [(u["order"], u["is_paired_end"], u["status"]) for u in listed[0]["uploads"]] == [
        (0, False, "completed"), (1, True, "failed")]

    signed = call(http, emu, "POST", "api/v3/samples/sign/", {"sample_id": sample_id})
    assert signed.status_code == 200
    urls = signed.json()["signed_urls"]
    assert [u.split("?")[0] for u in urls] == [f"{emu.s3_url}/{emu.bucket}/{k}" for k in keys]
    assert all("X-Amz-Signature=" in u for u in urls)

    response = call(http, emu, "PUT", f"api/v3/samples/{sample_id}/", {"genome": None, "datatype": "atac-seq"})
    assert response.status_code == 200
    assert (response.json()["genome"], response.json()["datatype"]) == (None, "atac-seq")

    assert call(http, emu, "DELETE", f"api/v3/samples/{sample_id}").status_code == 204
    assert not any(emu.store.exists(emu.bucket, k) for k in keys)
    assert get(http, emu, "api/v3/uploads", sample=sample_id)["meta"]["total_count"] == 0


def test_minimal_sample_and_upload_delete(emu: Emulator, http: requests.Session) -> None:
    response = call(http, emu, "POST", "api/v3/samples", {"name": "only a name", "genome": None})
    assert response.status_code == 201
    sample = response.json()
    assert sample["datatype"] == "rna-seq" and sample["genome"] is None and sample["genome_name"] is None
    response = call(http, emu, "POST", "api/v3/uploads", {"sample": sample["id"], "key": "uploads/7/x/y.fq"})
    upload = response.json()
    assert response.status_code == 201 and upload["order"] == 0 and upload["status"] == "in_progress"
    assert call(http, emu, "DELETE", f"api/v3/uploads/{upload['id']}").status_code == 204
    assert get(http, emu, f"api/v3/samples/{sample['id']}")["uploads"] == []
    assert call(http, emu, "DELETE", f"api/v3/samples/{sample['id']}/").status_code == 204


@pytest.mark.parametrize(
    ("path", "body"),
    [("api/v3/samples/", {"datatype": "rna-seq"}), ("api/v3/samples/", {"name": ""}),
     ("api/v3/samples/", {"name": "x", "genome": 999}), ("api/v1/samples", {"name": "x", "genome": "hg99"}),
     ("api/v3/samples/", {"name": "x", "info": "not a dict"}), ("api/v3/samples/", [1, 2]),
     ("api/v3/uploads/", {"key": "uploads/7/1/a.fq"}), ("api/v3/uploads/", {"sample": 424242, "key": "k"}),
     ("api/v3/uploads/", {"sample": 10001, "key": "k", "status": "weird"}),
     ("api/v3/samples/sign/", {}), ("api/v1/uploads", {"sample": "/api/v1/samples/abc", "key": "k"})],
)
def test_bad_bodies_are_400(emu: Emulator, http: requests.Session, path: str, body: Any) -> None:
    before = get(http, emu, "api/v3/samples", limit=0)["meta"]["total_count"]
    response = call(http, emu, "POST", path, body)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["detail"]
    assert get(http, emu, "api/v3/samples", limit=0)["meta"]["total_count"] == before


def test_malformed_json_is_400(emu: Emulator, http: requests.Session) -> None:
    response = http.post(f"{emu.api_url}api/v3/samples/", params=auth(emu), data=b"{nope",
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400 and response.json()["errors"][0]["detail"]
    assert call(http, emu, "PUT", "api/v3/uploads/9001/", {"filesize": "big"}).status_code == 400
    assert call(http, emu, "PUT", "api/v3/uploads/1/", {"filesize": 1}).status_code == 404
    assert call(http, emu, "POST", "api/v3/samples/sign/", {"sample_id": 1}).status_code == 404


# ---------------------------------------------------------------------------------------------- configuration


def test_get_configuration_points_at_the_local_s3(emu: Emulator, http: requests.Session) -> None:
    config = get(http, emu, "api/v3/users/get_configuration", origin="cli")
    user = config["storage"]["user"]
    assert user["settings"] == {"bucket": DEMO_BUCKET, "region": "us-east-1", "endpoint_url": emu.s3_url}
    assert user["credentials"] == {"id": "AKIADEMO00000000000", "secret": "demo/secret/0000000000000000000000000"}
    assert get(http, emu, "api/v3/users/get_configuration/") == config


def test_config_files(emu: Emulator, tmp_path: Path) -> None:
    v1 = emu.config_v1()
    assert v1["api"] == {"host": emu.api_url, "prefix": "api/v1/", "username": DEMO_USERNAME, "api_key": DEMO_API_KEY}
    assert v1["api"]["host"].endswith("/") and v1["aws"]["endpoint_url"] == emu.s3_url
    assert v1["aws"]["s3"] == {"bucket": DEMO_BUCKET, "region": "us-east-1"}
    v3 = emu.config_v3()
    assert v3["api_v3"]["host"] == emu.api_url.removeprefix("http://").rstrip("/")
    assert v3["api_v3"]["prefix"] == "/api/v3/" and v3["api_v3"]["ssl"] is False and v3["api_v3"]["key"] == DEMO_API_KEY
    assert v3["storage"]["user"]["settings"]["endpoint_url"] == emu.s3_url
    cli = emu.config_v3(cli=True)
    assert cli["api_v3"]["cli"] is True and "storage" not in cli
    for dialect in ("v1", "v3", "v3-cli"):
        path = emu.write_config(tmp_path / "sub" / f"{dialect}.json", dialect)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text()) == {"v1": v1, "v3": v3, "v3-cli": cli}[dialect]
    with pytest.raises(ValueError):
        emu.write_config(tmp_path / "x.json", "v2")
    # the v1 base URL is the plain concatenation host + prefix (basepair-api.md §1.1)
    response = requests.get(v1["api"]["host"] + v1["api"]["prefix"] + "genomes",
                            params={"username": DEMO_USERNAME, "api_key": DEMO_API_KEY}, timeout=10)
    assert response.status_code == 200


def test_signed_urls_fetch_the_raw_files_from_the_local_s3(emu: Emulator, http: requests.Session) -> None:
    for sample_id in (10001, 10004):  # 10004's key has spaces and parentheses
        urls = call(http, emu, "POST", "api/v3/samples/sign/", {"sample_id": sample_id}).json()["signed_urls"]
        uploads = get(http, emu, f"api/v3/samples/{sample_id}")["uploads"]
        assert len(urls) == len(uploads)
        for url, upload in zip(urls, uploads, strict=True):
            response = http.get(url, timeout=10)
            assert response.status_code == 200
            assert response.content == emu.store.get_bytes(emu.bucket, upload["key"])


def test_boto3_with_the_config_credentials_reads_analysis_files(emu: Emulator) -> None:
    import boto3
    from botocore.config import Config

    storage = emu.config_v3()["storage"]["user"]
    s3 = boto3.client(
        "s3", endpoint_url=storage["settings"]["endpoint_url"], region_name=storage["settings"]["region"],
        aws_access_key_id=storage["credentials"]["id"], aws_secret_access_key=storage["credentials"]["secret"],
        config=Config(retries={"max_attempts": 1}),
    )
    key = "analyses/7/10000/star/liver_rep1.bam"
    head = s3.head_object(Bucket=emu.bucket, Key=key)
    assert head["ContentLength"] == emu.store.size(emu.bucket, key)
    part = s3.get_object(Bucket=emu.bucket, Key=key, Range="bytes=0-99")["Body"].read()
    assert part == emu.store.get_bytes(emu.bucket, key)[:100]
    counts = s3.head_object(Bucket=emu.bucket, Key="analyses/7/10000/counts/liver_rep1.genes.txt")
    assert counts["ContentLength"] > 0  # the record's filesize is null; S3 knows


# ---------------------------------------------------------------------------------------------- faults, stats


def test_fault_status_then_healthy(emu: Emulator, http: requests.Session) -> None:
    rule = emu.faults_api.add(method="GET", path=r"/analyses/10000$", status=503, code="Slow down", times=2)
    for _ in range(2):
        response = call(http, emu, "GET", "api/v3/analyses/10000")
        assert response.status_code == 503 and response.json() == {"errors": [{"detail": "Slow down"}]}
    assert call(http, emu, "GET", "api/v3/analyses/10000").status_code == 200
    assert rule.hits == 2
    emu.faults_api.add(path="/samples", status=500)
    response = call(http, emu, "GET", "api/v3/samples")
    assert response.status_code == 500 and response.json()["errors"][0]["detail"]


def test_fault_delay(emu: Emulator, http: requests.Session) -> None:
    emu.faults_api.add(path="/genomes", delay=0.4)
    start = time.monotonic()
    assert call(http, emu, "GET", "api/v3/genomes").status_code == 200
    assert time.monotonic() - start >= 0.4
    start = time.monotonic()
    assert call(http, emu, "GET", "api/v3/genomes").status_code == 200
    assert time.monotonic() - start < 0.4


def test_fault_drop_after(emu: Emulator, http: requests.Session) -> None:
    emu.faults_api.add(path="/analyses/10000", drop_after=10)
    with pytest.raises(requests.exceptions.RequestException):
        call(http, emu, "GET", "api/v3/analyses/10000").json()
    assert call(http, emu, "GET", "api/v3/analyses/10000").status_code == 200


def test_stats_and_request_log(emu: Emulator, http: requests.Session) -> None:
    emu.api.reset_stats()
    get(http, emu, "api/v3/analyses", limit=5)
    get(http, emu, "api/v1/analyses/10000")
    get(http, emu, "api/v3/samples/10001/")
    call(http, emu, "GET", "api/v3/samples", api_key="wrong")
    stats = emu.api.stats
    assert stats["requests"] == 4 and stats["GET analyses"] == 2 and stats["GET samples"] == 2
    log = emu.api.requests_log
    assert [(m, p) for m, p, _ in log][:2] == [("GET", "/api/v3/analyses"), ("GET", "/api/v1/analyses/10000")]
    assert "limit=5" in log[0][2]
    assert DEMO_API_KEY not in repr(log) and "api_key" not in repr(log)
    emu.api.reset_stats()
    assert emu.api.stats == {} and emu.api.requests_log == []


def test_concurrent_requests_on_keep_alive_connections(emu: Emulator) -> None:
    def worker(n: int) -> int:
        with requests.Session() as session:
            return sum(len(get(session, emu, "api/v3/analyses/10000")["files"]) for _ in range(5))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(16)))
    assert len(set(results)) == 1 and results[0] > 0


# ---------------------------------------------------------------------------------------------- building accounts


class _MemoryStore:
    """Just enough of ObjectStore to time and compare account builds without a disk."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def create_bucket(self, bucket: str) -> None:
        pass

    def put(self, bucket: str, key: str, data: bytes, storage_class: str = "STANDARD") -> None:
        self.objects[bucket, key] = bytes(data)

    def exists(self, bucket: str, key: str) -> bool:
        return (bucket, key) in self.objects

    def size(self, bucket: str, key: str) -> int:
        return len(self.objects[bucket, key])

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.objects[bucket, key]

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))


def _records(state: AccountState) -> dict[str, Any]:
    return {t: state.table(t) for t in ("users", "genomes", "workflows", "samples", "uploads", "analyses", "files")}


def test_the_account_is_deterministic() -> None:
    stores = [_MemoryStore(), _MemoryStore()]
    states = [build_demo_account(s, big_file_mib=1, bam_reads=500) for s in stores]
    assert _records(states[0]) == _records(states[1])
    assert stores[0].objects == stores[1].objects


def test_5000_extra_analyses_are_fast_to_build(tmp_path: Path) -> None:
    from bpfs.emulator.s3server import ObjectStore

    store = ObjectStore(tmp_path / "s3")
    state = build_demo_account(store, big_file_mib=1, bam_reads=500)
    before = len(state.analyses)
    start = time.perf_counter()
    add_extra_analyses(state, store, DEMO_BUCKET, 5000, [10001, 10002, 10003, 10004])
    assert time.perf_counter() - start < 2.0
    assert len(state.analyses) == before + 5000


def test_an_account_with_5000_extra_analyses_lists_them_all(tmp_path: Path) -> None:
    with Emulator(tmp_path / "data", extra_analyses=5000, big_file_mib=1, bam_reads=500) as emulator:
        with requests.Session() as session:
            first = get(session, emulator, "api/v3/analyses", limit=100)
            assert first["meta"]["total_count"] == 5005 and len(first["objects"]) == 100
            every = list_all(session, emulator, "v3", "analyses", page=1000)
            assert len(every) == 5005 and len({a["id"] for a in every}) == 5005
            last = get(session, emulator, f"api/v3/analyses/{every[-1]['id']}")
            assert last["status"] == "completed" and len(last["files"]) == 2
            for f in last["files"]:
                assert emulator.store.size(emulator.bucket, f["path"]) == f["filesize"]
            v1 = get(session, emulator, "api/v1/analyses", limit=0)
            assert v1["meta"]["total_count"] == 5005


def test_emulator_lifecycle_over_a_kept_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Emulator(data, big_file_mib=1, bam_reads=500).start()
    url = first.api_url
    files = first.state.files
    blobs = {f["id"]: first.store.get_bytes(first.bucket, f["path"]) for f in files.values() if "://" not in f["path"]}
    first.stop()
    first.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "api/v3/genomes", timeout=2)
    with Emulator(data, big_file_mib=1, bam_reads=500) as second:  # a restart over the same dir
        assert second.state.files == files
        for file_id, blob in blobs.items():
            assert second.store.get_bytes(second.bucket, files[file_id]["path"]) == blob
    assert data.exists()  # a caller's data dir is kept


def test_temp_data_dir_is_removed_on_stop() -> None:
    emulator = Emulator(big_file_mib=1, bam_reads=500).start()
    temp = emulator._temp_dir
    assert temp is not None and temp.exists()
    emulator.stop()
    assert not temp.exists()


def test_python_dash_m_runs_in_the_foreground(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpfs.emulator", "--dir", str(tmp_path), "--big-file-mib", "1", "--bam-reads", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any("Ctrl-C" in line for line in lines), "".join(lines) + proc.stderr.read()
        config = json.loads((tmp_path / "config-v1.json").read_text())
        assert json.loads((tmp_path / "config-v3.json").read_text())["api_v3"]["prefix"] == "/api/v3/"
        response = requests.get(config["api"]["host"] + "api/v1/genomes",
                                params={"username": DEMO_USERNAME, "api_key": DEMO_API_KEY}, timeout=10)
        assert response.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
