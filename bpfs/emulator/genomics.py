"""Deterministic generators of realistic genomics files for the Basepair emulator.

The emulator serves BAM/BAI, VCF.gz/TBI, FASTQ.gz, FastQC zips and count tables so that the filesystem can be
exercised with real tools (samtools, tabix, range reads of indexed files). Everything is pure Python on purpose:
the emulator must run anywhere without htslib/pysam. Given a seed every generator returns byte-identical output
(BGZF headers carry no mtime, zip timestamps are fixed, RNGs are seeded), so tests can compare what the
filesystem serves with what was generated.

The BAI and TBI indexes are built with the same algorithm as htslib's ``hts_idx_push``/``hts_idx_finish``, down
to the khash bucket order in which bins are written, so ``samtools index`` / ``tabix`` on our files produce the
same index content.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "REFERENCES",
    "bgzf_compress",
    "make_bam",
    "make_vcf",
    "make_fastq_gz",
    "make_fastqc",
    "make_gene_counts",
    "make_rnaseq_metrics",
    "random_bytes",
]

REFERENCES: list[tuple[str, int]] = [("chr1", 2_000_000), ("chr2", 1_500_000), ("chrM", 16_569)]

# ---------------------------------------------------------------------------------------------------------------
# BGZF
# ---------------------------------------------------------------------------------------------------------------

_BGZF_BLOCK_INPUT = 0xFF00  # bgzip's BGZF_BLOCK_SIZE: input bytes per block, leaves room for incompressible data
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_BGZF_LEVEL = 6  # what bgzip/samtools use by default (zlib's default level)


def _bgzf_block(chunk: bytes, level: int = _BGZF_LEVEL) -> bytes:
    """One BGZF member: gzip with the BC extra field giving the member's total size."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8)
    cdata = comp.compress(chunk) + comp.flush()
    if len(cdata) + 26 > 0x10000:  # incompressible: a stored deflate block always fits
        comp = zlib.compressobj(0, zlib.DEFLATED, -15, 8)
        cdata = comp.compress(chunk) + comp.flush()
    header = struct.pack("<4BI2BH2BHH", 31, 139, 8, 4, 0, 0, 255, 6, 66, 67, 2, len(cdata) + 25)
    return b"".join((header, cdata, struct.pack("<II", zlib.crc32(chunk), len(chunk))))


def _bgzf_blocks(data: bytes) -> list[bytes]:
    """Compress `data` in bgzip-sized pieces; zlib releases the GIL, so a thread pool uses every core."""
    mv = memoryview(data)
    chunks = [mv[i : i + _BGZF_BLOCK_INPUT] for i in range(0, len(data), _BGZF_BLOCK_INPUT)]
    if len(chunks) < 8:
        return [_bgzf_block(c) for c in chunks]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(_bgzf_block, chunks))


def bgzf_compress(data: bytes) -> bytes:
    """BGZF (blocked gzip, as bgzip writes it: blocks of <= 64 KiB input, BC extra field, EOF marker block)."""
    return b"".join(_bgzf_blocks(data)) + _BGZF_EOF


class _VirtualOffsets:
    """Maps positions in the uncompressed stream to BGZF virtual offsets (coffset << 16 | uoffset).

    The stream is `prefix` (compressed on its own, like the BAM header samtools flushes) followed by `body`
    cut into fixed-size blocks. A position at the very end of a block maps to the start of the next block, which
    is what htslib's bgzf_tell() reports after reading up to there, so the index matches `samtools index`.
    """

    def __init__(self, prefix: bytes, body: bytes) -> None:
        self.prefix_blocks = _bgzf_blocks(prefix) if prefix else []
        self.body_blocks = _bgzf_blocks(body)
        self.body_len = len(body)
        addr = sum(len(b) for b in self.prefix_blocks)
        self.addrs = []
        for b in self.body_blocks:
            self.addrs.append(addr)
            addr += len(b)
        self.eof_addr = addr
        self.addrs.append(addr)

    def data(self) -> bytes:
        return b"".join(self.prefix_blocks) + b"".join(self.body_blocks) + _BGZF_EOF

    def voffsets(self, positions: list[int]) -> list[int]:
        """Virtual offsets of body positions (0 <= p <= len(body))."""
        addrs, size, end, eof = self.addrs, _BGZF_BLOCK_INPUT, self.body_len, self.eof_addr << 16
        out = []
        for p in positions:
            if p >= end:
                out.append(eof)
            else:
                k, u = divmod(p, size)
                out.append(addrs[k] << 16 | u)
        return out


# ---------------------------------------------------------------------------------------------------------------
# UCSC binning index shared by BAI and TBI (htslib hts.c semantics, min_shift 14, 5 levels)
# ---------------------------------------------------------------------------------------------------------------

_N_BINS = 37449  # ((1 << 18) - 1) // 7
_META_BIN = _N_BINS + 1  # pseudo-bin holding the reference's offsets and mapped/unmapped counts
_MIN_MARKER_DIST = 0x10000
_LEVEL_FIRST = [0, 1, 9, 73, 585, 4681]


