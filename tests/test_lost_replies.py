"""The record a lost create made: taken once, only the newest, only one made since the request was sent."""

from __future__ import annotations

from dataclasses import dataclass

from bpfs.errors import RemoteError
from bpfs.writing.lost_replies import CLOCK_SKEW, Adopter, unanswered


@dataclass
class Rec:
    id: int
    name: str
    created: float


def test_only_the_newest_matching_record_made_since_the_request_is_taken_and_only_once():
    sent = 1_000_000.0
    records = [Rec(1, "a", sent - 5000), Rec(7, "x", sent + 1), Rec(3, "x", sent)]
    adopter = Adopter()
    assert adopter.made_anyway(lambda: records, lambda r: r.name == "x", sent, "x").id == 7
    assert adopter.made_anyway(lambda: records, lambda r: r.name == "x", sent, "x") is None  # handed out
    old = [Rec(9, "y", sent - CLOCK_SKEW - 1)]
    assert Adopter().made_anyway(lambda: old, lambda r: r.name == "y", sent, "y") is None  # made before it
    newer = [Rec(4, "z", sent), Rec(5, "other", sent)]
    assert Adopter().made_anyway(lambda: newer, lambda r: r.name == "z", sent, "z") is None  # not the newest
    answered = Adopter()
    answered.answered(4)
    assert answered.made_anyway(lambda: [Rec(4, "z", sent)], lambda r: r.name == "z", sent, "z") is None


def test_a_failed_listing_adopts_nothing_and_only_unanswered_failures_count():
    def broken():
        raise RemoteError("GET samples: HTTP 503")

    assert Adopter().made_anyway(broken, lambda r: True, 0.0, "x") is None
    assert unanswered(RemoteError("no reply")) and unanswered(RemoteError("x", status=502))
    assert not unanswered(RemoteError("x", status=400)) and not unanswered(ValueError())
