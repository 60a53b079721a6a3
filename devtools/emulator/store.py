"""Durable state: files, batches and per-custom_id counters in one SQLite database (aiosqlite).

Objects are stored as their API JSON (plus an ``internal`` JSON for the scheduler's float
timestamps and fault decisions), so a restarted emulator answers exactly as before. Composite
writes (e.g. "batch is in_progress and its custom_ids are counted") are single transactions.
An Anthropic batch's status column is its ``processing_status`` (``_status``).
Every file and batch belongs to one provider (``provider``: the flavour it was created
through); lookups and listings by a provider see only its own, the counters see them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    purpose TEXT NOT NULL,
    obj TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT 'openai'
);
CREATE TABLE IF NOT EXISTS batches(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    obj TEXT NOT NULL,
    internal TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT 'openai'
);
CREATE INDEX IF NOT EXISTS batches_status ON batches(status);
CREATE TABLE IF NOT EXISTS custom_ids(
    custom_id TEXT PRIMARY KEY,
    batches INTEGER NOT NULL DEFAULT 0,
    successes INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS custom_ids_batches ON custom_ids(batches);
CREATE INDEX IF NOT EXISTS custom_ids_successes ON custom_ids(successes);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# OpenAI's active statuses and Anthropic's (its ``processing_status``: in_progress, canceling)
ACTIVE_STATUSES = ("validating", "in_progress", "finalizing", "cancelling", "canceling")
DEFAULT_PROVIDER = "openai"  # the provider of rows written before there were several

Json = dict[str, Any]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _status(obj: Json) -> str:
    """The status column: OpenAI's ``status``, or Anthropic's ``processing_status``."""
    return str(obj["status"] if "status" in obj else obj["processing_status"])


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA synchronous=NORMAL")
        await self.db.executescript(SCHEMA)
        for table in ("files", "batches"):  # a data dir from before: add the column
            columns = {
                row[1] for row in await self.db.execute_fetchall(f"PRAGMA table_info({table})")
            }
            if "provider" not in columns:
                await self.db.execute(
                    f"ALTER TABLE {table} ADD COLUMN provider TEXT NOT NULL "
                    f"DEFAULT '{DEFAULT_PROVIDER}'"
                )

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    # Every statement runs to completion under ``_lock``: on one SQLite connection, a SELECT
    # stepped while another statement writes sees undefined results (seen: NULL statuses).

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._lock:
            rows = await self.db.execute_fetchall(sql, tuple(params))
            return next(iter(rows), None)

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._lock:
            return list(await self.db.execute_fetchall(sql, tuple(params)))

    # files -------------------------------------------------------------------------------

    async def insert_file(self, obj: Json, provider: str = DEFAULT_PROVIDER) -> None:
        async with self._lock:
            await self.db.execute(
                "INSERT INTO files(id, purpose, obj, provider) VALUES(?, ?, ?, ?)",
                (obj["id"], obj["purpose"], _dumps(obj), provider),
            )

    async def get_file(self, file_id: str, provider: str = DEFAULT_PROVIDER) -> Json | None:
        row = await self._one(
            "SELECT obj FROM files WHERE id = ? AND provider = ?", (file_id, provider)
        )
        return orjson.loads(row[0]) if row else None

    async def delete_file(self, file_id: str, provider: str = DEFAULT_PROVIDER) -> bool:
        async with self._lock:
            cursor = await self.db.execute(
                "DELETE FROM files WHERE id = ? AND provider = ?", (file_id, provider)
            )
            return bool(cursor.rowcount)

    async def list_files(
        self,
        after: str | None,
        limit: int,
        order: str,
        purpose: str | None,
        provider: str = DEFAULT_PROVIDER,
    ) -> tuple[list[Json], bool]:
        desc = order != "asc"
        where: list[str] = ["provider = ?"]
        params: list[Any] = [provider]
        if purpose:
            where.append("purpose = ?")
            params.append(purpose)
        if after:
            row = await self._one("SELECT seq FROM files WHERE id = ?", (after,))
            if row is not None:
                where.append("seq < ?" if desc else "seq > ?")
                params.append(row[0])
        sql = "SELECT obj FROM files WHERE " + " AND ".join(where)  # noqa: S608 (fixed parts)
        sql += f" ORDER BY seq {'DESC' if desc else 'ASC'} LIMIT ?"
        rows = await self._all(sql, [*params, limit + 1])
        return [orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    async def count_files(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM files")
        return int(row[0])

    # batches -----------------------------------------------------------------------------

    async def insert_batch(
        self,
        obj: Json,
        internal: Json,
        provider: str = DEFAULT_PROVIDER,
        *,
        register_custom_ids: Iterable[str] = (),
        lines_submitted: int = 0,
    ) -> int:
        """Insert a new batch and count it (and, for a provider whose requests come inline,
        its custom_ids and lines) in one transaction; returns its sequence number."""
        async with self._lock:
            await self.db.execute("BEGIN")
            try:
                cursor = await self.db.execute(
                    "INSERT INTO batches(id, status, obj, internal, provider) "
                    "VALUES(?, ?, ?, ?, ?)",
                    (obj["id"], _status(obj), _dumps(obj), _dumps(internal), provider),
                )
                seq = int(cursor.lastrowid or 0)
                internal["seq"] = seq
                await self.db.execute(
                    "UPDATE batches SET internal = ? WHERE id = ?", (_dumps(internal), obj["id"])
                )
                await self._bump("batches_created", 1)
                await self._count_ids("batches", register_custom_ids)
                if lines_submitted:
                    await self._bump("lines_submitted", lines_submitted)
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            return seq

    async def get_batch(
        self, batch_id: str, provider: str = DEFAULT_PROVIDER
    ) -> tuple[Json, Json] | None:
        row = await self._one(
            "SELECT obj, internal FROM batches WHERE id = ? AND provider = ?", (batch_id, provider)
        )
        return (orjson.loads(row[0]), orjson.loads(row[1])) if row else None

    async def update_batch(
        self,
        obj: Json,
        internal: Json,
        *,
        new_files: Iterable[Json] = (),
        provider: str = DEFAULT_PROVIDER,
        register_custom_ids: Iterable[str] = (),
        succeeded_custom_ids: Iterable[str] = (),
        lines_submitted: int = 0,
    ) -> None:
        """Save a batch, and in the same transaction its new output files (of ``provider``,
        the batch's) and counters."""
        async with self._lock:
            await self.db.execute("BEGIN")
            try:
                await self.db.execute(
                    "UPDATE batches SET status = ?, obj = ?, internal = ? WHERE id = ?",
                    (_status(obj), _dumps(obj), _dumps(internal), obj["id"]),
                )
                for file_obj in new_files:
                    await self.db.execute(
                        "INSERT INTO files(id, purpose, obj, provider) VALUES(?, ?, ?, ?)",
                        (file_obj["id"], file_obj["purpose"], _dumps(file_obj), provider),
                    )
                await self._count_ids("batches", register_custom_ids)
                await self._count_ids("successes", succeeded_custom_ids)
                if lines_submitted:
                    await self._bump("lines_submitted", lines_submitted)
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def list_batches(
        self,
        after: str | None,
        limit: int,
        provider: str = DEFAULT_PROVIDER,
        before: str | None = None,
    ) -> tuple[list[tuple[Json, Json]], bool]:
        """A page of ``provider``'s batches, newest first: the ``limit`` older than ``after``
        (or from the newest), or with ``before`` the ``limit`` newer than it, nearest it
        first taken; and whether there are more that way."""
        params: list[Any] = [provider]
        sql = "SELECT obj, internal FROM batches WHERE provider = ?"
        anchor, newer = (before, True) if before else (after, False)
        if anchor:
            row = await self._one("SELECT seq FROM batches WHERE id = ?", (anchor,))
            if row is not None:
                sql += " AND seq > ?" if newer else " AND seq < ?"
                params.append(row[0])
        sql += f" ORDER BY seq {'ASC' if newer else 'DESC'} LIMIT ?"
        rows = await self._all(sql, [*params, limit + 1])
        pairs = [(orjson.loads(r[0]), orjson.loads(r[1])) for r in rows[:limit]]
        if newer:
            pairs.reverse()
        return pairs, len(rows) > limit

    async def delete_batch(self, batch_id: str, provider: str) -> bool:
        async with self._lock:
            cursor = await self.db.execute(
                "DELETE FROM batches WHERE id = ? AND provider = ?", (batch_id, provider)
            )
            return bool(cursor.rowcount)

    async def active_batches(self) -> list[tuple[Json, Json]]:
        marks = ",".join("?" * len(ACTIVE_STATUSES))
        rows = await self._all(
            f"SELECT obj, internal FROM batches WHERE status IN ({marks}) ORDER BY seq",  # noqa: S608
            ACTIVE_STATUSES,
        )
        return [(orjson.loads(r[0]), orjson.loads(r[1])) for r in rows]

    # counters ----------------------------------------------------------------------------

    async def _count_ids(self, column: str, ids: Iterable[str]) -> None:
        """Add one to ``column`` of each custom_id (inside the caller's transaction).

        One statement per list, the ids as one JSON array: SQLite walks it with the GIL
        released (an executemany of 50,000 rows bound each row in Python and held the GIL for
        ~0.15 s, stalling the API's uploads meanwhile)."""
        listed = list(ids)
        if listed:
            await self.db.execute(
                f"INSERT INTO custom_ids(custom_id, {column}) "  # noqa: S608 (fixed names)
                "SELECT value, 1 FROM json_each(?) WHERE true "
                f"ON CONFLICT(custom_id) DO UPDATE SET {column} = {column} + 1",
                (orjson.dumps(listed).decode(),),
            )

    async def _bump(self, name: str, amount: int) -> None:
        await self.db.execute(
            "INSERT INTO counters(name, value) VALUES(?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, amount),
        )

    async def stats(self) -> Json:
        counters = dict(await self._all("SELECT name, value FROM counters"))
        by_status = dict(await self._all("SELECT status, COUNT(*) FROM batches GROUP BY status"))
        by_provider: dict[str, dict[str, int]] = {}
        for provider, status, count in await self._all(
            "SELECT provider, status, COUNT(*) FROM batches GROUP BY provider, status"
        ):
            by_provider.setdefault(provider, {})[status] = int(count)
        dup = await self._one("SELECT COUNT(*) FROM custom_ids WHERE batches > 1")
        billed = await self._one("SELECT COUNT(*) FROM custom_ids WHERE successes > 1")
        return {
            "files": await self.count_files(),
            "batches_by_status": by_status,
            "batches_by_provider": by_provider,
            "lines_submitted": int(counters.get("lines_submitted", 0)),
            "duplicate_custom_ids": int(dup[0]),
            "double_billed_custom_ids": int(billed[0]),
            "batches_created": int(counters.get("batches_created", 0)),
        }