def _reg2bin(beg: int, end: int) -> int:
    """Smallest bin containing the 0-based half-open interval [beg, end)."""
    end -= 1
    if beg >> 14 == end >> 14:
        return 4681 + (beg >> 14)
    if beg >> 17 == end >> 17:
        return 585 + (beg >> 17)
    if beg >> 20 == end >> 20:
        return 73 + (beg >> 20)
    if beg >> 23 == end >> 23:
        return 9 + (beg >> 23)
    if beg >> 26 == end >> 26:
        return 1 + (beg >> 26)
    return 0


def _khash_order(puts: list[int]) -> list[int]:
    """Bucket order of an htslib khash(int) after this sequence of kh_put calls (repeats included).

    htslib writes bins in hash iteration order; replaying its open addressing (triangular probing, 0.77 load
    factor, in-place kick-out rehash) lets us write them in the same order.
    """
    n_buckets = size = upper = 0
    keys: list[int] = []
    empty: list[bool] = []
    for key in puts:
        if size >= upper:  # no deletions while indexing, so n_occupied == size
            new_n = max(4, 1 << n_buckets.bit_length()) if n_buckets else 4
            arr = keys + [0] * (new_n - n_buckets)
            old_live = [not e for e in empty]
            new_empty = [True] * new_n
            mask = new_n - 1
            for j in range(n_buckets):
                if not old_live[j]:
                    continue
                k = arr[j]
                old_live[j] = False
                while True:
                    i, step = k & mask, 0
                    while not new_empty[i]:
                        step += 1
                        i = (i + step) & mask
                    new_empty[i] = False
                    if i < n_buckets and old_live[i]:
                        arr[i], k = k, arr[i]
                        old_live[i] = False
                    else:
                        arr[i] = k
                        break
            keys, empty, n_buckets = arr, new_empty, new_n
            upper = int(n_buckets * 0.77 + 0.5)
        mask = n_buckets - 1
        i, step = key & mask, 0
        while not empty[i] and keys[i] != key:
            step += 1
            i = (i + step) & mask
        if empty[i]:
            keys[i] = key
            empty[i] = False
            size += 1
    return [keys[i] for i in range(n_buckets) if not empty[i]]


class _RefIndex:
    """Binning + linear index of one reference sequence."""

    __slots__ = ("bins", "puts", "linear")

    def __init__(self) -> None:
        self.bins: dict[int, list[tuple[int, int]]] = {}
        self.puts: list[int] = []
        self.linear: list[int] = []  # -1 = not set yet

    def add_chunk(self, b: int, beg: int, end: int) -> None:
        self.puts.append(b)
        self.bins.setdefault(b, []).append((beg, end))


def _build_index(
    n_ref: int, records: Iterable[tuple[int, int, int, int]], offset0: int, final_offset: int
) -> list[_RefIndex | None]:
    """Index coordinate-sorted records given as (tid, beg, end, voffset of the record), like htslib.

    Replays hts_idx_push (a chunk per run of records sharing a bin, the meta pseudo-bin per reference, the linear
    index holding the first record overlapping each 16 kb window) and hts_idx_finish (fill the linear index, fold
    bins spanning < 64 KiB of compressed data into their parent, merge chunks starting in the same block).
    """
    refs: list[_RefIndex | None] = [None] * n_ref
    last_tid = -1
    last_bin = save_bin = save_tid = -1
    save_off = off_beg = offset0
    n_mapped = 0
    last_window = -1
    cur: _RefIndex | None = None
    for tid, beg, end, start in records:
        if tid != last_tid:
            if refs[tid] is not None:
                raise ValueError("records of a reference are not contiguous")
            cur = refs[tid] = _RefIndex()
            last_tid, last_bin, last_window = tid, -1, -1
        # linear index: windows are filled by the first record reaching them (records sorted by beg)
        wend = (end - 1) >> 14
        if wend > last_window:
            lin = cur.linear
            wbeg = max(beg >> 14, last_window + 1)
            if len(lin) < wbeg:
                lin.extend([-1] * (wbeg - len(lin)))
            lin.extend([start] * (wend + 1 - wbeg))
            last_window = wend
        b = _reg2bin(beg, end)
        if b != last_bin:
            if save_bin != -1:
                refs[save_tid].add_chunk(save_bin, save_off, start)
                if last_bin == -1:  # first record of a new reference: close the previous one's meta bin
                    refs[save_tid].add_chunk(_META_BIN, off_beg, start)
                    refs[save_tid].add_chunk(_META_BIN, n_mapped, 0)
                    n_mapped = 0
                    off_beg = start
            save_off = start
            save_bin = last_bin = b
            save_tid = tid
        n_mapped += 1
    if save_tid >= 0:
        refs[save_tid].add_chunk(save_bin, save_off, final_offset)
        refs[save_tid].add_chunk(_META_BIN, off_beg, final_offset)
        refs[save_tid].add_chunk(_META_BIN, n_mapped, 0)
    for ref in refs:
        if ref is not None:
            _finish_ref(ref)
    return refs


