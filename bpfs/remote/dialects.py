"""The v1 and v3 API dialects: every difference between them, in one object each (basepair-api.md §3, §8, §9).

Everything else in bpfs asks its `Dialect` instead of testing a version: resource names, trailing slashes,
how a foreign key is written in a request body, extra query parameters, the date field of genomes, and
the request bodies that differ (sample, upload, analysis).
"""

from __future__ import annotations

from typing import Any


class Dialect:
    name = ""
    workflows = "workflows"  # the resource that lists workflows
    genome_date_field = "date_created"
    write_slash = False  # POST/PUT URLs end in "/"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url  # ends with "/"

    # -- requests ------------------------------------------------------------------------------------
    def read_params(self) -> dict[str, Any]:
        """Extra query parameters of every GET."""
        return {}

    def whoami_params(self, username: str) -> dict[str, Any]:
        return {"username": username}

    def fk(self, resource: str, value: int) -> int | str:
        """A foreign key in a request body."""
        raise NotImplementedError

    # -- bodies ----------------------------------------------------------------------------------------
    def sample_genome(self, genome_id: int, genome_name: str) -> int | str:
        raise NotImplementedError

    def sample_projects(self, projects: list[int]) -> dict[str, Any]:
        raise NotImplementedError

    def sample_extra(self) -> dict[str, Any]:
        return {}

    def upload_sample(self, sample_id: int) -> int | str:
        return self.fk("samples", sample_id)

    def upload_end_extra(self, key: str) -> dict[str, Any]:
        return {}

    def analysis_body(self, workflow: int, samples: list[int], controls: list[int], params: dict,
                      projects: list[int], instance: str | None, ignore_warning: bool) -> dict[str, Any]:
        """POST analyses (§9)."""
        body: dict[str, Any] = {"workflow": self.fk(self.workflows, workflow),
                                "samples": [self.fk("samples", s) for s in samples],
                                "controls": [self.fk("samples", c) for c in controls], "params": params}
        if projects:
            body.update(self.sample_projects(projects))
        if ignore_warning:  # the v1 client has no such flag; a server that warns needs it in both dialects
            body["ignore_validation_warning"] = True
        return body


class V1(Dialect):
    """FKs are path URIs (`/api/v1/workflows/7`), creates answer 201 + Location, genomes go by name."""

    name = "v1"

    def fk(self, resource: str, value: int) -> str:
        path = self.base_url.split("://", 1)[-1].split("/", 1)[-1]  # "api/v1/"
        return f"/{path}{resource}/{value}"

    def sample_genome(self, genome_id: int, genome_name: str) -> str:
        return genome_name

    def sample_projects(self, projects: list[int]) -> dict[str, Any]:
        return {"projectId": projects[0]}

    def upload_sample(self, sample_id: int) -> str:
        return f"{self.base_url}samples/{sample_id}"  # the v1 client sends an absolute URL here (§3)


class V3(Dialect):
    """Bare ids, `pipelines`, trailing slashes on writes, `view=sdk` on reads, `created_on` for genomes."""

    name = "v3"
    workflows = "pipelines"
    genome_date_field = "created_on"
    write_slash = True

    def read_params(self) -> dict[str, Any]:
        return {"view": "sdk"}

    def whoami_params(self, username: str) -> dict[str, Any]:
        return {"username": username, "limit": 1}

    def fk(self, resource: str, value: int) -> int:
        return value

    def sample_genome(self, genome_id: int, genome_name: str) -> int:
        return genome_id

    def sample_projects(self, projects: list[int]) -> dict[str, Any]:
        return {"projects": list(projects)}

    def sample_extra(self) -> dict[str, Any]:
        return {"meta": {"source": "api"}}

    def upload_end_extra(self, key: str) -> dict[str, Any]:
        return {"key": key}

    def analysis_body(self, workflow: int, samples: list[int], controls: list[int], params: dict,
                      projects: list[int], instance: str | None, ignore_warning: bool) -> dict[str, Any]:
        body = super().analysis_body(workflow, samples, controls, params, projects, instance, ignore_warning)
        body["ignore_validation_warning"] = ignore_warning
        body["meta"] = {"source": "api"}
        if instance:
            body["instance"] = instance
        return body


def dialect_for(name: str, base_url: str) -> Dialect:
    return {"v1": V1, "v3": V3}[name](base_url)
