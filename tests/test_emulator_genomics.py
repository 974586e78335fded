"""The emulator's genomics files must be valid for the real tools: checked with samtools, tabix and bgzip."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from bpfs.emulator import genomics as g

SAMTOOLS = shutil.which("samtools")
TABIX = shutil.which("tabix")
BGZIP = shutil.which("bgzip")
needs_samtools = pytest.mark.skipif(SAMTOOLS is None, reason="samtools not installed")
needs_tabix = pytest.mark.skipif(TABIX is None, reason="tabix not installed")

N_READS = 3000
N_RECORDS = 2000
REF_LEN = dict(g.REFERENCES)
REGIONS = [
    "chr1:1000-2000",
    "chr1:1-16384",
    "chr1:16384-16385",
    "chr1:100000-250000",
    "chr1:1-2000000",
    "chr2:500000-500100",
    "chr2:1000000-1400000",
    "chr2:1499000-1500000",
    "chrM:1-16569",
    "chrM:3000-3100",
    "chr1",
]


def run(*args: str | Path) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def parse_region(region: str) -> tuple[str, int, int]:
    chrom, _, span = region.partition(":")
    if not span:
        return chrom, 1, REF_LEN[chrom]
    a, b = span.split("-")
    return chrom, int(a), int(b)


def cigar_ref_len(cigar: str) -> int:
    return sum(int(n) for n, op in re.findall(r"(\d+)([MIDNSHP=X])", cigar) if op in "MDN=X")


@pytest.fixture(scope="module")
def bam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bam")
    bam, bai = g.make_bam(11, N_READS)
    (d / "x.bam").write_bytes(bam)
    (d / "x.bam.bai").write_bytes(bai)
    return d


@pytest.fixture(scope="module")
def bam_reads(bam_dir: Path) -> list[tuple[str, int, int]]:
    """(chrom, pos, end) 1-based inclusive of every read, from a full scan that does not use the index."""
    reads = []
    for line in run(SAMTOOLS, "view", bam_dir / "x.bam").splitlines():
        f = line.split("\t")
        pos = int(f[3])
        reads.append((f[2], pos, pos + cigar_ref_len(f[5]) - 1))
    return reads


def brute_count(reads: list[tuple[str, int, int]], region: str) -> int:
    chrom, a, b = parse_region(region)
    return sum(1 for c, s, e in reads if c == chrom and s <= b and e >= a)


@needs_samtools
def test_bam_is_valid(bam_dir: Path, bam_reads: list[tuple[str, int, int]]) -> None:
    bam = bam_dir / "x.bam"
    run(SAMTOOLS, "quickcheck", "-v", bam)
    header = run(SAMTOOLS, "view", "-H", bam)
    for name, length in g.REFERENCES:
        assert f"@SQ\tSN:{name}\tLN:{length}" in header
    assert header.startswith("@HD\tVN:1.6\tSO:coordinate")
    assert "@RG\t" in header and "@PG\t" in header
    assert int(run(SAMTOOLS, "view", "-c", bam)) == N_READS == len(bam_reads)
    # sorted, and every read inside its reference
    keys = [([n for n, _ in g.REFERENCES].index(c), s) for c, s, _ in bam_reads]
    assert keys == sorted(keys)
    assert all(1 <= s <= e <= REF_LEN[c] for c, s, e in bam_reads)
    lines = run(SAMTOOLS, "view", bam).splitlines()
    assert any("S" in ln.split("\t")[5] for ln in lines) and any("N" in ln.split("\t")[5] for ln in lines)
    assert any(int(ln.split("\t")[1]) & 16 for ln in lines)
    assert all("RG:Z:" in ln for ln in lines)
    assert all(len(ln.split("\t")[9]) == len(ln.split("\t")[10]) == 100 for ln in lines)


@needs_samtools
def test_bam_idxstats(bam_dir: Path, bam_reads: list[tuple[str, int, int]]) -> None:
    stats = {}
    for line in run(SAMTOOLS, "idxstats", bam_dir / "x.bam").splitlines():
        name, length, mapped, unmapped = line.split("\t")
        stats[name] = (int(length), int(mapped), int(unmapped))
    for name, length in g.REFERENCES:
        assert stats[name] == (length, sum(1 for c, _, _ in bam_reads if c == name), 0)
    assert stats["*"] == (0, 0, 0)
    assert stats["chr1"][1] > stats["chrM"][1] > 0


@needs_samtools
@pytest.mark.parametrize("region", REGIONS)
def test_bam_region_queries(bam_dir: Path, bam_reads: list[tuple[str, int, int]], region: str) -> None:
    assert int(run(SAMTOOLS, "view", "-c", bam_dir / "x.bam", region)) == brute_count(bam_reads, region)


@needs_samtools
def test_bai_matches_samtools_index(bam_dir: Path, bam_reads: list[tuple[str, int, int]], tmp_path: Path) -> None:
    shutil.copy(bam_dir / "x.bam", tmp_path / "x.bam")
    run(SAMTOOLS, "index", tmp_path / "x.bam")
    for region in REGIONS:
        assert int(run(SAMTOOLS, "view", "-c", tmp_path / "x.bam", region)) == brute_count(bam_reads, region)
    # same algorithm, same bin order: the index is byte-identical to the one samtools writes
    assert (tmp_path / "x.bam.bai").read_bytes() == (bam_dir / "x.bam.bai").read_bytes()


@needs_samtools
@pytest.mark.parametrize(("n", "read_len"), [(0, 100), (1, 100), (40, 151), (2500, 36)])
def test_bam_edge_sizes(tmp_path: Path, n: int, read_len: int) -> None:
    """Empty, single-read and odd read lengths (half-filled last sequence byte) are still valid and indexed."""
    bam, bai = g.make_bam(5, n, read_len)
    (tmp_path / "e.bam").write_bytes(bam)
    (tmp_path / "e.bam.bai").write_bytes(bai)
    run(SAMTOOLS, "quickcheck", "-v", tmp_path / "e.bam")
    lines = run(SAMTOOLS, "view", tmp_path / "e.bam").splitlines()
    assert len(lines) == n
    assert all(len(ln.split("\t")[9]) == read_len for ln in lines)
    assert int(run(SAMTOOLS, "view", "-c", tmp_path / "e.bam", "chr1:1-2000000")) == sum(
        1 for ln in lines if ln.split("\t")[2] == "chr1"
    )
    shutil.copy(tmp_path / "e.bam", tmp_path / "f.bam")
    run(SAMTOOLS, "index", tmp_path / "f.bam")
    assert (tmp_path / "f.bam.bai").read_bytes() == bai


@pytest.fixture(scope="module")
def vcf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vcf")
    vcf, tbi = g.make_vcf(11, N_RECORDS)
    (d / "x.vcf.gz").write_bytes(vcf)
    (d / "x.vcf.gz.tbi").write_bytes(tbi)
    return d


def vcf_records(path: Path) -> list[str]:
    return [ln for ln in gzip.decompress(path.read_bytes()).decode().splitlines() if not ln.startswith("#")]


def vcf_brute(records: list[str], region: str) -> list[str]:
    chrom, a, b = parse_region(region)
    out = []
    for rec in records:
        f = rec.split("\t")
        pos = int(f[1])
        if f[0] == chrom and pos <= b and pos + len(f[3]) - 1 >= a:
            out.append(rec)
    return out


@needs_tabix
def test_vcf_is_valid(vcf_dir: Path) -> None:
    path = vcf_dir / "x.vcf.gz"
    if BGZIP:
        run(BGZIP, "-t", path)
    run("gzip", "-t", path)
    assert path.read_bytes().endswith(bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000"))
    text = gzip.decompress(path.read_bytes()).decode()
    assert text.startswith("##fileformat=VCFv4.2\n")
    for name, length in g.REFERENCES:
        assert f"##contig=<ID={name},length={length}" in text
    assert "##INFO=<ID=" in text and "##FORMAT=<ID=GT" in text and "##FORMAT=<ID=DP" in text
    records = vcf_records(path)
    assert len(records) == N_RECORDS
    order = [n for n, _ in g.REFERENCES]
    keys = [(order.index(r.split("\t")[0]), int(r.split("\t")[1])) for r in records]
    assert keys == sorted(keys)
    assert all(r.split("\t")[8] == "GT:DP" and len(r.split("\t")) == 11 for r in records)
    assert run(TABIX, "-l", path).split() == order
    assert run(TABIX, "-H", path).splitlines()[0] == "##fileformat=VCFv4.2"


@needs_tabix
@pytest.mark.parametrize("region", [*REGIONS, "chr1:10000-20000", "chr2:1-1"])
def test_tabix_region_queries(vcf_dir: Path, region: str) -> None:
    got = run(TABIX, vcf_dir / "x.vcf.gz", region).splitlines()
    assert got == vcf_brute(vcf_records(vcf_dir / "x.vcf.gz"), region)


@needs_tabix
def test_tbi_matches_tabix(vcf_dir: Path, tmp_path: Path) -> None:
    shutil.copy(vcf_dir / "x.vcf.gz", tmp_path / "x.vcf.gz")
    run(TABIX, "-p", "vcf", tmp_path / "x.vcf.gz")
    ours = gzip.decompress((vcf_dir / "x.vcf.gz.tbi").read_bytes())
    theirs = gzip.decompress((tmp_path / "x.vcf.gz.tbi").read_bytes())
    assert ours == theirs  # compressed bytes may differ (libdeflate vs zlib), the content must not
    records = vcf_records(vcf_dir / "x.vcf.gz")
    for region in ("chr1:10000-20000", "chr2:1-1500000", "chrM:1-100"):
        assert run(TABIX, tmp_path / "x.vcf.gz", region).splitlines() == vcf_brute(records, region)


def test_bgzf_compress_roundtrip(tmp_path: Path) -> None:
    data = g.random_bytes(3, 200_000) + b"ACGT" * 50_000
    blob = g.bgzf_compress(data)
    assert gzip.decompress(blob) == data
    assert blob[12:16] == b"BC\x02\x00"
    assert g.bgzf_compress(b"") == bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    (tmp_path / "d.gz").write_bytes(blob)
    run("gzip", "-t", tmp_path / "d.gz")
    if BGZIP:
        run(BGZIP, "-t", tmp_path / "d.gz")


def test_deterministic() -> None:
    cases = [
        lambda s: g.make_bam(s, 500),
        lambda s: g.make_vcf(s, 300),
        lambda s: g.make_fastq_gz(s, 200),
        lambda s: g.make_fastqc(s, "S1"),
        lambda s: g.make_gene_counts(s, 300),
        lambda s: g.make_rnaseq_metrics(s, "S1"),
        lambda s: g.random_bytes(s, 4096),
    ]
    for make in cases:
        assert make(1) == make(1)
        assert make(1) != make(2)


def test_fastq(tmp_path: Path) -> None:
    blob = g.make_fastq_gz(4, 500, mate=1, read_len=75, name="A00123")
    (tmp_path / "r1.fastq.gz").write_bytes(blob)
    run("gzip", "-t", tmp_path / "r1.fastq.gz")
    r1 = gzip.decompress(blob).decode().splitlines()
    r2 = gzip.decompress(g.make_fastq_gz(4, 500, mate=2, read_len=75, name="A00123")).decode().splitlines()
    assert len(r1) == len(r2) == 4 * 500
    for lines, mate in ((r1, 1), (r2, 2)):
        for i in range(0, len(lines), 4):
            head, seq, plus, qual = lines[i : i + 4]
            assert head.startswith("@A00123:") and head.split(" ")[1].startswith(f"{mate}:N:0:")
            assert plus == "+" and len(seq) == len(qual) == 75
            assert set(seq) <= set("ACGTN") and all(33 <= ord(c) <= 74 for c in qual)
    assert [h.split(" ")[0] for h in r1[::4]] == [h.split(" ")[0] for h in r2[::4]]  # mates pair up
    assert r1[1::4] != r2[1::4]


def test_fastqc() -> None:
    html, blob = g.make_fastqc(2, "SAMPLE_7")
    assert html.startswith(b"<!DOCTYPE html>") and b"SAMPLE_7" in html
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        for f in ("fastqc_report.html", "fastqc_data.txt", "summary.txt"):
            assert f"SAMPLE_7_fastqc/{f}" in names
        assert zf.read("SAMPLE_7_fastqc/fastqc_report.html") == html
        data = zf.read("SAMPLE_7_fastqc/fastqc_data.txt").decode()
        summary = zf.read("SAMPLE_7_fastqc/summary.txt").decode().splitlines()
    assert data.startswith("##FastQC") and ">>Basic Statistics\tpass" in data
    assert data.count(">>END_MODULE") == len(summary) == 10
    assert all(ln.split("\t")[0] in ("PASS", "WARN", "FAIL") and ln.endswith("SAMPLE_7.fastq.gz") for ln in summary)


def test_gene_counts() -> None:
    lines = g.make_gene_counts(3, 500).decode().splitlines()
    assert lines[0].split("\t") == ["gene_id", "gene_name", "count"]
    rows = [ln.split("\t") for ln in lines[1:]]
    assert len(rows) == 500
    assert len({r[0] for r in rows}) == 500 and all(r[0].startswith("ENSG") for r in rows)
    counts = [int(r[2]) for r in rows]
    assert min(counts) == 0 and max(counts) > 1000


def test_rnaseq_metrics() -> None:
    doc = json.loads(g.make_rnaseq_metrics(3, "S9"))
    assert doc["sample"] == "S9"
    assert 0 < doc["mapped_reads"] <= doc["total_reads"]
    assert 0 < doc["mapped_pct"] <= 100 and 0 < doc["exonic_pct"] <= 100


def test_random_bytes() -> None:
    assert len(g.random_bytes(1, 12345)) == 12345
    assert g.random_bytes(1, 0) == b""