def _finish_ref(ref: _RefIndex) -> None:
    lin = ref.linear  # windows no record reaches take the next record's offset (htslib >= 1.10)
    for i in range(len(lin) - 2, -1, -1):
        if lin[i] == -1:
            lin[i] = lin[i + 1]
    bins = ref.bins
    for lvl in range(5, 0, -1):
        for b in [b for b in bins if _LEVEL_FIRST[lvl] <= b < _N_BINS]:
            chunks = bins[b]
            if lvl < 5:
                chunks.sort()
            if (chunks[-1][1] >> 16) - (chunks[0][0] >> 16) < _MIN_MARKER_DIST:
                parent = (b - 1) >> 3
                if parent in bins:
                    bins[parent].extend(chunks)
                    del bins[b]
    if 0 in bins:
        bins[0].sort()
    for b, chunks in bins.items():
        if b >= _N_BINS:
            continue
        merged = [chunks[0]]
        for beg, end in chunks[1:]:
            mbeg, mend = merged[-1]
            if mend >> 16 >= beg >> 16:
                if mend < end:
                    merged[-1] = (mbeg, end)
            else:
                merged.append((beg, end))
        bins[b] = merged


def _index_core(refs: list[_RefIndex | None]) -> bytes:
    """Serialize per-reference bins and linear indexes (the part BAI and TBI share); no unplaced records."""
    out = io.BytesIO()
    w = out.write
    for ref in refs:
        if ref is None:
            w(struct.pack("<ii", 0, 0))
            continue
        live = [b for b in _khash_order(ref.puts) if b in ref.bins]
        w(struct.pack("<i", len(live)))
        for b in live:
            chunks = ref.bins[b]
            w(struct.pack("<Ii", b, len(chunks)))
            w(struct.pack(f"<{2 * len(chunks)}Q", *(x for c in chunks for x in c)))
        w(struct.pack(f"<i{len(ref.linear)}Q", len(ref.linear), *ref.linear))
    w(struct.pack("<Q", 0))  # n_no_coor
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Shared random pools
# ---------------------------------------------------------------------------------------------------------------

_POOL_SIZE = 1 << 20
# byte -> two 4-bit BAM base codes (A=1 C=2 G=4 T=8), uniform over the 16 pairs
_PACK2 = bytes((1 << ((b >> 2) & 3)) << 4 | 1 << (b & 3) for b in range(256))
_ACGT = bytes(b"ACGT"[b & 3] for b in range(256))
# byte -> Phred quality, shaped like HiSeq output: mostly Q30-Q41, a tail of low values and Q2 ("#") calls.
# The weights sum to 256 so a random byte picks a quality in one translate().
_QUAL_WEIGHTS = {41: 24, 40: 22, 39: 20, 38: 18, 37: 18, 36: 16, 35: 15, 34: 14, 33: 13, 32: 12, 31: 10, 30: 9}
_QUAL_WEIGHTS |= {29: 7, 28: 6, 27: 5, 26: 5, 25: 4, 24: 4, 23: 3, 22: 3, 21: 3, 20: 2, 19: 2, 18: 2, 17: 2}
_QUAL_WEIGHTS |= {16: 2, 15: 2, 14: 1, 13: 1, 12: 1, 11: 1, 10: 1, 2: 8}
_QUAL_TABLE = bytes(q for q, w in _QUAL_WEIGHTS.items() for _ in range(w))
assert len(_QUAL_TABLE) == 256


def _split_counts(n: int) -> list[int]:
    """Records per reference: ~2% on chrM (mitochondrial reads are always there), the rest by length."""
    counts = [0] * len(REFERENCES)
    big = [i for i, (name, _) in enumerate(REFERENCES) if name != "chrM"]
    for i, (name, _) in enumerate(REFERENCES):
        if name == "chrM":
            counts[i] = n * 2 // 100
    rest = n - sum(counts)
    big_total = sum(REFERENCES[i][1] for i in big)
    for i in big:
        counts[i] = rest * REFERENCES[i][1] // big_total
    counts[big[0]] += n - sum(counts)
    return counts


def _qual_pool(rng: random.Random, size: int = _POOL_SIZE) -> bytes:
    return rng.randbytes(size).translate(_QUAL_TABLE)


# ---------------------------------------------------------------------------------------------------------------
# BAM + BAI
# ---------------------------------------------------------------------------------------------------------------

_CIGAR_OPS = "MIDNSHP=X"
_REF_CONSUMING = set("MDN=X")


def _cigar_templates(read_len: int) -> list[tuple[int, bytes, int, str, int]]:
    """(weight, packed cigar, reference length, text, n_ops) for the CIGAR shapes reads get."""
    shapes: list[tuple[int, list[tuple[int, str]]]] = [(700, [(read_len, "M")])]
    for s in (2, 5, 9, 17, 30):
        if read_len > 2 * s:
            shapes.append((12, [(s, "S"), (read_len - s, "M")]))
            shapes.append((12, [(read_len - s, "M"), (s, "S")]))
    for k in (1, 2, 4):
        a = read_len // 3 + k
        if read_len > a + k + 5:
            shapes.append((8, [(a, "M"), (k, "I"), (read_len - a - k, "M")]))
            shapes.append((8, [(a, "M"), (k, "D"), (read_len - a, "M")]))
    for n in (85, 260, 1_350, 4_700, 12_500, 33_000, 150_000):  # spliced (RNA-seq): long reference spans
        a = read_len // 2 + n % 7
        if read_len > a + 5:
            shapes.append((6, [(a, "M"), (n, "N"), (read_len - a, "M")]))
    out = []
    for weight, ops in shapes:
        packed = struct.pack(f"<{len(ops)}I", *(n << 4 | _CIGAR_OPS.index(op) for n, op in ops))
        ref_len = sum(n for n, op in ops if op in _REF_CONSUMING)
        out.append((weight, packed, ref_len, "".join(f"{n}{op}" for n, op in ops), len(ops)))
    return out


