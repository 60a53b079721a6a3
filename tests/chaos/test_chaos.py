"""The short form of the reliability suite (`make chaos` runs the full one).

One kill per service, a short broker outage, emulator faults and garbage, with 1,500 requests
each: nothing lost, nothing billed twice, no duplicate result for a read_committed consumer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.scenarios import SCENARIOS, Size, scenario

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@pytest.mark.timeout(400)
@pytest.mark.parametrize("number", SCENARIOS)
async def test_short_chaos(number: int, tmp_path: Path) -> None:
    row = await scenario(number, tmp_path, Size.short())
    assert row.ok, row
    assert all(r >= 0 for r in row.recovery_seconds), row
