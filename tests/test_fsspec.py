"""`basepair://` through fsspec, in-process (no FUSE): pandas, fs.ls/info/glob/find, ranges, fs.put into
samples/new/, pickling for workers, and Dask on a LocalCluster of worker processes."""

from __future__ import annotations

import json
import pickle

import fsspec
import pandas as pd
import pytest

from tests.helpers import MiB, api, make_file, s3_bytes, unique


@pytest.fixture(scope="module")
def config_path(emulator, tmp_path_factory):
    return str(emulator.write_config(tmp_path_factory.mktemp("fsspec") / "config.json"))


@pytest.fixture(scope="module")
def bfs(config_path):
    return fsspec.filesystem("basepair", config=config_path, list_ttl=30, skip_instance_cache=True)


def test_pandas_reads_a_result_table_by_url(bfs, config_path, emulator):
    url = "basepair://analyses/10000/expression_count/liver_rep1.genes.txt"
    frame = pd.read_csv(url, sep="\t", storage_options={"config": config_path})
    expected = s3_bytes(emulator, "analyses/7/10000/counts/liver_rep1.genes.txt").decode().splitlines()
    assert list(frame.columns) == expected[0].split("\t") and len(frame) == len(expected) - 1


def test_ls_info_glob_find(bfs, emulator):
    assert sorted(bfs.ls("", detail=False)) == ["analyses", "genomes", "samples", "workflows"]
    assert "analyses/new" in bfs.ls("analyses", detail=False)
    info = bfs.info("basepair://analyses/10000/bam/liver_rep1.bam")
    assert info["type"] == "file" and info["size"] == len(s3_bytes(emulator, "analyses/7/10000/star/liver_rep1.bam"))
    assert bfs.info("analyses/10000")["type"] == "directory"
    zips = bfs.glob("basepair://analyses/*/fastqc/*.zip")
    assert "analyses/10000/fastqc/liver_rep1_R1_fastqc.zip" in zips and all(z.endswith(".zip") for z in zips)
    found = bfs.find("analyses/10000/all")
    detail = api(emulator, "analyses/10000")
    assert len(found) == len(detail["files"])
    with pytest.raises(FileNotFoundError):
        bfs.info("analyses/999999")
    assert bfs.ls("analyses/10000/rnaseq_metrics+json", detail=False) == [
        "analyses/10000/rnaseq_metrics+json/rnaseq_metrics.json"]  # tag expressions resolve here too


def test_open_and_cat_file_with_ranges(bfs, emulator):
    bam = s3_bytes(emulator, "analyses/7/10000/star/liver_rep1.bam")
    with fsspec.open("basepair://analyses/10000/bam/liver_rep1.bam", config=bfs.storage_options["config"]) as f:
        assert f.read(4) == bam[:4]
        f.seek(100_000)
        assert f.read(1000) == bam[100_000:101_000]
    assert bfs.cat_file("analyses/10000/bam/liver_rep1.bam", start=5000, end=6000) == bam[5000:6000]
    assert bfs.cat_file("analyses/10000/bam/liver_rep1.bam", start=-10) == bam[-10:]
    assert json.loads(bfs.cat_file("analyses/10000/analysis.json"))["id"] == 10000


def test_random_reads_cost_what_they_read(bfs, emulator):
    """fsspec's own read cache is off: each read reaches the core's prefetcher, as through the mount."""
    size = bfs.info("analyses/10000/bigwig/liver_rep1.bigwig")["size"]
    before = bfs.core.stats.get("s3_bytes_fetched")
    with bfs.open("analyses/10000/bigwig/liver_rep1.bigwig") as f:
        for i in range(1, 51):  # random jumps, none at 0 (a read at 0 is a stream's start: 128 KiB)
            f.seek((i * 7919 * 4096) % (size - 4096))
            assert len(f.read(4096)) == 4096
    assert bfs.core.stats.get("s3_bytes_fetched") - before <= 50 * 4096


def test_put_creates_a_sample(bfs, emulator, tmp_path):
    name = unique("fsspec")
    r1, r2 = make_file(tmp_path / f"{name}_R1.fastq", 3 * MiB), make_file(tmp_path / f"{name}_R2.fastq", 9 * MiB)
    bfs.put([str(r1), str(r2)], f"basepair://samples/new/{name}/")
    with emulator.state.lock:
        (sample,) = [s for s in emulator.state.table("samples").values() if s["name"] == name]
        uploads = sorted((u for u in emulator.state.table("uploads").values() if u["sample"] == sample["id"]),
                         key=lambda u: u["order"])
    assert [(u["status"], u["is_paired_end"]) for u in uploads] == [("completed", False), ("completed", True)]
    assert [s3_bytes(emulator, u["key"]) for u in uploads] == [r1.read_bytes(), r2.read_bytes()]


def test_a_failed_upload_fails_the_put(bfs, emulator, tmp_path):
    name = unique("fsfail")
    src = make_file(tmp_path / f"{name}.fastq", 1000)
    emulator.faults_s3.add(method="PUT", path=f"/{name}.fastq$", status=500, times=None)
    try:
        with pytest.raises(OSError):
            bfs.put(str(src), f"basepair://samples/new/{name}.fastq")
    finally:
        emulator.faults_s3.clear()
    with emulator.state.lock:
        assert not [s for s in emulator.state.table("samples").values() if s["name"] == name]


def test_pickling_gives_each_worker_its_own_filesystem(bfs):
    copy = pickle.loads(pickle.dumps(bfs))
    assert copy.storage_options == bfs.storage_options
    assert copy.core is not bfs.core and copy.info("analyses/10000")["type"] == "directory"


def test_dask_on_a_local_cluster_reads_what_pandas_reads_on_the_mount(config_path, mount, tmp_path):
    distributed = pytest.importorskip("distributed")
    import dask
    dd = pytest.importorskip("dask.dataframe")
    pattern = "basepair://analyses/*/expression_count/*.genes.txt"
    on_mount = sorted(mount.path.glob("analyses/*/expression_count/*.genes.txt"))
    assert on_mount
    expected = pd.concat([pd.read_csv(p, sep="\t") for p in on_mount], ignore_index=True)
    # the workers' scratch space in the test's own directory, not a dask-scratch-space left in /tmp
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        frame = dd.read_csv(pattern, sep="\t", storage_options={"config": config_path}).compute()
    # the same values; the string dtypes differ (Dask uses pyarrow strings, pandas its own)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected, check_dtype=False)