def _bam_header(sample: str, rg: str) -> tuple[bytes, str]:
    lines = ["@HD\tVN:1.6\tSO:coordinate"]
    lines += [f"@SQ\tSN:{name}\tLN:{length}" for name, length in REFERENCES]
    lines.append(f"@RG\tID:{rg}\tSM:{sample}\tLB:{sample}_lib1\tPL:ILLUMINA\tPU:HVK2NDSXY.2.{sample}")
    lines.append("@PG\tID:bwa\tPN:bwa\tVN:0.7.17-r1188\tCL:bwa mem -t 16 -R @RG\\tID:" + rg + " hg38.fa r1.fq.gz")
    lines.append("@PG\tID:samtools\tPN:samtools\tPP:bwa\tVN:1.16.1\tCL:samtools sort -o sorted.bam -")
    text = "\n".join(lines) + "\n"
    out = [b"BAM\x01", struct.pack("<i", len(text)), text.encode(), struct.pack("<i", len(REFERENCES))]
    for name, length in REFERENCES:
        out.append(struct.pack("<i", len(name) + 1) + name.encode() + b"\x00" + struct.pack("<i", length))
    return b"".join(out), text



def _remembered(make: Callable) -> Callable:
    """The builders are pure functions of a seed: a process that starts several emulators (the test suite)
    builds each small file once. Large ones (the benchmark's BAM) are built anew rather than kept."""
    cached = functools.lru_cache(maxsize=32)(make)

    @functools.wraps(make)
    def build(seed: int, n: int, *args: object, **kwargs: object) -> object:
        return cached(seed, n, *args, **kwargs) if n <= 100_000 else make(seed, n, *args, **kwargs)

    return build


