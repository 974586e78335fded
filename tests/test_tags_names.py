from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpfs.tree import tags
from bpfs.tree.names import safe_name, split_ext, unique_names, with_id


def files(*tag_sets):
    return [SimpleNamespace(id=i, tags=frozenset(t)) for i, t in enumerate(tag_sets)]


FILES = files({"bam", "dedup"}, {"bai"}, {"fastqc", "zip"}, {"fastqc", "html"}, {"rnaseq_metrics", "json"}, set())
KNOWN = frozenset().union(*(f.tags for f in FILES))


@pytest.mark.parametrize("text, ids", [
    ("fastqc", [2, 3]),
    ("-bam", [1, 2, 3, 4, 5]),  # the untagged file is included
    ("rnaseq_metrics+json", [4]),
    ("rnaseq_metrics+json,fastqc+zip", [2, 4]),
    ("fastqc+-zip", [3]),
    ("bam,bai", [0, 1]),
])
def test_expressions_select_as_the_seed_examples(text, ids):
    assert [f.id for f in tags.select(tags.parse(text), FILES, KNOWN)] == ids


@pytest.mark.parametrize("text", ["", "a,,b", "+a", "a+", "--a", "-", "a/b", ","])
def test_invalid_expressions(text):
    assert tags.parse(text) is None


def test_unknown_tag_selects_nothing():
    assert tags.select(tags.parse("vcf"), FILES, KNOWN) == []
    assert tags.select(tags.parse("-vcf"), FILES, KNOWN) == []
    assert tags.select(tags.parse("bam+bai"), FILES, KNOWN) == []


def test_safe_names():
    assert safe_name("a/b") == "a_b"
    assert safe_name("") == "_" and safe_name(".") == "_." and safe_name("..") == "_.."
    assert safe_name("x\0y") == "xy"
    assert len(safe_name("é" * 300).encode()) <= 255


def test_collisions_get_ids_and_keep_extensions():
    assert split_ext("x.vcf.gz") == ("x", ".vcf.gz")
    assert split_ext("summary.txt") == ("summary", ".txt")
    assert split_ext(".bashrc") == (".bashrc", "")
    assert with_id("summary.txt", 70013) == "summary~70013.txt"
    assert unique_names([("summary.txt", 1), ("summary.txt", 2), ("a.bam", 3)]) == [
        "summary~1.txt", "summary~2.txt", "a.bam"]
    assert unique_names([("sample.json", 9)], reserved={"sample.json"}) == ["sample~9.json"]


@given(st.lists(st.tuples(st.text(min_size=0, max_size=20), st.integers(0, 10**6)), unique_by=lambda t: t[1]))
def test_unique_names_are_unique_safe_and_stable(items):
    names = unique_names(items)
    assert len(set(names)) == len(names)
    assert all("/" not in n and "\0" not in n and n not in ("", ".", "..") for n in names)
    assert unique_names(items) == names


def test_unique_names_end_and_stay_distinct_with_absurd_ids():
    big = "9" * 301
    names = unique_names([("x.txt", big), ("x.txt", big + "1"), ("x.txt", big), ("x" * 300 + ".txt", 7)] * 2)
    assert len(set(names)) == len(names) and all(len(n.encode()) <= 255 for n in names)
