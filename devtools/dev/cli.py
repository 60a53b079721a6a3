"""``batchpipe dev``: start Kafka, the topics, the emulator, ingest, dispatcher and poller.

The plan (``devtools.dev.plan``) says what to start; the supervisor
(``devtools.dev.supervisor``) runs it. This module checks the plan can work (commands
installed, ports free), starts the children in order (waiting for Kafka before creating the
topics, and for each HTTP port before the next child), prints the settings and URLs, and
stops everything in reverse order on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer

from batchpipe.devtools.dev.plan import (
    DevOptions,
    DevPlan,
    OpenAIMode,
    PlanError,
    build_plan,
    missing_commands,
    ports_of,
)
from batchpipe.devtools.dev.supervisor import Child, Supervisor

KAFKA_READY_TIMEOUT = 600.0  # the first start may still fetch the jars with Maven
SERVICE_READY_TIMEOUT = 60.0

SEED_CURL = (
    "curl -X POST http://127.0.0.1:{port}/requests -H 'Content-Type: application/json' \\\n"
    '  -d \'{{"data": [[{{"role": "user", "content": "How can I learn Python?"}}],\n'
    '  [{{"role": "user", "content": "Who is the first president of the United States?"}}]]}}\''
)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


async def wait_port(
    port: int, *, within: float, stop: asyncio.Event, child: Child | None = None
) -> bool:
    """True once 127.0.0.1:``port`` accepts connections; False on timeout, stop or exit."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not stop.is_set():
        if child is not None and child.exits:
            return False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.25)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def create_topics(plan: DevPlan, stop: asyncio.Event, within: float = 60.0) -> list[str]:
    """``ensure_topics`` against the dev broker, retried while it finishes starting."""
    from batchpipe.shared.kafka import ensure_topics
    from batchpipe.shared.settings import Settings

    settings = Settings(kafka_bootstrap_servers=plan.bootstrap)
    deadline = time.monotonic() + within
    while True:
        try:
            return await ensure_topics(settings, connect_timeout=10)
        except Exception:
            if time.monotonic() > deadline or stop.is_set():
                raise
            await asyncio.sleep(1)


async def run_dev(plan: DevPlan, sup: Supervisor, stop: asyncio.Event) -> int:
    """Start the plan's children in order, wait for ``stop``, stop them in reverse; exit code."""
    sup.say(f"state in {plan.data_dir}")
    sup.say("settings given to every service:")
    for name, value in plan.shown_env.items():
        sup.say(f"  {name}={value}")
    code = 0
    try:
        for spec in plan.processes:
            if stop.is_set():
                break
            child = await sup.start(spec)
            if spec.name == "kafka":
                assert spec.port is not None
                if not await wait_port(
                    spec.port, within=KAFKA_READY_TIMEOUT, stop=stop, child=child
                ):
                    if not stop.is_set():
                        sup.say("Kafka did not start; see the [kafka] lines above", loud=True)
                        code = 1
                    break
                created = await create_topics(plan, stop)
                sup.say(f"topics ready (created: {', '.join(created) or 'none, all existed'})")
            elif (
                spec.port is not None
                and not await wait_port(
                    spec.port, within=SERVICE_READY_TIMEOUT, stop=stop, child=child
                )
                and not stop.is_set()
            ):
                sup.say(f"{spec.name} is not listening on :{spec.port} yet; going on", loud=True)
        else:
            sup.say("all started. URLs:")
            for label, url in plan.urls.items():
                sup.say(f"  {label:<18} {url}")
            ingest = [p.port for p in plan.processes if p.name == "ingest"]
            if ingest:
                sup.say("try the original example, then `batchpipe results --follow`:")
                for line in SEED_CURL.format(port=ingest[0]).splitlines():
                    sup.say(f"  {line}")
            sup.say("Ctrl-C stops everything")
            await stop.wait()
    except Exception as exc:
        sup.say(f"{type(exc).__name__}: {exc}", loud=True)
        code = 1
    finally:
        sup.say("shutting down ...")
        await sup.stop_all()
        sup.say("all stopped")
    return code


