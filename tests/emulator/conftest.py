"""The emulator tests run with even faster timings than the shared ``emulator`` fixture."""

from __future__ import annotations

import pytest

from batchpipe.devtools.emulator.runner import RunningEmulator
from tests.fixtures_emulator import EmulatorFactory


@pytest.fixture
def emulator(emulator_factory: EmulatorFactory) -> RunningEmulator:
    return emulator_factory(processing_seconds=0.2)
