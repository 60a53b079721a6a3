"""Run child processes with one prefixed, coloured log stream; restart, stop in reverse order.

Each child runs in its own session (process group), so a Ctrl-C in the terminal reaches only
``batchpipe dev``, which then stops the children itself, last started first: SIGTERM to the
child, a wait of ``stop_timeout``, then SIGKILL to its whole group. If the supervisor itself is
killed (SIGKILL, a crash), the kernel kills every child (``devtools.launch``: the parent death
signal, SIGKILL by default, since nobody is left to escalate a stuck shutdown and every child
recovers from a crash: Kafka replays its log, the services resume from committed offsets).
Children are spawned from the event loop's thread, which lives as long as the supervisor.
Output (stdout and stderr together) is relayed line by line as ``[name] line``, without
terminal control sequences. A child that exits while not stopping is reported loudly and, if
``restart``, started again after a backoff (1 s doubling to 30 s; reset after a minute of uptime).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from batchpipe.devtools import launch
from batchpipe.devtools.dev.plan import ProcessSpec

COLORS = ("36", "35", "32", "33", "34", "31", "96", "95")
RESET = "\033[0m"
# Cursor moves, screen clears (e.g. Faust's "show cursor") and, without colour, colours too.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-LN-Za-z]")
_ANY_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STABLE_SECONDS = 60.0


@dataclass
class Child:
    spec: ProcessSpec
    color: str
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Starts ``ProcessSpec`` children and relays their output through ``write``."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        color: bool = False,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        parent_death_signal: signal.Signals | None = signal.SIGKILL,
    ) -> None:
        self._write = write
        self._parent_death_signal = parent_death_signal
        self._color = color
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.children: list[Child] = []
        self.stopping = False
        self.width = 10

    def log(self, name: str, text: str, *, color: str = "1", loud: bool = False) -> None:
        prefix = f"[{name}]".ljust(self.width + 2)
        if loud:
            text = f"!!! {text}"
        if self._color:
            body = f"\033[1;31m{text}{RESET}" if loud else text
            self._write(f"\033[{color}m{prefix}{RESET} {body}")
        else:
            self._write(f"{prefix} {text}")

    def say(self, text: str, *, loud: bool = False) -> None:
        self.log("dev", text, loud=loud)

    async def start(self, spec: ProcessSpec) -> Child:
        """Start one child (and keep it running until ``stop_all``)."""
        child = Child(spec, COLORS[len(self.children) % len(COLORS)])
        self.width = max(self.width, len(spec.name))
        self.children.append(child)
        await self._spawn(child)
        child.task = asyncio.create_task(self._watch(child), name=f"dev-{spec.name}")
        return child

    async def _spawn(self, child: Child) -> None:
        spec = child.spec
        spec.cwd.mkdir(parents=True, exist_ok=True)
        sig = self._parent_death_signal
        argv = spec.argv if sig is None else launch.command(spec.argv, sig)
        child.process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=1024 * 1024,
        )
        child.starts += 1

    async def _relay(self, child: Child) -> None:
        process = child.process
        assert process is not None and process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line longer than the limit: pass it on in pieces
                raw = await process.stdout.read(64 * 1024)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            line = (_CONTROL if self._color else _ANY_CSI).sub("", line)
            self.log(child.spec.name, line, color=child.color)

    async def _watch(self, child: Child) -> None:
        backoff = self._backoff_initial
        while True:
            started = time.monotonic()
            await self._relay(child)
            assert child.process is not None
            code = await child.process.wait()
            child.exits.append(code)
            if self.stopping:
                return
            self.log(
                child.spec.name,
                f"{child.spec.name} exited unexpectedly (code {code})",
                color=child.color,
                loud=True,
            )
            if not child.spec.restart:
                return
            if time.monotonic() - started > STABLE_SECONDS:
                backoff = self._backoff_initial
            self.say(f"restarting {child.spec.name} in {backoff:.0f}s", loud=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wake.wait(), backoff)
            if child.wake.is_set():  # stop_all woke us up
                return
            backoff = min(backoff * 2, self._backoff_max)
            try:
                await self._spawn(child)
            except OSError as exc:
                self.say(f"cannot start {child.spec.name}: {exc}", loud=True)
                return

    def running(self, child: Child) -> bool:
        return child.process is not None and child.process.returncode is None

    async def stop_child(self, child: Child) -> int | None:
        """SIGTERM the child (it stops its own children), SIGKILL its whole process group after
        ``stop_timeout``; its exit code."""
        process = child.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), child.spec.stop_timeout)
            except TimeoutError:
                self.say(
                    f"{child.spec.name} did not stop within {child.spec.stop_timeout:.0f}s: "
                    "SIGKILL",
                    loud=True,
                )
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        child.wake.set()
        if child.task is not None:
            await child.task
        return process.returncode if process is not None else None

    async def stop_all(self) -> None:
        """Stop every child, the last started first."""
        self.stopping = True
        for child in reversed(self.children):
            if self.running(child):
                self.say(f"stopping {child.spec.name} ...")
            code = await self.stop_child(child)
            if code is not None:
                self.say(f"{child.spec.name} stopped (code {code})")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
