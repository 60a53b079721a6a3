"""``python -m batchpipe.devtools.emulator``: the same command as ``batchpipe emulator``."""

from __future__ import annotations

import typer

from batchpipe.devtools.emulator.cli import emulator


def main() -> None:
    typer.run(emulator)


if __name__ == "__main__":
    main()
