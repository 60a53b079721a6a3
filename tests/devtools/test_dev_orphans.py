"""``batchpipe dev`` killed with SIGKILL leaves nothing behind: every child, the Kafka JVM (a
grandchild) and whatever they started die with it, and every port it used is free again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchpipe.devtools import launch
from batchpipe.devtools.dev.cli import port_in_use
from batchpipe.devtools.local_kafka import free_port
from tests.devtools.proctree import cmdline, descendants, kill_all, wait_gone

CHILDREN = ("kafka", "emulator", "ingest", "dispatcher", "poller")


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.timeout(300)
@pytest.mark.skipif(not launch.SUPPORTED, reason="PR_SET_PDEATHSIG is Linux only")
def test_a_sigkilled_dev_takes_every_child_and_the_broker_with_it(tmp_path: Path) -> None:
    ports = {name: free_port() for name in CHILDREN}
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHPIPE_", "OPENAI_"))}
    dev_log = tmp_path / "dev.log"
    with dev_log.open("wb") as log:
        dev = subprocess.Popen(  # the way child processes and scripts start the CLI
            [
                sys.executable,
                "-m",
                "batchpipe.services.cli",
                "dev",
                "--data-dir",
                str(tmp_path / "state"),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    tree: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 150
        while b"Ctrl-C stops everything" not in dev_log.read_bytes():
            assert dev.poll() is None, dev_log.read_text()
            assert time.monotonic() < deadline, dev_log.read_text()[-5000:]
            time.sleep(0.5)
        while not all(port_in_use(port) for port in ports.values()):  # dispatcher, poller too
            assert time.monotonic() < deadline, dev_log.read_text()[-5000:]
            time.sleep(0.5)
        tree = descendants(dev.pid)
        shown = {pid: cmdline(pid) for pid in tree}
        direct = [pid for pid in tree if _ppid(pid) == dev.pid]
        assert len(direct) == len(CHILDREN), shown
        java = [pid for pid, line in shown.items() if "kafka.Kafka" in line]
        assert len(java) == 1 and java[0] not in direct, shown  # a grandchild

        dev.kill()
        dev.wait(10)
        left = wait_gone(tree, within=10)
        assert left == {}, {pid: shown[pid] for pid in left}
        busy = [name for name, port in ports.items() if port_in_use(port)]
        assert busy == [], busy
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(10)
        kill_all(tree)


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])
