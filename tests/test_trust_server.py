"""Trust off the happy path, reads: a hostile or broken server, through real mounts.

One bad item costs that item; every name listed is reachable; an API error is an error, never an
empty directory; every wait and buffer is bounded; secrets stay out of everything a user reads.
Each broken reply is injected with the emulator's faults or reply transforms.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import stat
import subprocess
import threading
import time

import pytest

from tests.conftest import needs_fuse
from tests.helpers import MiB, make_file, unique

pytestmark = needs_fuse

ANALYSIS = 10000  # the demo's RNA-seq analysis: its counts file has no size in the API (a HEAD finds it)


@pytest.fixture
def emu():
    """An account of its own: these tests break its replies on purpose."""
    from bpfs.emulator import Emulator

    with Emulator(big_file_mib=1, bam_reads=300, extra_analyses=150) as emulator:
        yield emulator


def rewrite(emulator, path_regex: str, change, method: str = "GET") -> None:
    """Change the JSON of successful replies whose path matches."""
    import re

    def transform(m, path, params, status, payload):
        if m == method and status < 300 and re.search(path_regex, path):
            return change(payload, params)
        return payload

    emulator.api.transforms.append(transform)


def detail_files(payload: dict) -> list[dict]:
    return payload["files"]


# -- one bad item costs that item ---------------------------------------------------------------------------------
def test_a_size_s3_will_not_tell_costs_that_file_only(make_mount, emu):
    m = make_mount(emu=emu)
    emu.faults_s3.add(method="HEAD", path=r"liver_rep1\.genes\.txt$", status=403, times=None)
    top = m.path / "analyses" / str(ANALYSIS)
    assert "liver_rep1.genes.txt" in os.listdir(top / "all" / "counts")  # listed...
    with pytest.raises(OSError) as raised:
        os.stat(top / "all" / "counts" / "liver_rep1.genes.txt")
    assert raised.value.errno == errno.EIO  # ...and failing with its reason, not hidden and not empty
    assert (top / "bam" / "liver_rep1.bam").stat().st_size > 0  # the neighbours are whole
    out = m.workdir / "copy"
    result = subprocess.run(["cp", "-r", str(top / "all"), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "liver_rep1.genes.txt" in result.stderr
    assert (out / "star" / "liver_rep1.bam").stat().st_size == (top / "bam" / "liver_rep1.bam").stat().st_size
    assert m.stats()["bad_files"] >= 1
    assert "its size could not be read from S3" in m.log.read_text()


def test_heads_for_sizes_run_in_parallel(make_mount, emu):
    """20 files without sizes behind a 0.3 s HEAD each: listed in well under 20 x 0.3 s."""
    def unsized(payload, _params):
        for f in payload["files"]:
            f["filesize"] = None
        return payload

    rewrite(emu, rf"/analyses/{ANALYSIS}$", unsized)
    emu.faults_s3.add(method="HEAD", delay=0.3, times=None)
    m = make_mount(emu=emu)
    count = len(emu.state.analysis_file_ids(ANALYSIS))
    started = time.monotonic()
    sizes = [e.stat().st_size for e in os.scandir(m.path / "analyses" / str(ANALYSIS) / "all" / "star")]
    elapsed = time.monotonic() - started
    assert count >= 10 and all(sizes) and elapsed < count * 0.3 / 2


def test_a_malformed_record_costs_that_record_only(make_mount, emu):
    def corrupt_listing(payload, params):
        objects = payload["objects"]
        if params.get("offset") == "0":
            objects[1]["id"] = "not-a-number"  # unreachable: skipped
            objects[2]["status"] = {"weird": True}  # a wrong type: degraded, still listed
            objects.append({"name": "no id at all"})
            objects.append({"id": 0, "name": "zero"})
            objects.append({"id": -4, "name": "negative"})
        return payload

    def corrupt_detail(payload, _params):
        files = payload["files"]
        files[0]["tags"] = 42
        files[1]["filesize"] = "huge"
        files.append({"path": ["not", "a", "string"], "id": 999999})
        files.append("not even an object")
        return payload

    rewrite(emu, r"/analyses$", corrupt_listing)
    rewrite(emu, rf"/analyses/{ANALYSIS}$", corrupt_detail)
    m = make_mount(emu=emu)
    listed = os.listdir(m.path / "analyses")
    assert str(ANALYSIS) in listed and "0" not in listed and "-4" not in listed
    assert len([n for n in listed if n.isdigit()]) == len(emu.state.table("analyses")) - 1  # one skipped
    top = m.path / "analyses" / str(ANALYSIS)
    # the file whose tags were a number keeps its place in all/ (degraded: no tags), the others are whole
    assert (top / "all" / "star" / "liver_rep1.bam").stat().st_size > 0
    assert (top / "fastqc").is_dir() and os.listdir(top / "fastqc")
    assert m.stats()["bad_records"] >= 5
    assert "malformed" in m.log.read_text()


def test_every_listed_name_is_reachable(make_mount, emu):
    """Tags spelled like expressions, names cut at 255 bytes, names that already read `x~<id>.txt`."""
    long_name = "L" * 300 + ".fastq.gz"

    def awkward(payload, _params):
        files = payload["files"]
        files[0]["tags"] = ["a+b", "-neg", "x,y", "all", "analysis.json"]
        base = files[0]["path"].rsplit("/", 1)[0]
        new = [
            {"id": 880001, "path": f"{base}/one/{long_name}", "tags": ["dup"], "filesize": 10},
            {"id": 880002, "path": f"{base}/two/{long_name}", "tags": ["dup"], "filesize": 10},
            {"id": 880003, "path": f"{base}/a.txt", "tags": ["dup"], "filesize": 10},
            {"id": 880004, "path": f"{base}/x/a.txt", "tags": ["dup"], "filesize": 10},
            {"id": 880005, "path": f"{base}/y/a~880004.txt", "tags": ["dup"], "filesize": 10},
        ]
        files.extend(new)
        return payload

    rewrite(emu, rf"/analyses/{ANALYSIS}$", awkward)
    m = make_mount(emu=emu)
    top = m.path / "analyses" / str(ANALYSIS)
    listed = os.listdir(top)
    for tag in ("a+b", "-neg", "x,y"):
        assert tag in listed
        assert len(os.listdir(top / tag)) == 1, tag  # exactly the file carrying that literal tag
    for name in listed:
        os.stat(top / name)
    dup = os.listdir(top / "dup")
    assert len(dup) == len(set(dup)) == 5
    for name in dup:
        assert len(name.encode()) <= 255
        assert (top / "dup" / name).stat().st_size == 10


def test_a_listing_the_api_refuses_is_an_error_not_an_empty_directory(make_mount, emu):
    m = make_mount(emu=emu)
    emu.faults_api.add(method="GET", path=r"/samples$", status=404, times=None)
    with pytest.raises(OSError) as raised:
        os.listdir(m.path / "samples")
    assert raised.value.errno == errno.EIO
    result = subprocess.run(["ls", str(m.path / "samples")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_a_file_the_api_lists_but_s3_lacks_fails_loudly(make_mount, emu):
    def ghost(payload, _params):
        base = payload["files"][0]["path"].rsplit("/", 1)[0]
        payload["files"].append({"id": 770001, "path": f"{base}/ghost.txt", "tags": ["ghost"], "filesize": 100})
        payload["files"].append({"id": 770002, "path": f"{base}/ghost2.txt", "tags": ["ghost"], "filesize": None})
        return payload

    rewrite(emu, rf"/analyses/{ANALYSIS}$", ghost)
    m = make_mount(emu=emu)
    ghosts = m.path / "analyses" / str(ANALYSIS) / "ghost"
    assert sorted(os.listdir(ghosts)) == ["ghost.txt", "ghost2.txt"]
    for name in ("ghost.txt", "ghost2.txt"):
        with pytest.raises(OSError) as raised:
            (ghosts / name).read_bytes()
        assert raised.value.errno == errno.EIO
    result = subprocess.run(["cp", "-r", str(ghosts), str(m.workdir / "out")], capture_output=True, timeout=60)
    assert result.returncode != 0
    assert "missing from S3" in m.log.read_text()


# -- fresh after a write, no stall after a refresh -----------------------------------------------------------------
def test_a_listing_loaded_during_an_upload_does_not_hide_it(make_mount, tmp_path, emu):
    m = make_mount(emu=emu)
    name = unique("race")
    draft = m.path / "samples" / "new" / name
    draft.mkdir()
    make_file(tmp_path / "r_R1.fastq", 1000)
    subprocess.run(["cp", str(tmp_path / "r_R1.fastq"), str(draft)], check=True, timeout=60)
    sample_id = next(s["id"] for s in emu.state.table("samples").values() if s["name"] == name)
    slow = threading.Event()

    def late(payload, _params):  # this listing is made now and arrives 2 s later, after the upload below
        if slow.is_set():
            slow.clear()
            time.sleep(2)
        return payload

    rewrite(emu, r"/samples$", late)
    (m.path / ".bpfs" / "refresh").read_bytes()
    slow.set()
    lister = threading.Thread(target=lambda: os.listdir(m.path / "samples"))
    lister.start()
    time.sleep(0.5)
    make_file(tmp_path / "r_R2.fastq", 1000)
    subprocess.run(["cp", str(tmp_path / "r_R2.fastq"), str(draft)], check=True, timeout=60)
    lister.join(timeout=30)
    assert not lister.is_alive()
    assert "r_R2.fastq" in os.listdir(m.path / "samples" / str(sample_id))


def test_a_refresh_does_not_stall_lookups(make_mount, emu):
    m = make_mount(emu=emu)
    assert str(ANALYSIS) in os.listdir(m.path / "analyses")
    gate = threading.Event()

    def slow(payload, _params):
        if gate.is_set():
            time.sleep(3)
        return payload

    rewrite(emu, r"/analyses$", slow)
    gate.set()
    (m.path / ".bpfs" / "refresh").read_bytes()
    started = time.monotonic()
    os.stat(m.path / "analyses" / str(ANALYSIS) / "analysis.json")  # served from the previous listing
    assert time.monotonic() - started < 1.5
    gate.clear()


# -- every wait bounded ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["ignores_offset", "endless", "trickle_pages"])
def test_broken_paging_stops(make_mount, emu, how):
    counter = {"pages": 0}

    def broken(payload, params):
        counter["pages"] += 1
        offset = int(params.get("offset", 0))
        if how == "ignores_offset":  # always the first page
            payload["objects"] = payload["objects"] if offset == 0 else broken.first
            broken.first = payload["objects"] if offset == 0 else broken.first
        elif how == "endless":  # new records forever, a huge count
            payload["meta"]["total_count"] = 10**12
        else:  # one new record per page, a count that needs thousands of pages
            payload["objects"] = [dict(payload["objects"][0], id=900000 + offset)] if payload["objects"] else [
                {"id": 900000 + offset, "name": "x"}]
            payload["meta"]["total_count"] = 5000
        return payload

    broken.first = []
    rewrite(emu, r"/analyses$", broken)
    m = make_mount(emu=emu)
    started = time.monotonic()
    with pytest.raises(OSError) as raised:
        os.listdir(m.path / "analyses")
    assert raised.value.errno == errno.EIO
    assert time.monotonic() - started < 30 and counter["pages"] < 200
    assert "listing stopped" in m.log.read_text() or "claims" in m.log.read_text()


def test_a_stalled_s3_get_fails_within_the_bound_head_sees(make_mount, emu):
    m = make_mount(emu=emu, options=("s3_timeout=2",))
    bound = 3 * (5 + 2)  # the README's: 3 x (5 s + s3_timeout), the kernel's retry included
    emu.faults_s3.add(method="GET", path=r"liver_rep1\.bigwig$", delay=120, times=None)
    started = time.monotonic()
    result = subprocess.run(["head", "-c", "100", str(m.path / "analyses" / str(ANALYSIS) / "bigwig" /
                                                     "liver_rep1.bigwig")], capture_output=True, timeout=300)
    elapsed = time.monotonic() - started
    emu.faults_s3.clear()
    assert result.returncode != 0 and b"Input/output error" in result.stderr
    assert elapsed < bound + 5, elapsed
    assert "no progress" in m.log.read_text()


def test_control_files_and_sample_json_take_bounded_input(make_mount, emu):
    m = make_mount(emu=emu)
    with pytest.raises(OSError) as raised:
        (m.path / ".bpfs" / "refresh").write_bytes(b"/analyses\n" * 20000)
    assert raised.value.errno == errno.EFBIG
    draft = m.path / "samples" / "new" / unique("nested")
    draft.mkdir()
    with pytest.raises(OSError) as raised:
        (draft / "sample.json").write_text("[" * 100000 + "]" * 100000)
    assert raised.value.errno == errno.EINVAL
    with pytest.raises(OSError) as raised:
        (draft / "sample.json").write_bytes(b" " * (2 << 20))
    assert raised.value.errno == errno.EFBIG


def test_the_emulator_makes_big_files():
    from bpfs.emulator import Emulator

    with Emulator(big_file_mib=300, bam_reads=100) as big:
        key = "analyses/7/10000/star/liver_rep1.bigwig"
        assert big.store.path(big.bucket, key).stat().st_size == 300 * MiB


# -- secrets ------------------------------------------------------------------------------------------------------
def test_errors_in_stats_and_messages_are_redacted(make_mount, emu):
    m = make_mount(emu=emu)
    key = emu.api_key
    emu.faults_api.add(method="GET", path=rf"/analyses/{ANALYSIS}$", status=500,
                       code=f"backend says: api_key={key} and your key {key} is wrong", times=None)
    with pytest.raises(OSError):
        os.listdir(m.path / "analyses" / str(ANALYSIS))
    stats_text = (m.path / ".bpfs" / "stats").read_text()
    assert key not in stats_text and "***" in stats_text
    assert key not in m.log.read_text()
    assert stat.S_IMODE(m.log.stat().st_mode) == 0o600


def test_credentials_never_follow_a_redirect_to_another_host(make_mount, emu):
    seen = []

    class Catcher(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Catcher)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        m = make_mount(emu=emu)
        target = f"http://127.0.0.1:{other.server_address[1]}/api/v3/samples"
        emu.faults_api.add(method="GET", path=r"/samples$", status=302, headers={"Location": target}, times=None)
        (m.path / ".bpfs" / "refresh").read_bytes()
        with pytest.raises(OSError) as raised:
            os.listdir(m.path / "samples")
        assert raised.value.errno == errno.EIO
        assert seen == []
        assert "redirects to" in m.log.read_text() and emu.api_key not in m.log.read_text()
    finally:
        other.shutdown()
        other.server_close()


def test_json_rewrite_helper_sanity(emu):
    """The transforms above really change replies (a check that cannot pass by accident)."""
    import urllib.request

    rewrite(emu, r"/genomes$", lambda payload, _p: {**payload, "objects": []})
    url = f"{emu.api_url}api/v3/genomes?username={emu.username}&api_key={emu.api_key}"
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["objects"] == []



# -- paging and records without a usable count, the client alone ------------------------------------------------
def _client(emulator):
    from bpfs.remote.api import ApiClient
    from bpfs.remote.config import parse_config

    client = ApiClient(parse_config(emulator.config_v3(), environ={}))
    client.whoami()
    return client


@pytest.mark.parametrize("meta", [None, {}, {"total_count": 1.5}, {"total_count": "many"}])
def test_paging_without_a_usable_count_lists_everything(emu, meta):
    def no_count(payload, _params):
        payload["meta"] = meta
        return payload

    rewrite(emu, r"/analyses$", no_count)
    assert len(_client(emu).analyses()) == len(emu.state.table("analyses"))


def test_an_empty_first_page_that_announces_records_is_an_error(emu):
    from bpfs.errors import RemoteError

    def empty(payload, params):
        if params.get("offset") == "0":
            payload["objects"] = []
        return payload

    rewrite(emu, r"/analyses$", empty)
    with pytest.raises(RemoteError, match="sends none"):
        _client(emu).analyses()


def test_an_absurd_number_costs_its_record_only():
    """A 5000-digit number (more than Python reads as an int) stays text: its record is skipped, not the page."""
    from bpfs.remote.api import ApiClient, parse_json
    from bpfs.remote.config import parse_config
    from bpfs.remote.records import Analysis

    page = parse_json(b'[{"id": ' + b"9" * 5000 + b', "status": "x"}, {"id": 5, "workflow": ' + b"7" * 5000 +
                      b'}, {"id": 6}]', "test")
    client = ApiClient(parse_config({"api_v3": {"host": "h", "prefix": "/api/v3/", "username": "u", "key": "k"}},
                                    environ={}))
    assert [a.id for a in client.parsed("analysis", page, lambda r: Analysis.parse(r, "b"))] == [5, 6]


def test_a_detail_without_its_file_list_is_an_error_not_an_empty_analysis(make_mount, emu):
    def no_files(payload, _params):
        payload.pop("files", None)
        return payload

    rewrite(emu, rf"/analyses/{ANALYSIS}$", no_files)
    m = make_mount(emu=emu)
    with pytest.raises(OSError) as raised:
        os.listdir(m.path / "analyses" / str(ANALYSIS))
    assert raised.value.errno == errno.EIO
    assert "has no file list" in m.log.read_text()


def test_an_api_reply_that_trickles_is_cut_at_the_bound(emu):
    """A server that sends its answer a byte a second never trips a socket timeout; the call's bound holds."""
    from bpfs.errors import RemoteError
    from bpfs.remote.api import ApiClient
    from bpfs.remote.config import parse_config

    data = emu.config_v3()
    data["api_v3"]["timeout"] = 2
    client = ApiClient(parse_config(data, environ={}))
    client.whoami()
    emu.faults_api.add(method="GET", path=r"/genomes$", trickle=1.0, times=None)
    started = time.monotonic()
    try:
        with pytest.raises(RemoteError, match="took more than"):
            client.genomes()
    finally:
        emu.faults_api.clear()
    assert time.monotonic() - started < client.bound + 3 and client.bound == 2 * (5 + 2) + 2
