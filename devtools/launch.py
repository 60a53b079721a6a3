"""``python -m batchpipe.devtools.launch PARENT_PID SIGNAL PROGRAM [ARG ...]``: exec PROGRAM so
that the kernel sends it SIGNAL (a name: KILL, TERM) when its parent dies.

A supervisor that is itself killed with SIGKILL cannot stop its children, and orphans keep
their ports and the broker's data directory. On Linux the launcher sets
``prctl(PR_SET_PDEATHSIG)`` in the child itself and then execs PROGRAM (the setting survives
``execve``), instead of ``preexec_fn``, which is unsafe in a process running threads (asyncio's
resolver, Kafka clients). Invariants:

- exec keeps the pid: the parent's process handle is PROGRAM's own pid;
- the kernel sends the signal when the *thread* that forked the launcher ends, so parents spawn
  from a thread that lives as long as they do (the main thread, the asyncio loop's thread);
- a parent gone before the setting took effect is noticed (``getppid`` differs from PARENT_PID)
  and PROGRAM is not run (exit code 128 + SIGNAL, as if the signal had come).

Elsewhere than Linux ``command`` returns the argv unchanged: no launcher, no death signal.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
SUPPORTED = sys.platform.startswith("linux")


def set_parent_death_signal(sig: signal.Signals) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def command(
    argv: Sequence[str],
    sig: signal.Signals = signal.SIGKILL,
    *,
    python: str = sys.executable,
) -> tuple[str, ...]:
    """``argv`` run through the launcher, so that it gets ``sig`` when this process dies."""
    if not SUPPORTED:
        return tuple(argv)
    return (python, "-m", __name__, str(os.getpid()), sig.name.removeprefix("SIG"), *argv)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3:
        print(f"usage: python -m {__name__} PARENT_PID SIGNAL PROGRAM [ARG ...]", file=sys.stderr)
        return 2
    parent, sig, program = int(argv[0]), signal.Signals[f"SIG{argv[1]}"], list(argv[2:])
    set_parent_death_signal(sig)
    if os.getppid() != parent:
        return 128 + sig
    os.execvp(program[0], program)  # noqa: S606 - the caller's own command line


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
