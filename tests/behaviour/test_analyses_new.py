"""Starting analyses through analyses/new/ (and deleting them), both dialects, in-process and through a mount."""

from __future__ import annotations

import errno
import json
import os
import time
import uuid

import pytest

DIALECTS = ["v3", "v1"]


def analyses_ids(emu) -> set[int]:
    with emu.state.lock:
        return set(emu.state.analyses)


def a_sample(emu, genome: str = "hg19") -> int:
    """A fresh sample of its own (so tests can share the account)."""
    with emu.state.lock:
        genome_id = emu.state.genome_by_name(genome)["id"]
        return emu.state.create_sample({"name": f"an_{uuid.uuid4().hex[:8]}", "genome": genome_id})["id"]


def request(fs, name: str, body: dict | bytes) -> None:
    fs.write_bytes(f"analyses/new/{name}", body if isinstance(body, bytes) else json.dumps(body).encode())


def half_written(fs, path: str) -> tuple[int, bytes]:
    """A valid request's file, open for writing with its first 10 bytes written: (the descriptor, the body)."""
    body = json.dumps({"workflow": 7, "samples": [a_sample(fs.emulator)]}).encode()
    writer = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    fs.write_fd(writer, body[:10])
    return writer, body


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_request_starts_an_analysis_and_reads_as_its_record(make_fs, dialect):
    fs = make_fs("running_ttl=1", dialect=dialect)
    emu = fs.emulator
    sample = a_sample(emu)
    assert "new" in fs.listdir("analyses")
    request(fs, "liver-star.json", {"workflow": 7, "samples": [sample],
                                    "params": {"node": {"star": {"outFilterMultimapNmax": 20}}}})
    answer = json.loads(fs.read_text("analyses/new/liver-star.json"))
    new = answer["id"]
    with emu.state.lock:
        record = emu.state.analyses[new]
        assert record["samples"] == [sample] and record["workflow"] == 7
        assert record["params"]["node"] == {"star": {"outFilterMultimapNmax": "20"}}  # values are sent as text
    assert str(new) in fs.listdir("analyses")  # at once, no refresh
    assert any(line.startswith(f"{new}\t") for line in fs.read_text("analyses/index.tsv").splitlines())
    analyses_of_sample = json.loads(fs.read_text(f"samples/{sample}/sample.json"))["analyses"]
    assert new in [a if isinstance(a, int) else int(str(a).rstrip("/").rsplit("/", 1)[-1]) for a in analyses_of_sample]
    deadline = time.monotonic() + 30  # its directory fills in as the server adds files
    while time.monotonic() < deadline and "fastqc" not in fs.listdir(f"analyses/{new}"):
        time.sleep(0.1)
    assert "fastqc" in fs.listdir(f"analyses/{new}")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_names_resolve_through_the_listings(make_fs, dialect):
    fs = make_fs(dialect=dialect)
    emu = fs.emulator
    sample = a_sample(emu)
    with emu.state.lock:
        sample_name, workflow_name = emu.state.samples[sample]["name"], emu.state.workflows[7]["name"]
    request(fs, "by-name.json", {"workflow": workflow_name, "samples": [sample_name]})
    new = json.loads(fs.read_text("analyses/new/by-name.json"))["id"]
    with emu.state.lock:
        assert emu.state.analyses[new]["samples"] == [sample] and emu.state.analyses[new]["workflow"] == 7


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not valid JSON"),
    ({"workflow": 7, "samples": [1], "colour": "red"}, "unknown keys colour"),
    ({"workflow": 7, "samples": "all"}, "samples must be a list"),
    ({"workflow": 7, "samples": []}, "must not be empty"),
    ({"workflow": 7.5, "samples": [1]}, "workflow must be"),
    ({"workflow": 7, "samples": [1], "params": {"node": {"star": "x"}}}, "params.node"),
    ({"workflow": 7, "samples": [1], "ignore_validation_warning": "yes"}, "true or false"),
    ({"workflow": "no such workflow", "samples": [1]}, "no workflow is named"),
    ({"workflow": 7, "samples": ["no such sample"]}, "no sample is named"),
    ({"workflow": 999999, "samples": [1]}, "the server refused"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_a_bad_request_is_einval_creates_nothing_and_says_why(fs, body, reason):
    before = analyses_ids(fs.emulator)
    name = f"bad-{uuid.uuid4().hex[:6]}.json"
    with pytest.raises(OSError) as raised:
        request(fs, name, body)
    assert raised.value.errno == errno.EINVAL
    assert reason in json.loads(fs.read_text(f"analyses/new/{name}"))["error"]
    assert analyses_ids(fs.emulator) == before


def test_a_readers_close_sends_nothing_while_the_request_is_being_written(fs):
    """`cat` of a request file while its writer is still writing: the reader's close and release leave the
    half-written request alone; the writer's close sends it, once."""
    emu = fs.emulator
    before = analyses_ids(emu)
    path = "analyses/new/slow.json"
    writer, body = half_written(fs, path)
    reader = fs.open(path, os.O_RDONLY)
    assert fs.read_fd(reader, 100, 0) == body[:10]
    fs.close(reader)
    assert analyses_ids(emu) == before
    fs.write_fd(writer, body[10:])
    fs.close(writer)
    new = json.loads(fs.read_text(path))["id"]
    assert analyses_ids(emu) == before | {new}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_request_whose_answer_is_lost_is_not_started_twice(make_fs, dialect):
    """The server starts the analysis, but its answer is cut off: the one it started is the answer (had the
    close failed, the user would start a second, computing twice); without one, EIO says to look first."""
    fs = make_fs(dialect=dialect)
    emu = fs.emulator
    sample = a_sample(emu)
    before = analyses_ids(emu)
    emu.faults_api.add(method="POST", path=r"/analyses/?$", drop_after=0)
    request(fs, "lost.json", {"workflow": 7, "samples": [sample]})
    new = json.loads(fs.read_text("analyses/new/lost.json"))["id"]
    assert analyses_ids(emu) == before | {new}
    with emu.state.lock:
        assert emu.state.analyses[new]["samples"] == [sample]
    request(fs, "again.json", {"workflow": 7, "samples": [sample]})  # the same once more, answered
    again = json.loads(fs.read_text("analyses/new/again.json"))["id"]
    emu.faults_api.add(method="POST", path=r"/analyses/?$", status=503)  # nothing started: none adopted
    with pytest.raises(OSError) as raised:
        request(fs, "lost.json", {"workflow": 7, "samples": [sample]})
    assert raised.value.errno == errno.EIO
    assert "look in analyses/ before trying again" in json.loads(fs.read_text("analyses/new/lost.json"))["error"]
    assert analyses_ids(emu) == before | {new, again}
    # another client starts the same workflow on the same sample with other parameters; ours is not started
    with emu.state.lock:
        theirs = emu.state.create_analysis({"workflow": 7, "samples": [sample],
                                            "params": {"node": {"star": {"outFilterMultimapNmax": "1"}}}})["id"]
    emu.faults_api.add(method="POST", path=r"/analyses/?$", status=502)
    with pytest.raises(OSError) as raised:
        request(fs, "mine.json", {"workflow": 7, "samples": [sample],
                                  "params": {"node": {"star": {"outFilterMultimapNmax": 50}}}})
    assert raised.value.errno == errno.EIO
    assert "error" in json.loads(fs.read_text("analyses/new/mine.json"))
    # the same parameters, but another instance type: not ours either
    with emu.state.lock:
        bigger = emu.state.create_analysis({"workflow": 7, "samples": [sample], "instance": "c5.9xlarge",
                                            "params": {"info": {"instance_type": "c5.9xlarge"}}})["id"]
    emu.faults_api.add(method="POST", path=r"/analyses/?$", status=502)
    with pytest.raises(OSError) as raised:
        request(fs, "small.json", {"workflow": 7, "samples": [sample], "instance": "c5.xlarge"})
    assert raised.value.errno == errno.EIO
    assert analyses_ids(emu) == before | {new, again, theirs, bigger}


def test_a_request_removed_while_being_written_is_never_sent(fs):
    emu = fs.emulator
    before = analyses_ids(emu)
    path = "analyses/new/changed-my-mind.json"
    writer, body = half_written(fs, path)
    fs.unlink(path)
    fs.write_fd(writer, body[10:])
    fs.close(writer)
    assert analyses_ids(emu) == before and not fs.exists(path)


def test_appending_to_an_answer_is_refused_with_a_reason(fs):
    """`>>` onto an answer wrote the request after the answer's length in NUL bytes: 'not valid JSON
    (utf-32-be codec...)'. It is refused at open, saying why, and the answer stays."""
    sample = a_sample(fs.emulator)
    request(fs, "twice.json", {"workflow": 7, "samples": [sample]})
    answer = fs.read_text("analyses/new/twice.json")
    with pytest.raises(OSError) as raised:
        fs.open("analyses/new/twice.json", os.O_WRONLY | os.O_APPEND)
    assert raised.value.errno == errno.EINVAL and fs.read_text("analyses/new/twice.json") == answer


def test_an_ambiguous_name_is_refused(fs):
    emu = fs.emulator
    twin = f"twin_{uuid.uuid4().hex[:6]}"
    with emu.state.lock:
        ids = [emu.state.create_sample({"name": twin})["id"] for _ in range(2)]
    before = analyses_ids(emu)
    with pytest.raises(OSError) as raised:
        request(fs, "twin.json", {"workflow": 7, "samples": [twin]})
    assert raised.value.errno == errno.EINVAL
    error = json.loads(fs.read_text("analyses/new/twin.json"))["error"]
    assert "2 samples are named" in error and all(str(i) in error for i in ids)
    assert analyses_ids(emu) == before


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_warning_refuses_until_it_is_overridden(make_fs, dialect):
    fs = make_fs(dialect=dialect)
    emu = fs.emulator
    samples = [a_sample(emu, "hg19"), a_sample(emu, "mm10")]
    before = analyses_ids(emu)
    with pytest.raises(OSError) as raised:
        request(fs, "mixed.json", {"workflow": 7, "samples": samples})
    assert raised.value.errno == errno.EINVAL
    assert "ignore_validation_warning" in json.loads(fs.read_text("analyses/new/mixed.json"))["error"]
    assert analyses_ids(emu) == before
    request(fs, "mixed.json", {"workflow": 7, "samples": samples, "ignore_validation_warning": True})
    assert json.loads(fs.read_text("analyses/new/mixed.json"))["id"] in analyses_ids(emu)


def test_a_server_failure_is_eio_and_creates_nothing(fs):
    emu = fs.emulator
    before = analyses_ids(emu)
    emu.faults_api.add(method="POST", path=r"/analyses/?$", status=503, times=None)
    try:
        with pytest.raises(OSError) as raised:
            request(fs, "down.json", {"workflow": 7, "samples": [a_sample(emu)]})
    finally:
        emu.faults_api.clear()
    assert raised.value.errno == errno.EIO
    assert "error" in json.loads(fs.read_text("analyses/new/down.json"))
    assert analyses_ids(emu) == before


def test_an_empty_file_sends_nothing_and_rm_forgets(fs):
    before = analyses_ids(fs.emulator)
    fs.write_bytes("analyses/new/empty.json", b"")
    assert analyses_ids(fs.emulator) == before and fs.read_bytes("analyses/new/empty.json") == b""
    fs.unlink("analyses/new/empty.json")
    assert "empty.json" not in fs.listdir("analyses/new")


def test_other_names_and_directories_are_refused(fs):
    with pytest.raises(OSError) as raised:
        fs.write_bytes("analyses/new/notes.txt", b"hello")
    assert raised.value.errno == errno.EINVAL
    with pytest.raises(OSError) as raised:
        fs.mkdir("analyses/new/sub")
    assert raised.value.errno in (errno.EACCES, errno.EPERM)
    with pytest.raises(OSError) as raised:
        fs.write_bytes("analyses/x.json", b"{}")
    assert raised.value.errno in (errno.EACCES, errno.EPERM)


def test_read_only_refuses_with_erofs(make_fs):
    ro = make_fs("ro")
    with pytest.raises(OSError) as raised:
        request(ro, "ro.json", {"workflow": 7, "samples": [1]})
    assert raised.value.errno == errno.EROFS
    with pytest.raises(OSError) as raised:
        ro.rmdir("analyses/10000")
    assert raised.value.errno == errno.EROFS


@pytest.mark.parametrize("dialect", DIALECTS)
def test_deleting_an_analysis_needs_allow_delete(make_fs, dialect):
    plain = make_fs(dialect=dialect)
    emu = plain.emulator
    request(plain, "doomed.json", {"workflow": 7, "samples": [a_sample(emu)]})
    new = json.loads(plain.read_text("analyses/new/doomed.json"))["id"]
    with pytest.raises(OSError) as raised:
        plain.rmdir(f"analyses/{new}")
    assert raised.value.errno == errno.EACCES and new in analyses_ids(emu)
    deleting = make_fs("allow_delete", dialect=dialect)
    deleting.rmdir(f"analyses/{new}")
    assert new not in analyses_ids(emu)
    assert str(new) not in deleting.listdir("analyses")
