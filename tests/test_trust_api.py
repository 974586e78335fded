"""Trust off the happy path, the REST client: a misbehaving Basepair API costs bounded time and memory.

Throttling with an absurd Retry-After, pages smaller than asked, a byte that is not UTF-8, a reply cut
once mid-body, a detail that answers for another record, a flood of bytes or a slow trickle of pages:
each costs at most the records it broke, and every wait is bounded. In-process clients over real HTTP,
and real mounts where the user-visible result matters.
"""

from __future__ import annotations

import email.utils
import errno
import json
import os
import threading
import time

import pytest

from bpfs.errors import RemoteError
from bpfs.remote import api as api_module
from bpfs.remote.api import ApiClient
from bpfs.remote.config import parse_config
from tests.test_trust_server import rewrite

ANALYSIS = 10000


@pytest.fixture
def emu():
    """An account of its own (155 analyses): these tests break its replies on purpose."""
    from bpfs.emulator import Emulator

    with Emulator(big_file_mib=1, bam_reads=300, extra_analyses=150) as emulator:
        yield emulator


def client(emulator, timeout: float | None = None) -> ApiClient:
    data = emulator.config_v3()
    if timeout is not None:
        data["api_v3"]["timeout"] = timeout
    return ApiClient(parse_config(data, environ={}))


