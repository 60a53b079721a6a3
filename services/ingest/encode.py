"""Encode step of ingest: one item of a POST → its record (key, value) on the requests topic.

The value is the request line exactly as ``contracts.encode(RequestLine(...))`` serialises it
(same keys, same order, same bytes; a test compares them), the key its ``custom_id``. An item
given as bare chat messages — the original sample's shape and the bulk of most traffic — skips
the contract model: its messages are checked (``check_messages``) and serialised once, between
a prefix and suffix computed once per process from the defaults. Every other shape goes through
``normalize_item`` and the contract. Either way an item is refused (``ItemRefused``) with the
reason shown to the user; ``ItemTooLarge`` when its line would not fit in a Kafka record;
and when the model's provider cannot run the line (``refusal``: e.g. a chat parameter with
no Anthropic equivalent), with the provider's reason, so it is never sent to fail later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from batchpipe.shared.contracts import encode
from batchpipe.shared.providers.registry import Refusal
from batchpipe.shared.request_items import (
    CHAT_URL,
    ItemRefused,
    check_messages,
    new_custom_id,
    normalize_item,
)
from batchpipe.shared.topics import MAX_REQUEST_SIZE

# A record costs this much beyond its key and value (batch framing, headers): items larger
# than the producer's limit minus this are refused before anything is sent.
RECORD_OVERHEAD: Final = 16 * 1024
MAX_VALUE_BYTES: Final = MAX_REQUEST_SIZE - RECORD_OVERHEAD

Record = tuple[bytes, bytes]
"""A record as it goes on the topic: (key = custom_id as UTF-8, value = the JSON line)."""


class ItemTooLarge(ItemRefused):
    """The item's request line is larger than a record may be."""


class LineEncoder:
    """Items → (custom_id, value) for one set of defaults (the model and parameters merged into
    bare-message items)."""

    __slots__ = (
        "_check_bare",
        "_default_kwargs",
        "_default_model",
        "_partial_middle",
        "_refusal",
    )

    def __init__(
        self,
        default_model: str,
        default_kwargs: Mapping[str, Any],
        refusal: Refusal | None = None,
    ) -> None:
        self._refusal = refusal
        # bare messages take the default model: checked only if its provider may refuse
        self._check_bare = refusal is not None and refusal.applies(default_model, CHAT_URL)
        self._default_model = default_model
        self._default_kwargs = dict(default_kwargs)
        base = {"model": default_model, **self._default_kwargs}
        base.pop("messages", None)  # the item's own messages always win
        head = orjson.dumps(base)[:-1]  # '{"model":...' without its closing brace
        self._partial_middle = (
            b'","method":"POST","url":"' + CHAT_URL.encode() + b'","body":' + head + b',"messages":'
        )

    def encode(self, item: Any, fresh_id: str | None = None) -> tuple[str, bytes]:
        """The custom_id and record value of ``item``, or ``ItemRefused`` (positional call:
        it runs once per item). Bare messages get ``fresh_id`` (from ``new_custom_ids``, which
        makes many at once) or a new id."""
        if type(item) is list:
            check_messages(item, "item")
            custom_id = fresh_id or new_custom_id()  # [0-9a-f-] only: nothing to escape
            try:
                messages = orjson.dumps(item)
            except (TypeError, ValueError) as exc:  # nesting deeper than orjson writes
                raise ItemRefused(f"item cannot be serialised: {exc}") from None
            value = b'{"custom_id":"%s%s%s}}' % (custom_id.encode(), self._partial_middle, messages)
            if self._check_bare:
                self._refuse(self._default_model, CHAT_URL, orjson.loads(value)["body"])
        else:
            line = normalize_item(item, self._default_model, self._default_kwargs)
            custom_id = line.custom_id
            if self._refusal is not None and self._refusal.applies(line.model, line.url):
                self._refuse(line.model, line.url, line.body)
            try:
                value = encode(line)
            except (TypeError, ValueError) as exc:
                raise ItemRefused(f"item cannot be serialised: {exc}") from None
        if len(value) > MAX_VALUE_BYTES:
            raise ItemTooLarge(f"item is {len(value)} bytes; at most {MAX_VALUE_BYTES}")
        return custom_id, value

    def _refuse(self, model: str, url: str, body: Mapping[str, Any]) -> None:
        assert self._refusal is not None
        reason = self._refusal(model, url, body)
        if reason is not None:
            raise ItemRefused(f"model {model!r}: {reason}")
