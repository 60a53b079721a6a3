"""Ingest's metrics across uvicorn worker processes (prometheus_client multiprocess mode).

With ``batchpipe ingest --workers N`` every worker is its own process with its own counters,
yet ``/metrics`` answers from whichever worker accepted the scrape's connection. So that every
scrape reports the whole service:

- the CLI (parent process) creates a fresh private directory for the run
  (``metrics_directory``) and exports it as ``PROMETHEUS_MULTIPROC_DIR`` before uvicorn spawns
  the workers. prometheus_client chooses its value class when it is imported, so each spawned
  worker then keeps every metric value in a per-pid file there;
- each worker registers its metrics in a private registry and serves a registry holding only a
  ``MultiProcessCollector`` over that directory (``metrics_registries``): counters and
  histograms are summed over the workers, alive or dead; the in-flight gauge (``livesum``) sums
  the live workers only;
- a worker removes its live-gauge files when its lifespan ends (``mark_dead_at_shutdown``), and
  the parent removes those of workers that died without a shutdown (``DeadWorkerSweeper``);
- at exit the parent removes the directory, so no later run reads a stale file.

Invariant: a process whose metric values are not in files (one worker, tests) serves the
registry its metrics are registered in, as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
DIR_PREFIX: Final = "batchpipe-ingest-metrics-"
# prometheus_client's file name of a live gauge: gauge_live<mode>_<pid>.db
_LIVE_GAUGE_FILE: Final = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def in_multiprocess_mode() -> bool:
    """Whether this process's metric values live in per-pid files: prometheus_client decided
    so when it was imported, from ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def metrics_registries(
    registry: CollectorRegistry | None,
) -> tuple[CollectorRegistry, CollectorRegistry]:
    """The registry the metrics register in, and the one ``/metrics`` serves.

    A given registry is both. Otherwise, in multiprocess mode the metrics register in a private
    registry (never served: its values are this worker's only) and ``/metrics`` serves the
    aggregate of every worker's files; in a single process one fresh registry is both."""
    if registry is not None:
        return registry, registry
    if in_multiprocess_mode():
        served = CollectorRegistry()
        MultiProcessCollector(served, path=os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
        return CollectorRegistry(), served
    fresh = CollectorRegistry()
    return fresh, fresh


def mark_dead_at_shutdown(app: FastAPI) -> FastAPI:
    """Wrap ``app``'s lifespan so that, in multiprocess mode, this worker's live-gauge files are
    removed once it has shut down (no request is in flight by then): a stopped worker's
    in-flight count leaves the total. Counters and histograms stay (they are cumulative)."""
    if not in_multiprocess_mode():
        return app
    inner = app.router.lifespan_context
    path = os.environ[MULTIPROC_ENV]

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        try:
            async with inner(application) as state:
                yield state
        finally:
            mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]

    app.router.lifespan_context = lifespan
    return app


def sweep_dead_workers(path: Path) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist (a worker killed, or
    crashed, before its lifespan ended); the pids swept."""
    dead = set()
    for file in path.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(file.name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DeadWorkerSweeper:
    """A daemon thread of the parent process running ``sweep_dead_workers`` every ``interval``
    seconds (uvicorn replaces a dead worker; its in-flight count must not stay)."""

    def __init__(self, path: Path, interval: float = 5.0) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-sweeper", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(OSError):
                sweep_dead_workers(self._path)

    def __enter__(self) -> DeadWorkerSweeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def metrics_directory() -> Iterator[Path]:
    """A fresh private directory (mode 0700) for this run's metric files, exported as
    ``PROMETHEUS_MULTIPROC_DIR`` for the workers the caller spawns, removed at exit.

    A ``PROMETHEUS_MULTIPROC_DIR`` already set names where to create it (e.g. a tmpfs mount);
    its existing content is never read. Otherwise it is created in the system temp dir."""
    previous = os.environ.get(MULTIPROC_ENV)
    path = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=previous or None))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)
