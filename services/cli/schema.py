"""``batchpipe schema TOPIC``: print the JSON Schema of one topic's message values."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import orjson
import typer


class Topic(StrEnum):
    requests = "requests"
    batches = "batches"
    results = "results"
    dead_letters = "dead-letters"


def schema(topic: Annotated[Topic, typer.Argument(help="Which topic's values.")]) -> None:
    """Print the JSON Schema of one topic's values (requests, batches, results, dead-letters)."""
    from batchpipe.shared.contracts import json_schema

    typer.echo(orjson.dumps(json_schema(topic.value), option=orjson.OPT_INDENT_2).decode())
