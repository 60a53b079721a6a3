"""``batchpipe results``: print results as they arrive on the results topic; ``batchpipe
results fetch``: print the full response body of one result from its provider.

Reads with the shared ``read_committed`` consumer, so only results of committed transactions
are shown (what every downstream consumer should do). Every partition of the topic is assigned
to this one process (no group rebalancing); offsets are committed under a consumer group
(``batchpipe-results-cli`` by default) so a second run shows only what is new. Without
``--follow`` the command exits once it has caught up with the end offsets it saw at start.

A result too large for the results topic arrives without its body (error
``result_too_large``, ``body_ref``); ``fetch_body`` reads that body back through the provider
layer (``BatchProvider.result_of``: the batch's results streamed, only that line held).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from batchpipe.services.cli.support import settings_or_exit
from batchpipe.shared.settings import Settings

DEFAULT_GROUP = "batchpipe-results-cli"


class TopicMissing(RuntimeError):
    """The results topic does not exist on the broker."""


class ResultNotFound(LookupError):
    """The batch's results name no such custom_id (or the batch has not ended)."""


async def fetch_line(
    settings: Settings, provider: str, batch_id: str, custom_id: str
) -> dict[str, Any]:
    """The result line (common shape: ``custom_id`` and ``response`` or ``error``) of
    ``custom_id`` in ``batch_id``, read from ``provider``; ``ResultNotFound`` if none."""
    from batchpipe.shared.providers.registry import PROVIDERS, UnknownProvider

    cls = PROVIDERS.get(provider)
    if cls is None:
        raise UnknownProvider(f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")
    client = cls.from_settings(settings)
    try:
        line = await client.result_of(batch_id, custom_id)
    finally:
        await client.close()
    if line is None:
        raise ResultNotFound(f"batch {batch_id} ({provider}) has no result for {custom_id!r}")
    return line


async def fetch_body(settings: Settings, provider: str, batch_id: str, custom_id: str) -> Any:
    """The full ``response.body`` of a result (what a ``result_too_large`` result left out),
    read from its provider."""
    line = await fetch_line(settings, provider, batch_id, custom_id)
    response = line.get("response")
    if not isinstance(response, dict):
        raise ResultNotFound(f"the result of {custom_id!r} in batch {batch_id} has no response")
    return response.get("body")


async def stream_results(
    settings: Settings,
    on_value: Callable[[bytes], None],
    *,
    follow: bool = False,
    from_beginning: bool = False,
    group_id: str | None = DEFAULT_GROUP,
    stop: asyncio.Event | None = None,
) -> int:
    """Call ``on_value`` with each result's raw value; return how many were read.

    Start: ``from_beginning`` → the first offset; else the group's committed offsets (a new
    group starts at the beginning); with no group, only results that arrive from now on.
    """
    from aiokafka import TopicPartition

    from batchpipe.shared.kafka import make_consumer

    topic = settings.results_topic
    tps = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
    consumer = make_consumer(settings, group_id=group_id or None)
    await asyncio.wait_for(consumer.start(), 30)
    count = 0
    try:
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        elif not group_id:
            await consumer.seek_to_end(*tps)
        end = await consumer.end_offsets(tps)
        while stop is None or not stop.is_set():
            if not follow and await _caught_up(consumer, end):
                break
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batch.values():
                for record in records:
                    on_value(record.value)
                    count += 1
            if batch and group_id:
                await consumer.commit()
    finally:
        await consumer.stop()
    return count


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """The partition ids of ``topic``; ``TopicMissing`` if the broker does not know it."""
    from batchpipe.shared.kafka import make_admin

    admin = make_admin(settings)
    await asyncio.wait_for(admin.start(), 30)
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry.get("topic") == topic and entry.get("error_code") == 0 and entry["partitions"]:
            return sorted(int(p["partition"]) for p in entry["partitions"])
    raise TopicMissing(f"topic '{topic}' does not exist (run `batchpipe topics`)")


async def _caught_up(consumer: Any, end: dict[Any, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


# --- rendering ----------------------------------------------------------------------------

COLUMN_WIDTHS: tuple[int | None, ...] = (36, 9, 14, 3, 4, None)
STATUS_STYLE = {"succeeded": "green", "failed": "red", "expired": "yellow", "cancelled": "magenta"}


def result_row(value: bytes) -> list[str]:
    """The table cells of one result: custom_id, status, model, attempts, seconds, output."""
    try:
        result = orjson.loads(value)
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except ValueError:
        return ["?", "undecodable", "", "", "", value[:80].decode("utf-8", "replace")]
    submitted, completed = result.get("submitted_at"), result.get("completed_at")
    waited = f"{completed - submitted}" if isinstance(submitted, int) and completed else ""
    return [
        str(result.get("custom_id", "?")),
        str(result.get("status", "?")),
        str(result.get("model", "")),
        str(result.get("attempts", "")),
        waited,
        _output_of(result),
    ]


def _output_of(result: dict[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    body = (result.get("response") or {}).get("body") or {}
    try:
        if body.get("object") == "chat.completion":
            return str(body["choices"][0]["message"]["content"])
        if body.get("object") == "list" and body.get("data"):
            return f"embedding[{len(body['data'][0]['embedding'])}]"
        if body.get("object") == "response":
            return str(body.get("output_text") or body["output"][0]["content"][0]["text"])
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return str(body.get("object", ""))


results_app = typer.Typer(
    invoke_without_command=True,
    add_completion=False,
    help="Print results from the results topic; `fetch` prints one result's full body.",
)


@results_app.callback()
def results(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing results as they arrive.")
    ] = False,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the topic's first result.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each result as its raw JSON line.")
    ] = False,
    group_id: Annotated[
        str,
        typer.Option(
            help="Consumer group whose offsets remember what was shown; '' for none "
            "(then only new results, unless --from-beginning)."
        ),
    ] = DEFAULT_GROUP,
) -> None:
    """Print results from the results topic (BATCHPIPE_RESULTS_TOPIC), read_committed.

    By default shows the results this consumer group has not shown yet and exits when caught
    up; --follow keeps waiting (Ctrl-C stops). Kafka connection from BATCHPIPE_KAFKA_*.
    `batchpipe results fetch BATCH_ID CUSTOM_ID` prints the full body of one result.
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.text import Text

    settings = settings_or_exit("results")
    console = Console(highlight=False, soft_wrap=True)
    header = ["custom_id", "status", "model", "try", "secs", "output"]
    shown = {"header": False}

    def line_of(cells: list[str], status_style: str = "") -> Text:
        text = Text()
        for i, (cell, width) in enumerate(zip(cells, COLUMN_WIDTHS, strict=True)):
            if width is None:  # the output: cut to the terminal's width (whole when piped)
                room = max(20, console.width - sum(w + 1 for w in COLUMN_WIDTHS if w))
                cut = console.is_terminal and len(cell) > room
                text.append(cell[: room - 1] + "…" if cut else cell)
                continue
            shown_cell = cell if len(cell) <= width else cell[: width - 1] + "…"
            text.append(shown_cell.ljust(width) + " ", style=status_style if i == 1 else "")
        return text

    def print_row(value: bytes) -> None:
        if as_json:
            sys.stdout.write(value.decode("utf-8", "replace") + "\n")
            sys.stdout.flush()
            return
        if not shown["header"]:
            console.print(line_of(header), style="bold")
            shown["header"] = True
        cells = result_row(value)
        console.print(line_of(cells, STATUS_STYLE.get(cells[1], "")))

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await stream_results(
            settings,
            print_row,
            follow=follow,
            from_beginning=from_beginning,
            group_id=group_id,
            stop=stop,
        )

    try:
        count = asyncio.run(run())
    except Exception as exc:  # Kafka unreachable, topic missing: one clear line
        typer.secho(f"batchpipe results: {type(exc).__name__}: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    if not as_json:
        typer.echo(f"{count} result(s)", err=True)


@results_app.command("fetch")
def fetch(
    batch_id: Annotated[str, typer.Argument(help="The batch id (the result's batch_id).")],
    custom_id: Annotated[str, typer.Argument(help="The request's custom_id.")],
    provider: Annotated[
        str, typer.Option(help="The provider that ran the batch (the result's provider).")
    ] = "openai",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the body to this file.")
    ] = None,
    line: Annotated[
        bool, typer.Option("--line", help="Print the whole result line, not only the body.")
    ] = False,
) -> None:
    """Print one result's full response body, read from its provider.

    For a result published as result_too_large: its body_ref names the batch, the custom_id
    and the provider. Provider credentials as for the services (OPENAI_API_KEY, AZURE_OPENAI_*,
    ANTHROPIC_API_KEY). One JSON document, on stdout or in --output.
    """
    settings = settings_or_exit("results")

    async def run() -> Any:
        if line:
            return await fetch_line(settings, provider, batch_id, custom_id)
        return await fetch_body(settings, provider, batch_id, custom_id)

    try:
        document = asyncio.run(run())
    except Exception as exc:  # unknown provider or batch, no such result: one clear line
        typer.secho(f"batchpipe results fetch: {type(exc).__name__}: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    data = orjson.dumps(document) + b"\n"
    if output is not None:
        output.write_bytes(data)
        typer.echo(f"{len(data):,} bytes written to {output}", err=True)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
