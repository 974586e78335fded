"""Tag expressions: the official client's download filters, written as directory names.

`+` is AND, `,` is OR between groups, a leading `-` is NOT:
`rnaseq_metrics+json,fastqc+zip` = (rnaseq_metrics AND json) OR (fastqc AND zip).
A file without tags matches only groups made of negative terms, so `-bam` includes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Term = tuple[str, bool]  # (tag, wanted): wanted=False is a negated term


@dataclass(frozen=True)
class TagExpression:
    groups: tuple[tuple[Term, ...], ...]

    @property
    def tags(self) -> frozenset[str]:
        return frozenset(tag for group in self.groups for tag, _ in group)

    def matches(self, tags: frozenset[str] | set[str]) -> bool:
        return any(all((tag in tags) == wanted for tag, wanted in group) for group in self.groups)


def parse(text: str) -> TagExpression | None:
    """The expression a directory name spells, or None when it is not one."""
    if not text or "/" in text or "\0" in text:
        return None
    groups = []
    for group_text in text.split(","):
        terms = []
        for term in group_text.split("+"):
            wanted = not term.startswith("-")
            tag = term if wanted else term[1:]
            if not tag or tag.startswith("-"):
                return None
            terms.append((tag, wanted))
        groups.append(tuple(terms))
    return TagExpression(tuple(groups))


def select(expression: TagExpression, items: Iterable, known_tags: frozenset[str],
           tags_of: Callable[[Any], frozenset[str]] = lambda item: item.tags) -> list:
    """The items whose tags match; none when the expression names a tag no file carries."""
    if not expression.tags <= known_tags:
        return []
    return [item for item in items if expression.matches(tags_of(item))]
