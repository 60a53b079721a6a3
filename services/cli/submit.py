"""``batchpipe submit FILE``: produce the requests of a JSONL file straight to Kafka.

Each non-blank line is one item in any shape ingest accepts (``shared.request_items``): an
OpenAI Batch input line, a bare list of chat messages, or an object with ``messages``. The file
is streamed in chunks of lines (never read whole); each chunk's valid lines are sent at once
with the shared idempotent ``acks=all`` producer and awaited together, so the progress bar only
counts what Kafka has acknowledged. Bad lines are refused one by one (line number and reason)
and the command exits 1 if any was refused; lines accepted before stay accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import typer

from batchpipe.services.cli.support import settings_or_exit
from batchpipe.shared.contracts import RequestLine, encode, key_bytes
from batchpipe.shared.request_items import DuplicateIds, ItemRefused, normalize_item
from batchpipe.shared.settings import Settings

# Refusals kept for the summary; beyond this only the count grows (bounded memory).
MAX_REFUSALS_KEPT = 1000
SHOWN_REFUSALS = 20


@dataclass(frozen=True)
class Refusal:
    line: int
    reason: str


@dataclass
class SubmitSummary:
    """What ``submit_file`` did: lines read, accepted (acknowledged by Kafka), refused."""

    lines: int = 0
    accepted: int = 0
    refused_count: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    seconds: float = 0.0

    def refuse(self, line: int, reason: str) -> None:
        self.refused_count += 1
        if len(self.refusals) < MAX_REFUSALS_KEPT:
            self.refusals.append(Refusal(line, reason))


def parse_line(raw: bytes, default_model: str, default_kwargs: Mapping[str, Any]) -> RequestLine:
    """One line of the file → its request line, or ``ItemRefused`` with the reason."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        where = f" at column {exc.colno}" if exc.colno else ""
        raise ItemRefused(f"not valid JSON{where}: {exc.msg}") from None
    return normalize_item(item, default_model=default_model, default_kwargs=default_kwargs)


def _read_chunk(fh: IO[bytes], max_lines: int) -> tuple[list[bytes], int]:
    lines: list[bytes] = []
    size = 0
    while len(lines) < max_lines:
        raw = fh.readline()
        if not raw:
            break
        size += len(raw)
        lines.append(raw)
    return lines, size


async def submit_file(
    settings: Settings,
    path: Path,
    *,
    default_model: str | None = None,
    chunk_lines: int = 1000,
    dry_run: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> SubmitSummary:
    """Validate and produce every line of ``path`` to the requests topic; see the module doc."""
    from batchpipe.shared.kafka import make_producer

    model = default_model or settings.default_model
    kwargs = settings.default_request_kwargs
    summary = SubmitSummary()
    seen = DuplicateIds()
    started = time.monotonic()
    producer = None if dry_run else make_producer(settings)
    if producer is not None:
        await asyncio.wait_for(producer.start(), 30)
    try:
        with path.open("rb") as fh:
            while True:
                raws, size = await asyncio.to_thread(_read_chunk, fh, chunk_lines)
                if not raws:
                    break
                good: list[RequestLine] = []
                for raw in raws:
                    summary.lines += 1
                    if not raw.strip():
                        continue
                    try:
                        line = parse_line(raw, model, kwargs)
                        seen.check(line.custom_id, summary.lines)
                    except ItemRefused as exc:
                        summary.refuse(summary.lines, str(exc))
                        continue
                    good.append(line)
                if producer is not None and good:
                    futures = [
                        await producer.send(
                            settings.requests_topic, encode(line), key=key_bytes(line.custom_id)
                        )
                        for line in good
                    ]
                    await asyncio.gather(*futures)
                summary.accepted += len(good)
                if on_progress is not None:
                    on_progress(size)
    finally:
        if producer is not None:
            await producer.stop()
        summary.seconds = time.monotonic() - started
    return summary


def submit(
    file: Annotated[
        Path,
        typer.Argument(
            help="JSONL file: one OpenAI Batch line, message list or {messages: ...} per line."
        ),
    ],
    default_model: Annotated[
        str | None,
        typer.Option(help="Model of lines that name none (default: BATCHPIPE_DEFAULT_MODEL)."),
    ] = None,
    chunk_lines: Annotated[
        int, typer.Option(min=1, max=100_000, help="Lines sent to Kafka and awaited at once.")
    ] = 1000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only validate the file; produce nothing.")
    ] = False,
) -> None:
    """Produce the requests of a JSONL file to the requests topic, with a progress bar.

    Accepts the same shapes as POST /requests. Lines without custom_id get a generated one.
    Bare message lists get BATCHPIPE_DEFAULT_REQUEST_KWARGS. Kafka connection comes from
    BATCHPIPE_KAFKA_* and the topic from BATCHPIPE_REQUESTS_TOPIC. Exits 1 if any line was
    refused (the others are produced), 2 if the file cannot be read.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    settings = settings_or_exit("submit")
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if not file.is_file():
        err.print(f"batchpipe submit: {file} is not a readable file", style="red", markup=False)
        raise typer.Exit(2)
    progress = Progress(
        TextColumn("[bold]submit[/bold]"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    task = progress.add_task("submit", total=file.stat().st_size)
    try:
        with progress:
            summary = asyncio.run(
                submit_file(
                    settings,
                    file,
                    default_model=default_model,
                    chunk_lines=chunk_lines,
                    dry_run=dry_run,
                    on_progress=lambda n: progress.advance(task, n),
                )
            )
    except OSError as exc:
        err.print(f"batchpipe submit: cannot read {file}: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    except Exception as exc:  # Kafka unreachable or a send failed: one clear line
        err.print(f"batchpipe submit: {type(exc).__name__}: {exc}", style="red", markup=False)
        err.print("Lines already acknowledged stay in Kafka; re-submitting them duplicates them.")
        raise typer.Exit(1) from None
    verb = "valid (dry run)" if dry_run else f"accepted into '{settings.requests_topic}'"
    rate = summary.accepted / summary.seconds if summary.seconds > 0 else 0.0
    out.print(
        f"{summary.accepted} {verb}, {summary.refused_count} refused, "
        f"{summary.lines} lines in {summary.seconds:.1f}s ({rate:,.0f} requests/s)"
    )
    if summary.refused_count:
        for refusal in summary.refusals[:SHOWN_REFUSALS]:
            out.print(f"  line {refusal.line}: {refusal.reason}", markup=False)
        if summary.refused_count > SHOWN_REFUSALS:
            out.print(f"  ... and {summary.refused_count - SHOWN_REFUSALS} more refused lines")
        raise typer.Exit(1)