def within(seconds: float, call):
    """`call()`, failing the test (not hanging it) when it takes longer than `seconds`."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still waiting after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def analysis_ids(emulator) -> set[str]:
    return {str(i) for i in emulator.state.table("analyses")}


# -- 1. Retry-After is obeyed only within the call's budget -------------------------------------------------------
@pytest.mark.parametrize("form", ["seconds", "http-date", "garbage"])
def test_a_retry_after_of_an_hour_costs_seconds(emu, form):
    value = {"seconds": "3600", "http-date": email.utils.formatdate(time.time() + 3600, usegmt=True),
             "garbage": "after lunch"}[form]
    c = client(emu)
    rule = emu.faults_api.add(method="GET", path=r"/genomes$", status=503, headers={"Retry-After": value}, times=2)
    started = time.monotonic()
    assert len(within(20, c.genomes)) == len(emu.state.table("genomes"))
    assert rule.hits == 2 and time.monotonic() - started < api_module.RETRY_WAITS + 2


def test_a_server_that_always_says_retry_later_is_given_up_within_the_bound(emu):
    c = client(emu, timeout=1)
    emu.faults_api.add(method="GET", path=r"/genomes$", status=503, headers={"Retry-After": "3600"}, times=None)
    started = time.monotonic()
    with pytest.raises(RemoteError, match="HTTP 503"):
        within(30, c.genomes)
    assert time.monotonic() - started < c.bound


# -- 2. a server that pages smaller than asked ----------------------------------------------------------------------
def twenty_per_page(payload, _params):
    payload["objects"] = payload["objects"][:20]  # what a Tastypie server with max_limit=20 sends for limit=100
    return payload


def test_a_server_that_pages_20_lists_everything(emu):
    rewrite(emu, r"/analyses$", twenty_per_page)
    assert {str(a.id) for a in client(emu).analyses()} == analysis_ids(emu)


def test_a_server_that_pages_20_without_a_count_lists_everything(emu):
    def no_count(payload, params):
        payload.pop("meta")
        return twenty_per_page(payload, params)

    rewrite(emu, r"/analyses$", no_count)
    assert {str(a.id) for a in client(emu).analyses()} == analysis_ids(emu)


@pytest.mark.parametrize("size", [10, 19])
def test_a_server_that_pages_fewer_than_20_without_a_count_follows_its_next_link(emu, size):
    """Tastypie without a count still says whether a page follows (meta.next): a page of 10 was taken for
    the last one, and 10 of 155 analyses were listed without a word."""
    def small_pages(payload, params):
        total, offset = payload["meta"]["total_count"], int(params.get("offset", 0))
        payload["objects"] = payload["objects"][:size]
        later = f"/api/v1/analyses?offset={offset + size}&limit={size}" if offset + size < total else None
        payload["meta"] = {"limit": size, "offset": offset, "next": later}
        return payload

    rewrite(emu, r"/analyses$", small_pages)
    assert {str(a.id) for a in client(emu).analyses()} == analysis_ids(emu)


@pytest.mark.parametrize("link", [None, "", True])
def test_a_full_page_without_a_count_goes_on_whatever_next_says_when_it_is_no_link(emu, link):
    """A server that always sends `next: null` (or something that is no link): full pages still go on."""
    def no_link(payload, params):
        payload = twenty_per_page(payload, params)
        payload["meta"] = {"next": link}
        return payload

    rewrite(emu, r"/analyses$", no_link)
    assert {str(a.id) for a in client(emu).analyses()} == analysis_ids(emu)


def test_a_server_that_pages_20_mounts_everything(make_mount, emu):
    rewrite(emu, r"/analyses$", twenty_per_page)
    m = make_mount(emu=emu)
    assert analysis_ids(emu) <= set(os.listdir(m.path / "analyses"))


def test_a_server_that_trickles_one_record_a_page_is_still_stopped(emu):
    pages = []

    def one_a_page(payload, params):
        pages.append(params.get("offset"))
        payload["objects"] = [{"id": 900000 + int(params.get("offset", 0)), "name": "x"}]
        payload["meta"]["total_count"] = 5000
        return payload

    rewrite(emu, r"/analyses$", one_a_page)
    with pytest.raises(RemoteError, match="listing stopped"):
        within(30, client(emu).analyses)
    assert len(pages) <= 5000 / api_module.PAGE_SIZE + 1


# -- 3. a byte that is not UTF-8 costs a character ----------------------------------------------------------------
def bad_byte_in_a_name(payload, params):
    if params.get("offset") == "0":
        payload["objects"][0]["name"] = "bad-MARK-name"
    return json.dumps(payload).encode().replace(b"MARK", b"\xff")


def test_invalid_utf8_in_one_record_costs_a_character(emu):
    rewrite(emu, r"/analyses$", bad_byte_in_a_name)
    analyses = client(emu).analyses()
    assert {str(a.id) for a in analyses} == analysis_ids(emu)
    assert "bad-\ufffd-name" in {a.name for a in analyses}


def test_invalid_utf8_in_one_record_does_not_blank_analyses(make_mount, emu):
    rewrite(emu, r"/analyses$", bad_byte_in_a_name)
    m = make_mount(emu=emu)
    assert analysis_ids(emu) <= set(os.listdir(m.path / "analyses"))
    assert "bad-\ufffd-name" in (m.path / "analyses" / "index.tsv").read_text()


# -- 4. a reply cut once is asked again ------------------------------------------------------------------------
def test_a_reply_cut_once_is_fetched_again(emu):
    rule = emu.faults_api.add(method="GET", path=r"/analyses$", drop_after=300, times=1)
    assert {str(a.id) for a in client(emu).analyses()} == analysis_ids(emu)
    assert rule.hits == 1


def test_a_reply_cut_every_time_fails_within_the_bound(emu):
    c = client(emu, timeout=1)
    emu.faults_api.add(method="GET", path=r"/analyses$", drop_after=300, times=None)
    started = time.monotonic()
    with pytest.raises(RemoteError, match="broke off"):
        within(30, c.analyses)
    assert time.monotonic() - started < c.bound


def test_a_listing_cut_once_mounts_complete(make_mount, emu):
    m = make_mount(emu=emu)
    emu.faults_api.add(method="GET", path=r"/analyses$", drop_after=300, times=1)
    assert analysis_ids(emu) <= set(os.listdir(m.path / "analyses"))


# -- 5. a detail must be the record asked for -------------------------------------------------------------------
def another_id(payload, _params):
    payload["id"] = ANALYSIS + 1
    return payload


def test_a_detail_for_another_record_is_an_error(emu):
    rewrite(emu, rf"/analyses/{ANALYSIS}$", another_id)
    with pytest.raises(RemoteError, match=f"asked for analysis {ANALYSIS}.* {ANALYSIS + 1}"):
        client(emu).analysis(ANALYSIS)


def test_a_detail_for_another_record_is_eio_not_a_substitute(make_mount, emu):
    rewrite(emu, rf"/analyses/{ANALYSIS}$", another_id)
    m = make_mount(emu=emu)
    with pytest.raises(OSError) as raised:
        os.listdir(m.path / "analyses" / str(ANALYSIS))
    assert raised.value.errno == errno.EIO
    assert f"asked for analysis {ANALYSIS}" in m.log.read_text()
    assert "Traceback" not in m.log.read_text()


# -- 6. a listing's bytes and time are bounded -------------------------------------------------------------------
def test_a_listing_that_floods_bytes_is_stopped(emu, monkeypatch):
    monkeypatch.setattr(api_module, "PAGE_SIZE", 20)
    monkeypatch.setattr(api_module, "MAX_LIST_BYTES", 300_000, raising=False)  # each page is well under it

    def fat(payload, _params):
        for obj in payload["objects"]:
            obj["description"] = "x" * 5_000  # a page of 20 is ~130 KB
        return payload

    rewrite(emu, r"/analyses$", fat)
    with pytest.raises(RemoteError, match="3 pages sent more than .* in one listing; listing stopped"):
        client(emu).analyses()


def test_a_listing_of_slow_pages_is_stopped_at_its_bound(emu, monkeypatch):
    monkeypatch.setattr(api_module, "PAGE_SIZE", 20)
    monkeypatch.setattr(ApiClient, "list_bound", property(lambda self: 1.0), raising=False)
    rule = emu.faults_api.add(method="GET", path=r"/analyses$", delay=0.4, times=None)
    started = time.monotonic()
    with pytest.raises(RemoteError, match="listing stopped"):
        within(30, client(emu).analyses)
    assert time.monotonic() - started < 1.0 + 0.4 + 1 and rule.hits < 155 / 20
