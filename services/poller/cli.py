"""``batchpipe poller`` (run the poller) and ``batchpipe status`` (show what it follows)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated, Any

import typer

from batchpipe.services.cli.support import kafka_access_or_exit, settings_or_exit

DEFAULT_STATUS_URL = "http://127.0.0.1:8001"


def poller() -> None:
    """Follow every batch to its end and publish one result per request, exactly once."""
    from batchpipe.services.poller.app import Poller
    from batchpipe.shared.ops_http import serve_in_background
    from batchpipe.shared.settings import SettingsError

    settings = settings_or_exit("poller")
    kafka_access_or_exit(settings, "poller")
    for chatty in ("httpx", "httpx2"):  # one INFO line per retrieve call otherwise
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))

    async def main() -> None:
        try:
            service = Poller(settings)
        except SettingsError as exc:
            typer.secho(f"batchpipe poller: {exc}", err=True, fg="red")
            raise typer.Exit(2) from None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stopping.set)
        server, serving = await serve_in_background(
            service.http_app(), settings.http_host, settings.poller_http_port
        )
        try:
            await service.run()
        finally:
            server.should_exit = True
            await serving

    asyncio.run(main())


def status(
    url: Annotated[
        str, typer.Option(help="Base URL of the poller's HTTP port.")
    ] = DEFAULT_STATUS_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
) -> None:
    """Show the batches the poller follows (model, request counts, status, age) and totals."""
    import httpx
    import orjson
    from rich.console import Console
    from rich.table import Table

    try:
        response = httpx.get(f"{url.rstrip('/')}/status", timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        typer.secho(f"batchpipe status: {url}: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    doc: dict[str, Any] = response.json()
    if as_json:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="In-flight batches")
    for column in ("batch", "model", "status", "requests", "done", "failed", "age"):
        table.add_column(
            column, justify="right" if column in ("requests", "done", "failed", "age") else "left"
        )
    for batch in doc.get("batches", []):
        counts = batch.get("request_counts") or {}
        table.add_row(
            batch["batch_id"],
            batch["model"],
            batch["status"] + (" (publishing)" if batch.get("publishing") else ""),
            str(batch["request_count"]),
            str(counts.get("completed", "-")),
            str(counts.get("failed", "-")),
            _age(batch["age_seconds"]),
        )
    console = Console()
    console.print(table)
    totals = doc.get("totals", {})
    by_status = ", ".join(f"{k}: {v}" for k, v in totals.get("by_status", {}).items()) or "-"
    console.print(
        f"in flight: {totals.get('in_flight', 0)} batches, "
        f"{totals.get('requests_in_flight', 0)} requests ({by_status}); "
        f"results published: {totals.get('results_published', 0)}, "
        f"retries: {totals.get('retries_published', 0)}"
    )
    spent = (doc.get("costs") or {}).get("total")
    if spent:
        console.print(
            f"published by this poller: {spent['results']} results, "
            f"{spent['cost_usd']:.4f} USD at batch prices, {spent['saving_usd']:.4f} USD saved "
            "(all time, per API key: batchpipe costs)"
        )


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
