"""``devtools.launch``: a child started through it dies with its parent, even a SIGKILLed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from batchpipe.devtools import launch
from tests.devtools.proctree import descendants, kill_all, wait_gone

pytestmark = pytest.mark.skipif(not launch.SUPPORTED, reason="PR_SET_PDEATHSIG is Linux only")

# A parent that starts one long-sleeping child (through the launcher or not), says so, waits.
PARENT = """
import subprocess, sys, time
from batchpipe.devtools import launch
argv = [sys.executable, "-c", "import time; time.sleep(60)"]
child = subprocess.Popen(launch.command(argv) if sys.argv[1] == "launch" else argv)
print(child.pid, flush=True)
time.sleep(60)
"""


def start_parent(mode: str) -> tuple[subprocess.Popen[str], dict[int, int]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    tree = descendants(parent.pid)
    assert child in tree, tree
    return parent, tree


def test_a_launched_child_dies_when_its_parent_is_sigkilled() -> None:
    parent, tree = start_parent("launch")
    try:
        parent.kill()
        parent.wait(10)
        assert wait_gone(tree, within=5) == {}
    finally:
        kill_all(tree)


def test_without_the_launcher_the_child_outlives_its_parent() -> None:
    """The control: what the launcher prevents."""
    parent, tree = start_parent("plain")
    try:
        parent.kill()
        parent.wait(10)
        assert wait_gone(tree, within=1) == tree
    finally:
        kill_all(tree)


def test_the_launcher_runs_nothing_if_its_parent_is_already_gone() -> None:
    """PARENT_PID is not the launcher's parent (as after a parent died before prctl)."""
    done = subprocess.run(
        [sys.executable, "-m", "batchpipe.devtools.launch", "1", "TERM", "echo", "ran"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 128 + signal.SIGTERM
    assert "ran" not in done.stdout


def test_the_command_keeps_the_argv_and_names_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = launch.command(["prog", "--flag"], signal.SIGTERM, python="py")
    assert argv[:3] == ("py", "-m", "batchpipe.devtools.launch")
    assert argv[3:] == (str(os.getpid()), "TERM", "prog", "--flag")
    done = subprocess.run(
        launch.command([sys.executable, "-c", "print('exec ok')"]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "exec ok\n"
    monkeypatch.setattr(launch, "SUPPORTED", False)
    assert launch.command(["prog"]) == ("prog",)
