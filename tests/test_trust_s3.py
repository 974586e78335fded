"""Trust off the happy path, S3: a server (or a proxy in front of it) that answers something else than what
was asked. A read gets the object's bytes at their offsets or EIO with one clear log line: never bytes of
another range, a file cut short or padded, nor a mix of an object's old and new bytes.

Each misbehaviour is injected with the emulator's S3 faults, or by changing the object behind bpfs's back.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess

import pytest

from bpfs.errors import RemoteError
from bpfs.reading.prefetch import PrefetchConfig, Prefetcher
from bpfs.remote.config import parse_config
from bpfs.remote.s3 import ObjectChanged, ObjectClient, Version
from bpfs.stats import Stats
from tests.fakes import in_process_objects

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


# -- an object of another size than listed -------------------------------------------------------------------------
def test_a_get_finds_the_object_shorter_or_longer_than_listed(emu):
    client = objects(emu)
    data = stored(emu)
    for listed in (len(data) + 1, len(data) - 1):  # the Content-Range total tells
        with pytest.raises(RemoteError, match="than its listing says"):
            client.get_range(None, BIGWIG, 0, 4096, version=Version(listed))
    assert bytes(client.get_range(None, BIGWIG, 0, 4096, version=Version(len(data)))) == data[:4096]


@pytest.mark.parametrize("options", [(), ("disk_cache=64M",)], ids=["memory", "disk_cache"])
@pytest.mark.parametrize("change", ["shorter", "longer"])
def test_an_object_of_another_size_than_listed_is_eio_not_a_cut_or_padded_file(make_mount, emu, tmp_path, change,
                                                                                options):
    """The API lists 1 MiB; S3 holds 1,000,000 bytes (cp made a padded file with the disk cache) or 1 MiB + 1000
    (cp made a file cut at 1 MiB, exit 0)."""
    data = stored(emu)
    emu.store.put(emu.bucket, BIGWIG, data[:1_000_000] if change == "shorter" else data + b"x" * 1000)
    m = make_mount(emu=emu, options=(*options, f"cache_dir={tmp_path / 'cache'}") if options else ())
    result = subprocess.run(["cp", str(m.path.joinpath(*BIGWIG_PATH)), str(tmp_path / "copy")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert f"is {change} than its listing says" in clean_log(m)


# -- an object replaced while it is read ---------------------------------------------------------------------------
@pytest.mark.parametrize("options", [(), ("disk_cache=64M",)], ids=["memory", "disk_cache"])
def test_an_object_replaced_while_open_is_eio_not_a_mix(make_mount, emu, tmp_path, options):
    old = stored(emu)
    new = random.Random(3).randbytes(len(old))  # the same size: only the ETag tells
    m = make_mount(emu=emu, options=(*options, f"cache_dir={tmp_path / 'cache'}") if options else ())
    fd = os.open(m.path.joinpath(*BIGWIG_PATH), os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == old[:4096]
        emu.store.put(emu.bucket, BIGWIG, new)
        with pytest.raises(OSError) as raised:
            os.pread(fd, 4096, 700_000)  # past what the first read fetched: a GET of the new object's bytes
        assert raised.value.errno == errno.EIO
    finally:
        os.close(fd)
    assert "changed on the server while being read" in clean_log(m)


def test_the_cache_never_mixes_an_objects_old_and_new_bytes(emu):
    """In process: the file open when the object changed fails, even where its bytes are cached; the next open
    reads the new object whole, none of the old one's cached bytes."""
    config = parse_config(emu.config_v1(), environ={})
    prefetcher = Prefetcher(in_process_objects(config, emu.store, Stats()), Stats(), PrefetchConfig())
    old = stored(emu)
    new = random.Random(4).randbytes(len(old))
    try:
        first = prefetcher.open(None, BIGWIG, len(old))
        assert bytes(first.read(0, 64 << 10)) == old[:64 << 10]
        emu.store.put(emu.bucket, BIGWIG, new)
        with pytest.raises(ObjectChanged):
            first.read(700_000, 4096)
        with pytest.raises(ObjectChanged):
            first.read(0, 4096)  # cached, but of an object that is gone: this file reads nothing more
        first.close()
        again = prefetcher.open(None, BIGWIG, len(new))
        assert bytes(again.read(0, len(new))) == new
        again.close()
    finally:
        prefetcher.close()


# -- a HEAD without a size -----------------------------------------------------------------------------------------
COUNTS = "analyses/7/10000/counts/liver_rep1.genes.txt"


@pytest.mark.parametrize("length", ["many", None, "-5"], ids=["not-a-number", "missing", "negative"])
def test_a_head_without_a_valid_content_length_is_a_remote_error(emu, length):
    emu.faults_s3.add(method="HEAD", path=COUNTS, headers={"Content-Length": length})
    with pytest.raises(RemoteError, match="Content-Length|headers that are not valid"):
        objects(emu).head(None, COUNTS)


