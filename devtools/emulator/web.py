"""What every route shares: the running emulator's parts (``Emulator``, reached through the
request), JSON in and out, and the parsing of list parameters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request, Response

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.errors import bad_request
from batchpipe.devtools.emulator.faults import FaultInjector
from batchpipe.devtools.emulator.files import FileStorage
from batchpipe.devtools.emulator.lifecycle import Lifecycle
from batchpipe.devtools.emulator.store import Store
from batchpipe.devtools.emulator.webhooks import WebhookSender

Json = dict[str, Any]


@dataclass
class Emulator:
    """The running emulator's parts, reachable from every route as ``app.state.emulator``."""

    config: EmulatorConfig
    data_dir: Path
    seed: int
    store: Store
    storage: FileStorage
    lifecycle: Lifecycle
    faults: FaultInjector
    webhooks: WebhookSender
    # API calls counted in memory, e.g. "openai.batches.retrieve" (this run only)
    calls: Counter[str] = field(default_factory=Counter)


def emulator_of(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


async def json_body(request: Request) -> Json:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise bad_request("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def page_limit(raw: str | None, default: int, maximum: int) -> int:
    """The ``limit`` query parameter of a list call, within ``1..maximum``."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid 'limit': '{raw}' is not an integer.", "limit") from None
    if not 1 <= value <= maximum:
        raise bad_request(
            f"Invalid 'limit': expected a value between 1 and {maximum}, got {value}.", "limit"
        )
    return value


def expiry_seconds(value: Any, name: str, allowed: tuple[int, int]) -> int:
    """``seconds`` of an ``expires_after``-like parameter, within the provider's range."""
    low, high = allowed
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise bad_request(
            f"Invalid '{name}.seconds': must be between {low} and {high}.", f"{name}.seconds"
        )
    return value
