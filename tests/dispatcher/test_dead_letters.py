"""dead_letters.py: the dead letter of an invalid request keeps its raw value and position."""

from __future__ import annotations

from batchpipe.services.dispatcher.dead_letters import dead_letter
from batchpipe.services.dispatcher.validate import Invalid


def test_dead_letter_keeps_the_raw_value() -> None:
    letter = dead_letter(
        topic="requests",
        partition=2,
        offset=7,
        key=b"k",
        value=b"\xff",
        invalid=Invalid("not_json", "bad"),
    )
    assert letter.reason.startswith("not_json")
    assert (letter.partition, letter.offset, letter.value_encoding) == (2, 7, "base64")
    assert letter.service == "dispatcher"
