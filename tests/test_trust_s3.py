"""Trust off the happy path, S3: a server (or a proxy in front of it) that answers something else than what
was asked. A read gets the object's bytes at their offsets or EIO with one clear log line: never bytes of
another range, a file cut short or padded, nor a mix of an object's old and new bytes.

Each misbehaviour is injected with the emulator's S3 faults, or by changing the object behind bpfs's back.
"""

from __future__ import annotations

import errno

import pytest

from bpfs.errors import RemoteError
from bpfs.remote.config import parse_config
from bpfs.remote.s3 import ObjectClient
from bpfs.stats import Stats

BIGWIG = "analyses/7/10000/star/liver_rep1.bigwig"  # 1 MiB here; its size is in the API
BIGWIG_PATH = ("analyses", "10000", "bigwig", "liver_rep1.bigwig")


@pytest.fixture
def emu():
    """An account of its own: these tests change its objects and break its answers on purpose."""
    from bpfs.emulator import Emulator

    with Emulator(big_file_mib=1, bam_reads=300) as emulator:
        yield emulator


def objects(emulator) -> ObjectClient:
    """The real ObjectClient over HTTP to the emulator (boto3 and all), without a mount."""
    return ObjectClient(parse_config(emulator.config_v1(), environ={}), Stats())


def stored(emulator, key: str = BIGWIG) -> bytes:
    return emulator.store.get_bytes(emulator.bucket, key)


def read_fails(path, offset: int, size: int = 4096) -> OSError:
    with open(path, "rb") as f, pytest.raises(OSError) as raised:
        f.seek(offset)
        f.read(size)
    return raised.value


def clean_log(m) -> str:
    text = m.log.read_text()
    assert "Traceback" not in text
    return text


# -- a Range ignored ----------------------------------------------------------------------------------------------
def test_a_range_the_server_ignores_is_an_error_not_other_bytes(emu):
    client = objects(emu)
    data = stored(emu)
    emu.faults_s3.add(method="GET", path=BIGWIG, ignore_range=True, times=None)
    with pytest.raises(RemoteError, match="ignores Range"):
        client.get_range(None, BIGWIG, 1000, 2000)  # 200 and the object's first bytes, not these
    assert bytes(client.get_range(None, BIGWIG, 0, len(data))) == data  # all of it asked: a 200 is right


def test_a_server_that_ignores_range_gives_eio(make_mount, emu):
    m = make_mount(emu=emu)
    emu.faults_s3.add(method="GET", path=BIGWIG, ignore_range=True, times=None)
    assert read_fails(m.path.joinpath(*BIGWIG_PATH), 500_000).errno == errno.EIO
    assert "ignores Range" in clean_log(m)
