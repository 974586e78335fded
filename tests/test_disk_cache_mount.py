"""The disk cache with a real tool: a samtools region query repeated after a remount fetches nothing."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.fuse


def test_a_samtools_region_query_repeated_after_a_remount_costs_no_s3_bytes(make_mount, tmp_path):
    cache = tmp_path / "blocks"
    options = ("disk_cache=1G", f"cache_dir={cache}")
    outputs = []
    for round_ in range(2):
        m = make_mount(options=options, name=f"round{round_}")
        bam = m.path / "analyses" / "10000" / "bam" / "liver_rep1.bam"
        before = m.stats()["s3_bytes_fetched"]
        result = subprocess.run(["samtools", "view", str(bam), "chr1:1000000-1010000"], capture_output=True,
                                check=True, timeout=120)
        outputs.append((result.stdout, m.stats()["s3_bytes_fetched"] - before))
        time.sleep(2)  # the background writer
        m.stop()
    (first, fetched_first), (second, fetched_second) = outputs
    assert first == second and first
    assert fetched_first > 0 and fetched_second == 0
