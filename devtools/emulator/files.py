"""File bytes on disk: ``<data_dir>/files/<file-id>``; uploads and outputs are written to
``<data_dir>/tmp`` first and moved into place, so a crash never leaves a half file under an id.
A running batch's input is hard-linked under ``<data_dir>/batch-inputs`` until it ends.
Writes run in worker threads; nothing is read whole into memory."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path


class FileStorage:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "files"
        self.tmp = data_dir / "tmp"
        self.pinned = data_dir / "batch-inputs"

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.pinned.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # partial writes of a previous run
            leftover.unlink(missing_ok=True)

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def pin(self, file_id: str, batch_id: str) -> None:
        """Keep a batch's input (a hard link) even if the file is deleted while it runs."""
        target = self.pinned / batch_id
        target.unlink(missing_ok=True)
        os.link(self.path(file_id), target)

    def unpin(self, batch_id: str) -> None:
        (self.pinned / batch_id).unlink(missing_ok=True)

    def batch_input(self, file_id: str, batch_id: str) -> Path:
        pinned = self.pinned / batch_id
        return pinned if pinned.exists() else self.path(file_id)

    def tmp_path(self) -> Path:
        return self.tmp / uuid.uuid4().hex

    def commit(self, tmp: Path, file_id: str) -> None:
        os.replace(tmp, self.path(file_id))

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(self.path(file_id).unlink, True)
