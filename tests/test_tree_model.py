"""A model-based property test of the tree: random analyses (files, tags, colliding names) and random tag
expressions; what the core shows must equal a small reference model written here.

Files are identified by their size (each file gets a distinct one), so the model says *which* files a
directory holds without re-implementing the naming rules; the naming rules are checked as properties
instead: every name is unique, at most 255 bytes, and reaches its entry.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from bpfs.errors import NotFound
from bpfs.remote.api import ApiClient, Reply
from bpfs.remote.config import parse_config
from bpfs.stats import Stats
from bpfs.tree.catalog import Catalog
from bpfs.tree.namespace import Namespace

USER = 7
TAGS = ["bam", "bai", "json", "fastqc", "zip", "a+b", "-neg", "x,y", "all"]
DIRS = ["star", "qc", "qc/deep", "x" * 120]
NAMES = ["out.txt", "out.bam", "summary.txt", "r.fastq.gz", "y" * 250 + ".txt", "out~2.txt"]


class StaticApi(ApiClient):
    """Answers from a fixed account: the real client's parsing, no network."""

    def __init__(self, analyses: list[dict]) -> None:
        super().__init__(parse_config({"api_v3": {"host": "model.invalid", "prefix": "/api/v3/", "username": "u",
                                                   "key": "k"}}, environ={}), Stats())
        self.records = {a["id"]: a for a in analyses}

    def exchange(self, method: str, resource: str, url: str, query: dict, body: Any) -> tuple[Reply, bytes]:
        parts = resource.strip("/").split("/")
        if parts == ["users"]:
            payload: Any = {"meta": {"total_count": 1}, "objects": [{"id": USER, "username": "u"}]}
        elif parts == ["analyses"]:
            listed = [{k: v for k, v in a.items() if k != "files"} for a in self.records.values()]
            payload = {"meta": {"total_count": len(listed)}, "objects": listed}
        elif len(parts) == 2 and parts[0] == "analyses" and int(parts[1]) in self.records:
            payload = self.records[int(parts[1])]
        else:
            return Reply(404, CaseInsensitiveDict()), b'{"errors": [{"detail": "not found"}]}'
        return Reply(200, CaseInsensitiveDict()), json.dumps(payload).encode()


@st.composite
def accounts(draw) -> list[dict]:
    analyses = []
    next_id = 70000
    for analysis_id in range(10000, 10000 + draw(st.integers(1, 2))):
        files = []
        for _ in range(draw(st.integers(0, 12))):
            next_id += 1
            outside = draw(st.booleans()) and draw(st.booleans())  # some keys leave analyses/<user>/<id>/
            base = f"elsewhere/{analysis_id}" if outside else f"analyses/{USER}/{analysis_id}"
            path = f"{base}/{draw(st.sampled_from(DIRS))}/{draw(st.sampled_from(NAMES))}"
            tags = draw(st.one_of(st.none(), st.lists(st.sampled_from(TAGS), max_size=3, unique=True)))
            files.append({"id": next_id, "path": path, "tags": tags, "filesize": next_id})  # size = identity
        analyses.append({"id": analysis_id, "name": f"a{analysis_id}", "status": "completed", "owner": USER,
                         "files": files})
    return analyses


@st.composite
def expressions(draw) -> str:
    groups = []
    for _ in range(draw(st.integers(1, 3))):
        terms = [("-" if draw(st.booleans()) else "") + draw(st.sampled_from(["bam", "bai", "json", "fastqc", "zip",
                                                                            "nosuchtag"]))
                 for _ in range(draw(st.integers(1, 3)))]
        groups.append("+".join(terms))
    return ",".join(groups)


def model_matches(expression: str, tags: set[str]) -> bool:
    """The seed's filters as the contract states them: `+` AND, `,` OR, leading `-` NOT."""
    return any(all((term.lstrip("-") in tags) != term.startswith("-") for term in group.split("+"))
               for group in expression.split(","))


def tree_of(analyses: list[dict]) -> Namespace:
    api = StaticApi(analyses)
    api.whoami()
    stats = Stats()
    return Namespace(Catalog(api, stats), objects=None, readers=None, stats=stats)  # type: ignore[arg-type]


def sizes_below(tree: Namespace, path: str) -> list[int]:
    out = []
    for name, entry in tree.listdir(path).items():
        assert len(name.encode()) <= 255 and "/" not in name and name not in (".", "..")
        assert tree.lookup(f"{path}/{name}") == entry  # every name reaches its entry
        out += sizes_below(tree, f"{path}/{name}") if entry.is_dir else [entry.size]
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accounts(), st.lists(expressions(), min_size=1, max_size=4))
def test_the_tree_equals_the_model(analyses, exprs):
    tree = tree_of(analyses)
    assert sorted(tree.listdir("analyses")) == sorted(["index.tsv"] + [str(a["id"]) for a in analyses])
    for analysis in analyses:
        top = f"analyses/{analysis['id']}"
        files = analysis["files"]
        tags_of = {f["filesize"]: set(f["tags"] or []) for f in files}
        carried = set().union(*tags_of.values()) if tags_of else set()
        listing = tree.listdir(top)
        tag_dirs = [n for n in listing if n not in ("analysis.json", "all")]
        assert len(tag_dirs) == len(carried) and {"analysis.json", "all"} <= set(listing)
        # all/ holds every file once
        assert sorted(sizes_below(tree, f"{top}/all")) == sorted(tags_of)
        # each listed tag directory holds exactly the files carrying that one tag (even "a+b" or "-neg")
        held = {tuple(sorted(sizes_below(tree, f"{top}/{name}"))) for name in tag_dirs}
        wanted = {tuple(sorted(size for size, tags in tags_of.items() if tag in tags)) for tag in carried}
        assert held == wanted
        for expression in exprs:
            chosen = sorted(size for size, tags in tags_of.items() if model_matches(expression, tags))
            named = {term.lstrip("-") for group in expression.split(",") for term in group.split("+")}
            if not chosen or not named <= carried:  # nothing matches, or a tag no file carries: ENOENT
                try:
                    tree.listdir(f"{top}/{expression}")
                except NotFound:
                    continue
                raise AssertionError(f"{expression} should not resolve")
            assert sorted(sizes_below(tree, f"{top}/{expression}")) == chosen, expression
