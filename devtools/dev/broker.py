"""The Kafka child of ``batchpipe dev``: ``python -m batchpipe.devtools.dev.broker PORT DATA_DIR``.

Runs ``devtools.local_kafka.LocalKafka`` in the foreground with its output on stdout (relayed by
the supervisor). On SIGTERM/SIGINT it forwards SIGTERM to the JVM and exits once the broker
has shut down cleanly (exit 0), so ``batchpipe dev`` never has to kill a flushing broker. The
JVM gets SIGKILL from the kernel if this process dies without stopping it.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from batchpipe.devtools.local_kafka import KAFKA_VERSION, KafkaSetupError, LocalKafka, kafka_libs


def main(argv: list[str]) -> int:
    port, data_dir = int(argv[0]), Path(argv[1])
    started = time.monotonic()
    # The JVM dies with this process even if it is SIGKILLed (the supervisor's own death sends
    # it SIGKILL): no broker outlives ``batchpipe dev``.
    broker = LocalKafka(data_dir=data_dir, port=port, parent_death_signal=signal.SIGKILL)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if broker.process is not None:
            broker.process.send_signal(signal.SIGTERM)  # never wait() in a signal handler

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        broker.start(kafka_libs(log=lambda msg: print(msg, flush=True)))
        broker.wait_ready(timeout=120)
    except KafkaSetupError as exc:
        print(f"cannot start Kafka: {exc}", flush=True)
        broker.stop()
        return 1
    print(
        f"Kafka {KAFKA_VERSION} ready on {broker.bootstrap} in {time.monotonic() - started:.1f}s "
        f"(data: {data_dir})",
        flush=True,
    )
    assert broker.process is not None
    code = broker.process.wait()
    clean = code in (0, 128 + signal.SIGTERM, -signal.SIGTERM)
    print(
        f"Kafka exited (code {code}{', clean shutdown' if clean and stopping else ''})", flush=True
    )
    return 0 if clean and stopping else code or 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