@_remembered
def make_bam(seed: int, n_reads: int, read_len: int = 100) -> tuple[bytes, bytes]:
    """A coordinate-sorted BAM of `n_reads` mapped single reads over REFERENCES, and its BAI.

    Reads land mostly on chr1/chr2 (a few percent on chrM, like real libraries), carry random bases and
    Illumina-like qualities, CIGARs that are mostly plain matches with some soft-clips, indels and long spliced
    gaps (so bins above the 16 kb level get used), MAPQ, strand flags and RG/NM/AS tags. The BAI is what
    `samtools index` writes for it. Vectorised through random pools and struct so ~400k reads take a few seconds.
    """
    if read_len < 1:
        raise ValueError("read_len must be >= 1")
    rng = random.Random(f"bam:{seed}")
    sample = f"sample{seed % 100000:05d}"
    rg = f"{sample}.L002"
    header, _ = _bam_header(sample, rg)

    templates = _cigar_templates(read_len)
    lookup: list[int] = []  # weighted choice through a 1024-entry table: one getrandbits per read
    total_w = sum(t[0] for t in templates)
    for i, t in enumerate(templates):
        lookup += [i] * (t[0] * 1024 // total_w)
    lookup += [0] * (1024 - len(lookup))

    counts = _split_counts(n_reads)

    # placements: (tid, pos, template) sorted by position; keys packed into ints so sorting is cheap
    placements: list[tuple[int, int, int]] = []
    for tid, (_, ref_len) in enumerate(REFERENCES):
        keys = []
        for _ in range(counts[tid]):
            t = lookup[rng.getrandbits(10)]
            span = templates[t][2]
            if span > ref_len // 2:
                t, span = 0, templates[0][2]
            span = min(span, ref_len)
            keys.append(rng.randrange(ref_len - span + 1) << 10 | t)
        keys.sort()
        placements.extend((tid, k >> 10, k & 1023) for k in keys)

    seq_pool = rng.randbytes(_POOL_SIZE).translate(_PACK2)
    qual_pool = _qual_pool(rng)
    l_seq_bytes = (read_len + 1) // 2
    odd = read_len & 1
    seq_span = _POOL_SIZE - l_seq_bytes
    qual_span = _POOL_SIZE - read_len
    rg_tag = b"RGZ" + rg.encode() + b"\x00"
    nm_tags = [b"NMC" + bytes([k]) for k in range(8)]
    as_tags = [b"ASC" + bytes([k]) for k in range(256)]
    fixed = struct.Struct("<iiiBBHHHiiii")
    pack_fixed = fixed.pack
    flowcell = "HVK2NDSXY"
    getrandbits = rng.getrandbits

    parts: list[bytes] = []
    starts: list[int] = []
    pos_u = 0
    spans = [(t[1], t[2], t[4]) for t in templates]
    for n, (tid, pos, t) in enumerate(placements):
        cigar, span, n_cig = spans[t]
        r = getrandbits(32)
        flag = 16 if r & 1 else 0
        if not r & 0x7E:  # ~1.5% marked duplicates
            flag |= 1024
        mapq = 60 if (r >> 7) & 15 else (r >> 11) % 60
        nm = 0 if (r >> 20) & 3 else (r >> 17) & 7
        tile = 1101 + ((r >> 22) & 7) * 100 + (n % 78)
        name = f"A00{seed % 1000:03d}:91:{flowcell}:2:{tile}:{(r >> 4) % 32000 + 1000}:{n % 37000 + 1000}".encode()
        so = getrandbits(20) % seq_span
        qo = getrandbits(20) % qual_span
        seq = seq_pool[so : so + l_seq_bytes]
        if odd:
            seq = seq[:-1] + bytes((seq[-1] & 0xF0,))
        aux = rg_tag + nm_tags[nm] + as_tags[max(0, read_len - 6 * nm) & 255]
        l_name = len(name) + 1
        block = 32 + l_name + 4 * n_cig + l_seq_bytes + read_len + len(aux)
        parts.append(
            pack_fixed(block, tid, pos, l_name, mapq, _reg2bin(pos, pos + span), n_cig, flag, read_len, -1, -1, 0)
        )
        parts += (name, b"\x00", cigar, seq, qual_pool[qo : qo + read_len], aux)
        starts.append(pos_u)
        pos_u += block + 4
    body = b"".join(parts)
    del parts
    starts.append(pos_u)

    vo = _VirtualOffsets(header, body)
    voffs = vo.voffsets(starts)
    offset0 = voffs[0] if placements else vo.eof_addr << 16
    records = ((tid, pos, pos + spans[t][1], voffs[i]) for i, (tid, pos, t) in enumerate(placements))
    refs = _build_index(len(REFERENCES), records, offset0, voffs[-1])
    bai = b"BAI\x01" + struct.pack("<i", len(REFERENCES)) + _index_core(refs)
    return vo.data(), bai


# ---------------------------------------------------------------------------------------------------------------
# VCF + TBI
# ---------------------------------------------------------------------------------------------------------------


def _vcf_header(samples: list[str]) -> str:
    lines = [
        "##fileformat=VCFv4.2",
        "##fileDate=20240115",
        "##source=GATK HaplotypeCaller 4.4.0.0",
        "##reference=hg38.fa",
    ]
    lines += [f"##contig=<ID={name},length={length},assembly=hg38>" for name, length in REFERENCES]
    lines += [
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FILTER=<ID=LowQual,Description="Low quality">',
        '##INFO=<ID=AC,Number=A,Type=Integer,Description="Allele count in genotypes">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele Frequency">',
        '##INFO=<ID=AN,Number=1,Type=Integer,Description="Total number of alleles in called genotypes">',
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Approximate read depth">',
        '##INFO=<ID=MQ,Number=1,Type=Float,Description="RMS Mapping Quality">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
    ]
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]))
    return "\n".join(lines) + "\n"


