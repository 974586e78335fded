"""Text a server sends is shown, never obeyed: a cut-off character costs that character, control
characters are escaped, credentials are hidden, wherever the text ends up (names, files, logs, stats)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from tests.test_trust_server import ANALYSIS, rewrite

LONE = "\ud83e"  # the first half of an emoji cut off: valid JSON ("\ud83e"), not a character


@pytest.fixture
def emu():
    """An account of its own: these tests break its replies on purpose."""
    from bpfs.emulator import Emulator

    with Emulator(big_file_mib=1, bam_reads=300) as emulator:
        yield emulator


def test_a_cut_off_character_costs_that_character_not_the_directory(make_mount, emu):
    def names(payload, _params):
        for record in payload["objects"]:
            record["name"] = record["name"] + LONE
        return payload

    def detail(payload, _params):
        payload["files"][0]["tags"] = ["bam", "x" + LONE]
        payload["files"][1]["path"] = payload["files"][1]["path"].replace(".bam", LONE + ".bam")
        return payload

    for listing in ("genomes", "samples", "analyses"):
        rewrite(emu, rf"/{listing}$", names)
    rewrite(emu, rf"/analyses/{ANALYSIS}$", detail)
    m = make_mount(emu=emu)
    for top in ("genomes", "samples", "analyses"):
        assert os.listdir(m.path / top), top
        index = (m.path / top / "index.tsv").read_text()
        assert "\ufffd" in index and LONE not in index
    analysis = m.path / "analyses" / str(ANALYSIS)
    record = json.loads((analysis / "analysis.json").read_text())
    assert record["id"] == ANALYSIS
    everything = [name for _dir, _dirs, files in os.walk(analysis / "all") for name in files]
    assert any("\ufffd" in name for name in everything)
    assert os.listdir(analysis / "fastqc")  # the rest of the analysis is whole
    assert "Traceback" not in m.log.read_text()


def test_a_servers_error_text_cannot_drive_the_terminal_or_forge_log_lines(make_mount, emu):
    forged = "bad thing\n2026-12-01 00:00:00,000 1 INFO bpfs: all good\x1b]0;title\x07\x1b[2J\r"
    m = make_mount(emu=emu)
    emu.faults_api.add(method="GET", path=rf"/analyses/{ANALYSIS}$", status=500, code=forged, times=None)
    with pytest.raises(OSError) as raised:
        os.listdir(m.path / "analyses" / str(ANALYSIS))
    assert raised.value.errno == errno.EIO
    status = subprocess.run([sys.executable, "-m", "bpfs", "status", str(m.path)], capture_output=True,
                            timeout=60)
    for text in (status.stdout + status.stderr, m.log.read_bytes(), (m.path / ".bpfs" / "stats").read_bytes()):
        assert b"bad thing" in text
        assert b"\x1b" not in text and b"\x07" not in text and b"\r" not in text
    assert not any(line.startswith("2026-12-01 00:00:00") for line in m.log.read_text().splitlines())


def test_the_s3_key_id_is_hidden_like_the_secret(make_mount, emu):
    key_id = emu.state.s3_key_id
    m = make_mount(emu=emu)
    emu.faults_api.add(method="GET", path=rf"/analyses/{ANALYSIS}$", status=500,
                       code=f"no access for {key_id}", times=None)
    with pytest.raises(OSError):
        os.listdir(m.path / "analyses" / str(ANALYSIS))
    stats_text = (m.path / ".bpfs" / "stats").read_text()
    assert "no access for ***" in stats_text and key_id not in stats_text
    assert key_id not in m.log.read_text()


def test_redaction_escapes_what_no_terminal_or_log_file_should_get():
    """One function for every text a user reads: controls and a file name's non-UTF-8 bytes come out as
    escapes that encode anywhere, secrets as ***."""
    from bpfs.redact import redact, register

    register("s3cr3t-value")
    shown = redact("name \udcff\udc80.fastq \x1b[2J bell\x07 \x9b lone \ud83e key s3cr3t-value ?api_key=abc\nnext")
    assert shown == "name \\xff\\x80.fastq \\x1b[2J bell\\x07 \\x9b lone \\ud83e key *** ?api_key=***\nnext"
    shown.encode("ascii")
