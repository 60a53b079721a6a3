"""``batchpipe costs``: tokens and USD of every result on the results topic, per API key name,
endpoint and model, with the saving against synchronous calls.

The totals are computed by reading the results topic from its first offset to the end offsets
seen at start, ``read_committed`` and without a consumer group (nothing is committed, every run
reads everything). The poller publishes each result exactly once in a transaction, so this
count is right whatever happened to the pollers (restarts, several instances, a crash in the
middle of a batch: aborted transactions are never read), and needs no state of its own. It
covers what the topic retains (``retention.ms`` of the results topic). Prices come from the
shipped table and ``BATCHPIPE_PRICES_FILE`` (``shared/costs.py``).
"""

from __future__ import annotations

import asyncio
import enum
from typing import Annotated, Any

import orjson
import typer

from batchpipe.services.cli.support import settings_or_exit
from batchpipe.shared.costs import PriceTable, Totals, report
from batchpipe.shared.settings import Settings


class Grouping(enum.StrEnum):
    all = "all"
    api_key = "api_key"
    endpoint = "endpoint"
    model = "model"


async def count_results(settings: Settings) -> tuple[Totals, int, int]:
    """The totals of every committed result on the results topic; with how many values were
    read and how many of them were not results (skipped)."""
    from batchpipe.services.cli.results import stream_results

    totals = Totals()
    skipped = 0

    def on_value(value: bytes) -> None:
        nonlocal skipped
        try:
            result = orjson.loads(value)
        except orjson.JSONDecodeError:
            skipped += 1
            return
        if not isinstance(result, dict) or not totals.add_result(result):
            skipped += 1

    read = await stream_results(settings, on_value, from_beginning=True, group_id=None)
    return totals, read, skipped


def costs_document(settings: Settings, prices: PriceTable) -> dict[str, Any]:
    """The ``--json`` document: the priced report, the topic and the counts read."""
    totals, read, skipped = asyncio.run(count_results(settings))
    return {
        "results_topic": settings.results_topic,
        "messages_read": read,
        "messages_skipped": skipped,
        **report(totals, prices),
    }


def _usd(value: float | None) -> str:
    return "no price" if value is None else f"{value:,.4f}"


def _tokens(value: int) -> str:
    return f"{value:,}"


def costs(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole report as JSON.")
    ] = False,
    by: Annotated[
        Grouping,
        typer.Option(
            help="Rows of the table: every (api_key, endpoint, model), or the sums of one."
        ),
    ] = Grouping.all,
) -> None:
    """Tokens and USD of all results on the results topic (read_committed, from the start),
    per ingest API key name, endpoint and model, and the saving against synchronous prices.

    Requests produced straight to Kafka count as 'unattributed'. Models without a price are
    counted in tokens and shown as 'no price'. Prices: the shipped table (its date is shown),
    extended by BATCHPIPE_PRICES_FILE.
    """
    from rich.console import Console
    from rich.table import Table

    from batchpipe.shared.costs import prices_of
    from batchpipe.shared.settings import SettingsError

    settings = settings_or_exit("costs")
    try:
        prices = prices_of(settings)
    except SettingsError as exc:
        typer.secho(f"batchpipe costs: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None
    try:
        doc = costs_document(settings, prices)
    except Exception as exc:  # Kafka unreachable, topic missing: one clear line
        typer.secho(f"batchpipe costs: {type(exc).__name__}: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    dims = ["api_key", "endpoint", "model"] if by is Grouping.all else [by.value]
    rows = doc["rows"] if by is Grouping.all else doc[f"by_{by.value}"]
    table = Table(title=f"Costs of {doc['messages_read']} results on '{doc['results_topic']}'")
    numbers = ["results", "input", "cached", "output", "batch USD", "sync USD", "saved USD"]
    for column in dims + numbers:
        table.add_column(column, justify="left" if column in dims else "right")
    for row in rows:
        table.add_row(
            *(str(row[d]) for d in dims),
            _tokens(row["results"]),
            _tokens(row["input_tokens"]),
            _tokens(row["cached_tokens"]),
            _tokens(row["output_tokens"]),
            _usd(row["cost_usd"]),
            _usd(row["sync_cost_usd"]),
            _usd(row["saving_usd"]),
        )
    total = doc["total"]
    table.add_section()
    table.add_row(
        "total",
        *([""] * (len(dims) - 1)),
        _tokens(total["results"]),
        _tokens(total["input_tokens"]),
        _tokens(total["cached_tokens"]),
        _tokens(total["output_tokens"]),
        _usd(total["cost_usd"]),
        _usd(total["sync_cost_usd"]),
        _usd(total["saving_usd"]),
    )
    console = Console()
    console.print(table)
    notes = [f"prices as of {doc['prices']['as_of']}"]
    if doc["prices"]["overrides"]:
        notes.append(f"with {doc['prices']['overrides']}")
    if doc["unpriced_models"]:
        notes.append(
            f"no price for {', '.join(doc['unpriced_models'])} "
            f"({total['unpriced_results']} results, not in the USD totals)"
        )
    if doc["messages_skipped"]:
        notes.append(f"{doc['messages_skipped']} messages were not results")
    console.print("; ".join(notes), highlight=False)