class OpenAIChoice(enum.StrEnum):
    emulator = "emulator"
    real = "real"


def dev_command(available_commands: Callable[[], Iterable[str]]) -> Callable[..., None]:
    """The ``batchpipe dev`` command, for a CLI whose subcommands are ``available_commands()``.

    The CLI registering ``dev`` passes its own command table, so this module never imports the
    CLI: the dependency runs one way (the CLI -> devtools). The table is asked for only when
    ``dev`` runs, once every command is registered.
    """

    def dev(
        openai: Annotated[
            OpenAIChoice,
            typer.Option(
                help="emulator: the local emulator of every provider on :8100 (OpenAI and "
                "Azure OpenAI); real: api.openai.com with OPENAI_API_KEY (and OPENAI_BASE_URL "
                "if set), other providers as your environment sets them."
            ),
        ] = OpenAIChoice.emulator,
        data_dir: Annotated[
            Path, typer.Option(help="Where Kafka, the emulator and the services keep their state.")
        ] = Path(".batchpipe"),
        kafka_port: Annotated[int, typer.Option(help="Port of the local Kafka broker.")] = 9092,
        ingest_port: Annotated[int, typer.Option(help="Port of ingest (POST /requests).")] = 8000,
        emulator_port: Annotated[int, typer.Option(help="Port of the emulator.")] = 8100,
        poller_port: Annotated[int, typer.Option(help="Port of the poller (/status).")] = 8001,
        dispatcher_port: Annotated[int, typer.Option(help="Port of the dispatcher's web.")] = 6066,
    ) -> None:
        """Run the whole pipeline locally in one terminal, with demo-friendly settings.

        Starts the local Kafka (Java 17; jars via Maven or KAFKA_HOME), creates the topics, then
        the emulator (every provider's API), ingest, the dispatcher and the poller as child
        processes, each log line prefixed with its name. Windows close after 5 s
        (BATCHPIPE_BATCH_MAX_WAIT_SECONDS) and batches are polled every second
        (BATCHPIPE_POLL_INTERVAL_SECONDS) unless your environment sets them. Ctrl-C stops
        everything; state is kept in --data-dir.
        """
        mode: OpenAIMode = "real" if openai is OpenAIChoice.real else "emulator"
        options = DevOptions(
            openai=mode,
            data_dir=data_dir,
            kafka_port=kafka_port,
            ingest_port=ingest_port,
            emulator_port=emulator_port,
            poller_port=poller_port,
            dispatcher_port=dispatcher_port,
        )
        run_dev_command(options, available_commands())

    return dev


def run_dev_command(options: DevOptions, available_commands: Iterable[str]) -> None:
    """Check the plan of ``options`` can work here, run it until Ctrl-C/SIGTERM; exit with its
    code (``typer.Exit``; 2 for a plan that cannot work)."""
    try:
        plan = build_plan(options, os.environ)
    except PlanError as exc:
        typer.secho(f"batchpipe dev: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None
    missing = missing_commands(plan, available_commands)
    if missing:
        typer.secho(
            "batchpipe dev: this installation has no `batchpipe "
            + "`, `batchpipe ".join(missing)
            + "` command yet (its service is not built or not registered in "
            "services/cli/commands.py)",
            err=True,
            fg="red",
        )
        raise typer.Exit(2)
    busy = [f"{port} ({name})" for name, port in ports_of(plan).items() if port_in_use(port)]
    if busy:
        typer.secho(
            f"batchpipe dev: port(s) already in use: {', '.join(busy)} "
            "(another `batchpipe dev` or broker running?)",
            err=True,
            fg="red",
        )
        raise typer.Exit(2)
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    from batchpipe.shared.logs import configure_logging

    configure_logging("WARNING", "console", service="dev")  # our own clients stay quiet

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_dev(plan, Supervisor(write, color=color), stop)

    raise typer.Exit(asyncio.run(main()))
