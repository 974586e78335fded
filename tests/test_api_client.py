"""The REST client against the emulator over real HTTP: pagination, dialects, retries, timeouts."""

from __future__ import annotations

import math
import time

import pytest

from bpfs.errors import AccessDenied, NotFound, RemoteError
from bpfs.remote import api as api_module
from bpfs.remote.api import ApiClient
from bpfs.remote.config import parse_config


def client(emulator, dialect="v3", **overrides) -> ApiClient:
    data = emulator.config_v3() if dialect == "v3" else emulator.config_v1()
    section = data["api_v3" if dialect == "v3" else "api"]
    section.update(overrides)
    return ApiClient(parse_config(data, environ={}))


@pytest.mark.parametrize("dialect", ["v1", "v3"])
def test_pages_until_total_count(emulator, monkeypatch, dialect):
    monkeypatch.setattr(api_module, "PAGE_SIZE", 5)
    c = client(emulator, dialect)
    emulator.api.reset_stats()
    genomes = c.genomes()
    assert [g.id for g in genomes] == list(range(1, 24))
    resource = "GET genomes"
    assert emulator.api.stats[resource] == math.ceil(23 / 5)
    workflows = c.workflows()
    assert {w.id for w in workflows} == {7, 8, 9, 10}
    assert c.user_id is None and c.whoami()["username"] == emulator.username and c.user_id == emulator.user_id


def test_v1_bare_lists_are_the_whole_collection(emulator):
    c = client(emulator, "v1")
    emulator.api.v1_bare_lists = True
    try:
        emulator.api.reset_stats()
        assert len(c.genomes()) == 23 and emulator.api.stats["GET genomes"] == 1
    finally:
        emulator.api.v1_bare_lists = False


def test_refused_credentials_say_so_without_the_key(emulator):
    c = client(emulator, "v3", key="not-the-key-123")
    with pytest.raises(AccessDenied) as info:
        c.whoami()
    assert "credentials refused" in str(info.value) and "not-the-key-123" not in str(info.value)


def test_missing_record_is_not_found(emulator):
    with pytest.raises(NotFound):
        client(emulator).analysis(999999)


def test_5xx_is_retried_then_given_up(emulator):
    c = client(emulator)
    try:
        rule = emulator.faults_api.add(method="GET", path="/api/v3/genomes", status=503, times=2)
        assert len(c.genomes()) == 23 and rule.hits == 2
        rule = emulator.faults_api.add(method="GET", path="/api/v3/genomes", status=500, times=None)
        with pytest.raises(RemoteError, match="HTTP 500"):
            c.genomes()
        assert rule.hits == 1 + api_module.RETRIES
    finally:
        emulator.faults_api.clear()


def test_headers_trickled_a_byte_at_a_time_fail_within_the_bound(emulator):
    """Each header byte comes within the socket timeout, so only a deadline on the whole reply ends it: a
    listing sat 383 s behind headers sent a byte a second."""
    c = client(emulator, "v3", timeout=1)
    try:
        emulator.faults_api.add(method="GET", path="/api/v3/pipelines", trickle_headers=0.2, times=None)
        started = time.monotonic()
        with pytest.raises(RemoteError):
            c.workflows()
        assert time.monotonic() - started <= c.bound + 1
    finally:
        emulator.faults_api.clear()


def test_a_stalled_api_fails_within_the_timeout_budget(emulator):
    c = client(emulator, "v3", timeout=1)
    try:
        emulator.faults_api.add(method="GET", path="/api/v3/pipelines", delay=3, times=None)
        started = time.monotonic()
        with pytest.raises(RemoteError, match="cannot reach the Basepair API .*timed out"):
            c.workflows()
        assert time.monotonic() - started < 2 * (1 + 1) + 2  # (1 + READ_RETRIES) * timeout + backoff
    finally:
        emulator.faults_api.clear()
