"""app.py (the Faust engine) refuses to start on a faust-streaming it was not written for, and
says what to do; ``batchpipe dispatcher`` turns that into a clear exit, not a stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchpipe.services.dispatcher.app import (
    FAUST_VERSION,
    UnsupportedFaustVersion,
    create_app,
    require_faust_version,
)
from batchpipe.shared.settings import Settings


def test_the_pinned_version_is_the_installed_one() -> None:
    require_faust_version()  # the lock file pins it: this is what CI runs
    require_faust_version(FAUST_VERSION)


@pytest.mark.parametrize("installed", ["0.15.2", "0.16.0", "0.15.3.post1", "none"])
def test_another_version_is_refused_with_a_clear_message(installed: str) -> None:
    with pytest.raises(UnsupportedFaustVersion) as raised:
        require_faust_version(installed)
    message = str(raised.value)
    assert f"faust-streaming=={FAUST_VERSION}" in message and installed in message
    assert "BATCHPIPE_DISPATCHER_ENGINE=aiokafka" in message


def test_create_app_checks_the_version_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: "0.99.0")
    with pytest.raises(UnsupportedFaustVersion):
        create_app(Settings())


_PROBE = """
import sys
from importlib import metadata
real = metadata.version
metadata.version = lambda name: "0.14.0" if name == "faust-streaming" else real(name)
sys.argv = ["batchpipe", "dispatcher"]
from batchpipe.services.cli import main
main()
"""


def test_the_command_exits_2_naming_the_version(tmp_path: Path) -> None:
    env = {**os.environ, "BATCHPIPE_DISPATCHER_DATA_DIR": str(tmp_path)}
    env.pop("BATCHPIPE_DISPATCHER_ENGINE", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert "faust-streaming==0.15.3" in out.stderr and "0.14.0 is installed" in out.stderr
    assert "Traceback" not in out.stderr