@_remembered
def make_vcf(seed: int, n_records: int) -> tuple[bytes, bytes]:
    """A bgzipped, position-sorted VCF 4.2 with two samples (GT:DP) over REFERENCES, and its tabix index.

    SNVs mostly, some insertions and deletions (multi-base REF, so records span several bases like real ones).
    The TBI is what `tabix -p vcf` writes: the VCF preset, contigs in order of appearance, BGZF-compressed.
    """
    rng = random.Random(f"vcf:{seed}")
    samples = [f"sample{seed % 100000:05d}", f"sample{(seed + 1) % 100000:05d}"]
    header = _vcf_header(samples).encode()
    bases = "ACGT"
    counts = _split_counts(n_records)
    lines: list[bytes] = []
    spans: list[tuple[int, int, int]] = []
    gts = ["0/0", "0/1", "0/1", "1/1", "0/1", "./."]
    for tid, (chrom, ref_len) in enumerate(REFERENCES):
        positions = sorted(rng.randrange(1, ref_len - 60) for _ in range(counts[tid]))
        for pos in positions:
            kind = rng.random()
            ref = bases[rng.getrandbits(2)]
            if kind < 0.84:
                alt = bases[(bases.index(ref) + 1 + rng.randrange(3)) % 4]
            elif kind < 0.92:  # deletion: REF spans several bases
                ref += "".join(rng.choice(bases) for _ in range(rng.randrange(1, 25)))
                alt = ref[0]
            else:
                alt = ref + "".join(rng.choice(bases) for _ in range(rng.randrange(1, 12)))
            dps = [rng.randrange(4, 80) for _ in samples]
            calls = [rng.choice(gts) for _ in samples]
            ac = sum(c.count("1") for c in calls)
            an = sum(2 for c in calls if c != "./.")
            qual = round(rng.uniform(20, 3000), 2)
            filt = "PASS" if qual >= 30 else "LowQual"
            af = round(ac / an, 3) if an else 0.0
            vid = f"rs{rng.randrange(10**6, 10**9)}" if rng.random() < 0.4 else "."
            info = f"AC={ac};AF={af};AN={an};DP={sum(dps)};MQ={round(rng.uniform(40, 60), 2)}"
            fmt = "\t".join(f"{c}:{d}" for c, d in zip(calls, dps, strict=True))
            lines.append(f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t{qual}\t{filt}\t{info}\tGT:DP\t{fmt}\n".encode())
            spans.append((tid, pos - 1, pos - 1 + len(ref)))
    starts = []
    p = len(header)
    for line in lines:
        starts.append(p)
        p += len(line)
    starts.append(p)
    vo = _VirtualOffsets(b"", header + b"".join(lines))
    voffs = vo.voffsets(starts)
    # tabix numbers contigs in order of appearance and only lists those with records
    present = [tid for tid in range(len(REFERENCES)) if counts[tid]]
    remap = {tid: i for i, tid in enumerate(present)}
    records = ((remap[tid], b, e, voffs[i]) for i, (tid, b, e) in enumerate(spans))
    refs = _build_index(len(present), records, voffs[0], voffs[-1])
    names = b"".join(REFERENCES[tid][0].encode() + b"\x00" for tid in present)
    meta = struct.pack("<7i", 2, 1, 2, 0, ord("#"), 0, len(names)) + names  # TBX_VCF preset
    tbi = b"TBI\x01" + struct.pack("<i", len(present)) + meta + _index_core(refs)
    return vo.data(), bgzf_compress(tbi)


# ---------------------------------------------------------------------------------------------------------------
# FASTQ, FastQC, counts, metrics, opaque bytes
# ---------------------------------------------------------------------------------------------------------------


@_remembered
def make_fastq_gz(seed: int, n_reads: int, mate: int = 1, read_len: int = 100, name: str = "read") -> bytes:
    """A gzipped FASTQ with Casava 1.8 headers (`@<name>:<run>:<flowcell>:<lane>:<tile>:<x>:<y> <mate>:N:0:<bc>`).

    Read names depend only on the seed, so mate 1 and mate 2 of the same seed pair up like real R1/R2 files.
    Compressed as BGZF (multi-member gzip, as bgzip writes FASTQ): any gzip reader takes it, and the blocks
    compress on all cores.
    """
    name_rng = random.Random(f"fastq-names:{seed}")
    rng = random.Random(f"fastq:{seed}:{mate}")
    barcode = (
        "".join(name_rng.choice("ACGT") for _ in range(8)) + "+" + "".join(name_rng.choice("ACGT") for _ in range(8))
    )
    seq_pool = rng.randbytes(_POOL_SIZE).translate(_ACGT)
    qual_pool = _qual_pool(rng).translate(bytes((b + 33) & 0xFF for b in range(256)))
    span = _POOL_SIZE - read_len
    out = []
    tile, x, y = 1101, 1000, 1000
    for _ in range(n_reads):
        step = name_rng.getrandbits(12)
        x += step + 1
        if x > 32000:
            x, y = 1000 + (step & 511), y + 1 + (step & 63)
            if y > 37000:
                tile, y = tile + 1, 1000
        so = rng.getrandbits(20) % span
        qo = rng.getrandbits(20) % span
        seq = seq_pool[so : so + read_len]
        qual = qual_pool[qo : qo + read_len]
        if not rng.getrandbits(7) and read_len:  # the odd no-call at the first cycle
            seq, qual = b"N" + seq[1:], b"#" + qual[1:]
        out.append(b"@%s:91:HVK2NDSXY:2:%d:%d:%d %d:N:0:%s\n" % (name.encode(), tile, x, y, mate, barcode.encode()))
        out += (seq, b"\n+\n", qual, b"\n")
    return bgzf_compress(b"".join(out))


_FASTQC_MODULES = [
    "Basic Statistics",
    "Per base sequence quality",
    "Per sequence quality scores",
    "Per base sequence content",
    "Per sequence GC content",
    "Per base N content",
    "Sequence Length Distribution",
    "Sequence Duplication Levels",
    "Overrepresented sequences",
    "Adapter Content",
]


def _fastqc_data(rng: random.Random, filename: str, statuses: dict[str, str]) -> tuple[str, dict[str, str]]:
    total = rng.randrange(8_000_000, 60_000_000)
    gc = rng.randrange(40, 52)
    read_len = 101
    basic = {
        "Filename": filename,
        "File type": "Conventional base calls",
        "Encoding": "Sanger / Illumina 1.9",
        "Total Sequences": str(total),
        "Total Bases": f"{total * read_len / 1e9:.1f} Gbp",
        "Sequences flagged as poor quality": "0",
        "Sequence length": str(read_len),
        "%GC": str(gc),
    }
    out = ["##FastQC\t0.12.1"]

    def module(title: str, columns: list[str], rows: list[list[object]]) -> None:
        out.append(f">>{title}\t{statuses[title].lower()}")
        out.append("#" + "\t".join(columns))
        out.extend("\t".join(str(v) for v in row) for row in rows)
        out.append(">>END_MODULE")

    module("Basic Statistics", ["Measure", "Value"], [[k, v] for k, v in basic.items()])
    groups = [str(i) for i in range(1, 10)] + [f"{i}-{i + 1}" for i in range(10, read_len, 2)]
    rows = []
    for i, g in enumerate(groups):
        mean = round(36.5 - 0.04 * i - rng.random() * 0.6, 6)
        rows.append([g, mean, 37.0, 36.0, 37.0, 32.0 - (i > 40) * 5, 37.0])
    module(
        "Per base sequence quality",
        ["Base", "Mean", "Median", "Lower Quartile", "Upper Quartile", "10th Percentile", "90th Percentile"],
        rows,
    )
    module(
        "Per sequence quality scores",
        ["Quality", "Count"],
        [[q, round(total * 2.0 ** (q - 38) * (1 + rng.random()), 1)] for q in range(12, 39)],
    )
    rows = []
    for g in groups:
        a, c = rng.uniform(24, 30), rng.uniform(20, 26)
        t = rng.uniform(24, 30)
        rows.append([g, round(100 - a - c - t, 6), round(a, 6), round(t, 6), round(c, 6)])
    module("Per base sequence content", ["Base", "G", "A", "T", "C"], rows)
    module(
        "Per sequence GC content",
        ["GC Content", "Count"],
        [[p, round(total * 0.04 * 2.718 ** (-((p - gc) ** 2) / 120), 1)] for p in range(101)],
    )
    module("Per base N content", ["Base", "N-Count"], [[g, 0.01 if g == "1" else 0.0] for g in groups])
    module("Sequence Length Distribution", ["Length", "Count"], [[read_len, float(total)]])
    dup_levels = ["1", "2", "3", "4", "5", "6", "7", "8", "9", ">10", ">50", ">100", ">500", ">1k", ">5k", ">10k+"]
    rows, left = [], 100.0
    for lvl in dup_levels:
        share = round(left * (0.7 if lvl == "1" else 0.35), 6)
        left -= share
        rows.append([lvl, share, share])
    out.append(f">>Sequence Duplication Levels\t{statuses['Sequence Duplication Levels'].lower()}")
    out.append(f"#Total Deduplicated Percentage\t{round(60 + rng.random() * 30, 6)}")
    out.append("#Duplication Level\tPercentage of deduplicated\tPercentage of total")
    out.extend("\t".join(str(v) for v in row) for row in rows)
    out.append(">>END_MODULE")
    over = []
    if statuses["Overrepresented sequences"] != "PASS":
        seq = "".join(rng.choice("ACGT") for _ in range(50))
        over.append([seq, total // 900, round(100 / 900, 6), "No Hit"])
    module("Overrepresented sequences", ["Sequence", "Count", "Percentage", "Possible Source"], over)
    module(
        "Adapter Content",
        ["Position", "Illumina Universal Adapter", "Illumina Small RNA 3' Adapter", "Nextera Transposase Sequence"],
        [[g, round(i * 0.004, 6), 0.0, 0.0] for i, g in enumerate(groups)],
    )
    return "\n".join(out) + "\n", basic


def _fastqc_html(sample: str, statuses: dict[str, str], basic: dict[str, str]) -> str:
    items = "\n".join(
        f'<li><img src="Icons/{s.lower()}.png" alt="[{s}]"/><a href="#M{i}">{m}</a></li>'
        for i, (m, s) in enumerate(statuses.items())
    )
    rows = "\n".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in basic.items())
    sections = "\n".join(
        f'<div class="module"><h2 id="M{i}">{m}</h2><p>Status: {s}</p></div>'
        for i, (m, s) in enumerate(statuses.items())
    )
    return (
        "<!DOCTYPE html>\n<html><head><title>" + sample + " FastQC Report</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td{padding:2px 8px}</style></head>\n"
        '<body><div class="header"><h1>FastQC Report</h1><div id="header_filename">Mon 15 Jan 2024<br/>'
        + basic["Filename"]
        + '</div></div>\n<div class="summary"><h2>Summary</h2><ul>\n'
        + items
        + '\n</ul></div>\n<div class="main"><h2>Basic Statistics</h2><table>\n<thead><tr><th>Measure</th>'
        "<th>Value</th></tr></thead>\n<tbody>\n"
        + rows
        + "\n</tbody></table>\n"
        + sections
        + '\n</div><div class="footer">Produced by FastQC (version 0.12.1)</div></body></html>\n'
    )


def _zip_entry(zf: zipfile.ZipFile, name: str, data: bytes | None) -> None:
    """Write with a fixed timestamp and permissions so the archive is byte-identical across runs."""
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 15, 12, 0, 0))
    if data is None:
        info.external_attr = (0o40755 << 16) | 0x10
        zf.writestr(info, b"")
    else:
        info.external_attr = 0o100644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, data)


