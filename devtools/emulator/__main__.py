"""``python -m batchpipe.devtools.emulator``: the same command as ``batchpipe openai-emulator``."""

from __future__ import annotations

import typer

from batchpipe.devtools.emulator.cli import openai_emulator


def main() -> None:
    typer.run(openai_emulator)


if __name__ == "__main__":
    main()
