"""`make chaos`: run the reliability scenarios and print one table; exit 1 on any loss.

    python -m tests.chaos.run                 # full form: 20,000 requests, 4 kills each
    python -m tests.chaos.run --short -s 1 -s 4   # a quick look at two scenarios
    python -m tests.chaos.run -s 7 -s 8 -s 9      # the 3-broker cluster scenarios only

The table also goes to `chaos-report.md` (markdown) in the work directory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.chaos.scenarios import CLUSTER_SCENARIOS, SCENARIOS, Row, Size, scenario

HEADERS = (
    "scenario",
    "requests",
    "lost",
    "duplicate submissions",
    "duplicate results",
    "dead-lettered",
    "recovery s (worst)",
    "wall s",
)


def cells(row: Row, wall: float) -> list[str]:
    dead = (
        f"{row.dead_lettered}/{row.expected_dead_letters}"
        if row.expected_dead_letters
        else (str(row.dead_lettered))
    )
    return [
        row.scenario,
        str(row.requests),
        str(row.lost),
        str(row.duplicate_submissions),
        str(row.duplicate_results),
        dead,
        row.worst_recovery,
        f"{wall:.0f}",
    ]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


async def main_async(numbers: list[int], size: Size, workdir: Path) -> int:
    console = Console(width=140)
    rendered: list[list[str]] = []
    failed = False
    for number in numbers:
        console.print(f"[bold]scenario {number}[/] … (work dir {workdir})")
        started = time.monotonic()
        try:
            row = await scenario(number, workdir, size)
        except Exception as exc:
            row = Row(scenario=f"scenario {number}", requests=0, notes=repr(exc))
            row.lost = -1
        wall = time.monotonic() - started
        rendered.append(cells(row, wall))
        failed = failed or not row.ok
        console.print(f"  {'ok' if row.ok else 'FAILED'} {row.notes}")
    table = Table(*HEADERS, title="batchpipe chaos")
    for r in rendered:
        table.add_row(*r)
    console.print(table)
    (workdir / "chaos-report.md").write_text(markdown(rendered))
    console.print(f"markdown: {workdir / 'chaos-report.md'}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the short form run by make test")
    parser.add_argument(
        "-s", "--scenario", type=int, action="append", choices=SCENARIOS + CLUSTER_SCENARIOS
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    size = Size.short() if args.short else Size.full()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="batchpipe-chaos-"))
    sys.exit(
        asyncio.run(main_async(args.scenario or [*SCENARIOS, *CLUSTER_SCENARIOS], size, workdir))
    )


if __name__ == "__main__":
    main()