def test_a_head_without_a_valid_content_length_costs_that_file_only(make_mount, emu):
    """Every file of the analysis without a size in the API: a HEAD each. One HEAD's Content-Length is no
    number: that file is listed and fails with EIO, its neighbours are whole (the directory was EIO before)."""
    def unsized(payload, _params):
        for f in payload["files"]:
            f["filesize"] = None
        return payload

    emu.api.transforms.append(lambda method, path, params, status, payload: unsized(payload, params)
                              if method == "GET" and status < 300 and path.endswith("/analyses/10000") else payload)
    emu.faults_s3.add(method="HEAD", path=COUNTS, headers={"Content-Length": "many"}, times=None)
    m = make_mount(emu=emu)
    top = m.path / "analyses" / "10000"
    assert "liver_rep1.genes.txt" in os.listdir(top / "all" / "counts")
    with pytest.raises(OSError) as raised:
        os.stat(top / "all" / "counts" / "liver_rep1.genes.txt")
    assert raised.value.errno == errno.EIO
    assert (top / "bam" / "liver_rep1.bam").stat().st_size > 0
    assert "its size could not be read from S3" in clean_log(m)


@pytest.mark.parametrize("op", ["GET", "HEAD"])
def test_headers_trickled_a_byte_at_a_time_fail_within_the_bound(emu, op):
    """Every header byte comes within the socket's read timeout, so only a deadline on the whole reply ends
    it: `head -c 100` sat 448 s behind headers sent a byte every 2 s, a HEAD 94 s."""
    import time

    client = ObjectClient(parse_config(emu.config_v1(), environ={}), Stats(), read_timeout=1)
    emu.faults_s3.add(method=op, path=BIGWIG, trickle_headers=0.2, times=None)
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError):
            if op == "GET":
                client.get_range(None, BIGWIG, 0, 100)
            else:
                client.head(None, BIGWIG)
        assert time.monotonic() - started <= client.read_bound + 2
    finally:
        emu.faults_s3.clear()


# -- validators a proxy bends ---------------------------------------------------------------------------------------
def test_weak_etags_and_a_capitalised_unit_still_read_right(emu):
    """A weak ETag (W/"...") is compared, not sent as If-Match (it never matches there: every read of a file
    larger than one GET failed as 'changed'); `Bytes` in Content-Range is the same unit as `bytes`."""
    client = objects(emu)
    data = stored(emu)
    emu.faults_s3.add(method="GET", path=BIGWIG, headers={"ETag": 'W/"weak-1"'}, times=None)
    version = Version(len(data))
    assert bytes(client.get_range(None, BIGWIG, 0, 4096, version=version)) == data[:4096]
    assert bytes(client.get_range(None, BIGWIG, 4096, len(data), version=version)) == data[4096:]
    emu.faults_s3.clear()
    emu.faults_s3.add(method="GET", path=BIGWIG, headers={"Content-Range": f"Bytes 0-99/{len(data)}"})
    assert bytes(client.get_range(None, BIGWIG, 0, 100)) == data[:100]


def test_an_object_replaced_under_a_server_that_sends_no_etag_is_still_caught(emu):
    """Without an ETag (a proxy dropped it) the object's Last-Modified tells its versions apart: an md5sum
    across the replacement gave old bytes then new ones, exit 0."""
    import time

    client = objects(emu)
    data = stored(emu)
    emu.faults_s3.add(method="GET", path=BIGWIG, headers={"ETag": None}, times=None)
    version = Version(len(data))
    assert bytes(client.get_range(None, BIGWIG, 0, 4096, version=version)) == data[:4096]
    time.sleep(1.1)  # Last-Modified counts seconds
    emu.store.put(emu.bucket, BIGWIG, random.Random(5).randbytes(len(data)))
    with pytest.raises(ObjectChanged):
        client.get_range(None, BIGWIG, 4096, 8192, version=version)


def test_an_etag_dropped_on_some_answers_is_no_change(emu):
    """A proxy that drops the ETag now and then, or weakens it: the object has not changed, and reads
    exactly (each such answer failed as 'changed on the server')."""
    client = objects(emu)
    data = stored(emu)
    version = Version(len(data))
    assert bytes(client.get_range(None, BIGWIG, 0, 4096, version=version)) == data[:4096]
    emu.faults_s3.add(method="GET", path=BIGWIG, headers={"ETag": None})
    assert bytes(client.get_range(None, BIGWIG, 4096, 8192, version=version)) == data[4096:8192]
    etag = client.head(None, BIGWIG)[1].etag
    emu.faults_s3.add(method="GET", path=BIGWIG, headers={"ETag": f'W/"{etag}"'})
    assert bytes(client.get_range(None, BIGWIG, 8192, len(data), version=version)) == data[8192:]


def test_a_disk_cache_never_serves_blocks_of_an_object_whose_versions_cannot_be_told(make_mount, emu, tmp_path):
    """With neither ETag nor Last-Modified from S3, blocks on disk could be of a replaced object: they are
    not kept or served for it (a remount after a replacement served the old bytes)."""
    options = ("disk_cache=64M", f"cache_dir={tmp_path / 'cache'}")
    for op in ("GET", "HEAD"):
        emu.faults_s3.add(method=op, path=BIGWIG, headers={"ETag": None, "Last-Modified": None}, times=None)
    path = BIGWIG_PATH
    m = make_mount(emu=emu, options=options, name="first")
    assert m.path.joinpath(*path).read_bytes() == stored(emu)
    m.stop()
    new = random.Random(7).randbytes(len(stored(emu)))
    emu.store.put(emu.bucket, BIGWIG, new)
    again = make_mount(emu=emu, options=options, name="second")
    assert again.path.joinpath(*path).read_bytes() == new