def make_fastqc(seed: int, sample_name: str) -> tuple[bytes, bytes]:
    """(fastqc_report.html, the FastQC zip: <sample>_fastqc/ with fastqc_report.html, fastqc_data.txt, summary.txt)."""
    rng = random.Random(f"fastqc:{seed}:{sample_name}")
    filename = f"{sample_name}.fastq.gz"
    statuses = {m: "PASS" for m in _FASTQC_MODULES}
    statuses["Per base sequence content"] = rng.choice(["WARN", "FAIL"])
    statuses["Sequence Duplication Levels"] = rng.choice(["PASS", "WARN"])
    statuses["Overrepresented sequences"] = rng.choice(["PASS", "PASS", "WARN"])
    data, basic = _fastqc_data(rng, filename, statuses)
    html = _fastqc_html(sample_name, statuses, basic).encode()
    summary = "".join(f"{s}\t{m}\t{filename}\n" for m, s in statuses.items())
    buf = io.BytesIO()
    folder = f"{sample_name}_fastqc/"
    with zipfile.ZipFile(buf, "w") as zf:
        _zip_entry(zf, folder, None)
        _zip_entry(zf, folder + "fastqc_report.html", html)
        _zip_entry(zf, folder + "fastqc_data.txt", data.encode())
        _zip_entry(zf, folder + "summary.txt", summary.encode())
    return html, buf.getvalue()


