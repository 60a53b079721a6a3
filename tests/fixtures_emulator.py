"""Pytest fixtures for the local OpenAI emulator (loaded from tests/conftest.py).

- ``emulator``: an emulator serving in a background thread on a free port with fast timings
  (``processing_seconds=0.5``), its own data dir, fixed seed. It is a ``RunningEmulator``:
  ``.base_url`` (".../v1"), ``.api_key``, ``.data_dir``, ``.stats()``, ``.set_faults(**kw)``.
- ``emulator_factory(**config)``: start more (or differently configured) emulators; each is
  stopped at the end of the test. Pass ``data_dir=`` to restart on the same state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.runner import RunningEmulator, run_emulator_in_thread

FAST_DEFAULTS: dict[str, Any] = {
    "port": 0,
    "processing_seconds": 0.5,
    "seed": 1234,
    "retry_after_seconds": 0.05,
}

EmulatorFactory = Callable[..., RunningEmulator]


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[EmulatorFactory]:
    with contextlib.ExitStack() as stack:
        count = 0

        def factory(**overrides: Any) -> RunningEmulator:
            nonlocal count
            count += 1
            values = FAST_DEFAULTS | {"data_dir": tmp_path / f"emulator-{count}"} | overrides
            return stack.enter_context(run_emulator_in_thread(EmulatorConfig(**values)))

        yield factory


@pytest.fixture
def emulator(emulator_factory: EmulatorFactory) -> RunningEmulator:
    return emulator_factory()
