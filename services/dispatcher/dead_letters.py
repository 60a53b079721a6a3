"""The ``dead-letters`` message for a request that cannot go into a batch.

``dead_letter(...)`` builds it with ``DeadLetter.of`` (the raw value is kept, truncated to
64 KiB; the reason is ``validate.py``'s). The intake publishes it, waits for the broker's ack,
and only then counts the request's offset as done: the dispatcher never crashes or stalls on its
input, and never skips a request silently.
"""

from __future__ import annotations

from typing import Final

from batchpipe.services.dispatcher.validate import Invalid
from batchpipe.shared.contracts import DeadLetter

SERVICE: Final = "dispatcher"


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    invalid: Invalid,
) -> DeadLetter:
    return DeadLetter.of(
        source_topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        reason=f"{invalid.reason}: {invalid.detail}"[:1000],
        service=SERVICE,
    )