_GENE_SYMBOLS = (
    "GAPDH ACTB TP53 BRCA1 BRCA2 EGFR MYC KRAS PTEN CDKN2A RB1 APC VEGFA TNF IL6 ALB INS HBB CD4 CD8A FOXP3 "
    "STAT3 MTOR PIK3CA AKT1 ESR1 ERBB2 SOX2 POU5F1 NANOG GATA1 RUNX1 NOTCH1 JAK2 BCL2 MKI67 EEF1A1 RPLP0 "
    "TUBB B2M PPIA HPRT1 TBP UBC YWHAZ SDHA GUSB HMBS PGK1 LDHA MALAT1 NEAT1 XIST FTL FTH1 COL1A1 FN1"
).split()
_GENE_FAMILIES = ["ZNF", "SLC", "KIAA", "FAM", "TMEM", "CCDC", "LINC", "OR", "RPL", "RPS", "ANKRD", "KRT", "C1orf"]


def make_gene_counts(seed: int, n_genes: int = 2000) -> bytes:
    """A tab-separated gene count table: header, then gene_id, gene_name, count (featureCounts/STAR-like).

    Counts follow a heavy-tailed distribution with many zeros, like real libraries.
    """
    rng = random.Random(f"counts:{seed}")
    out = ["gene_id\tgene_name\tcount"]
    used: set[str] = set()
    gene_no = 3000
    for i in range(n_genes):
        gene_no += 1 + rng.randrange(40)
        gid = f"ENSG{gene_no:011d}"
        if i < len(_GENE_SYMBOLS):
            symbol = _GENE_SYMBOLS[i]
        else:
            symbol = f"{rng.choice(_GENE_FAMILIES)}{rng.randrange(1, 999)}"
            while symbol in used:
                symbol += "B"
        used.add(symbol)
        count = 0 if rng.random() < 0.3 else int(rng.lognormvariate(4.5, 2.2))
        out.append(f"{gid}\t{symbol}\t{count}")
    return ("\n".join(out) + "\n").encode()


def make_rnaseq_metrics(seed: int, sample_name: str) -> bytes:
    """A pretty JSON document of RNA-seq QC metrics (RSeQC/Picard-style numbers) for one sample."""
    rng = random.Random(f"metrics:{seed}:{sample_name}")
    total = rng.randrange(15_000_000, 80_000_000)
    mapped_pct = round(rng.uniform(85, 98), 2)
    unique_pct = round(mapped_pct - rng.uniform(3, 10), 2)
    exonic = round(rng.uniform(55, 80), 2)
    intronic = round(rng.uniform(8, 100 - exonic - 3), 2)
    doc = {
        "sample": sample_name,
        "total_reads": total,
        "mapped_reads": int(total * mapped_pct / 100),
        "mapped_pct": mapped_pct,
        "uniquely_mapped_pct": unique_pct,
        "multi_mapped_pct": round(mapped_pct - unique_pct, 2),
        "exonic_pct": exonic,
        "intronic_pct": intronic,
        "intergenic_pct": round(100 - exonic - intronic, 2),
        "rrna_pct": round(rng.uniform(0.1, 4), 2),
        "mito_pct": round(rng.uniform(1, 12), 2),
        "duplication_pct": round(rng.uniform(10, 45), 2),
        "mean_gc_pct": round(rng.uniform(44, 52), 2),
        "median_insert_size": rng.randrange(150, 350),
        "five_prime_to_three_prime_bias": round(rng.uniform(0.8, 1.2), 3),
        "strandedness": rng.choice(["reverse", "forward", "unstranded"]),
        "genes_detected": rng.randrange(12_000, 20_000),
        "read_length": 101,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def random_bytes(seed: int, size: int) -> bytes:
    """Fast deterministic pseudo-random bytes for large opaque objects (incompressible, like real archives)."""
    return random.Random(seed).randbytes(size)


RANDOM_CHUNK = 16 << 20  # randbytes() cannot make 256 MiB or more at once; 16 MiB pieces keep memory small too


def write_random_file(seed: int, size: int, path: os.PathLike[str] | str) -> int:
    """The same kind of bytes as `random_bytes`, streamed to a file in pieces, for objects of any size."""
    rng = random.Random(seed)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            piece = min(left, RANDOM_CHUNK)
            out.write(rng.randbytes(piece))
            left -= piece
    return size
