"""The process plan of ``batchpipe dev``: which children, in which order, with which environment.

Pure: ``build_plan(options, environ)`` decides everything (commands, ports, demo settings,
URLs) from the options and the caller's environment, so it is unit-tested without starting
anything. The demo settings only fill in what the user's environment does not already set,
except the ones ``dev`` must own (the broker it starts, the emulator it points at).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from batchpipe.devtools.emulator.flavours import AZURE_API_VERSION

OpenAIMode = Literal["emulator", "real"]

# Demo-friendly windows: a request becomes a result within seconds, not hours.
DEMO_DEFAULTS: Final[Mapping[str, str]] = {
    "BATCHPIPE_BATCH_MAX_WAIT_SECONDS": "5",
    "BATCHPIPE_POLL_INTERVAL_SECONDS": "1",
    "BATCHPIPE_LOG_FORMAT": "console",
    "BATCHPIPE_LOG_LEVEL": "INFO",
}
EMULATOR_PROCESSING_SECONDS: Final = 2.0
EMULATOR_API_KEY: Final = "sk-batchpipe-dev-emulator"  # a dummy: the emulator checks none
# The emulator signs its batch webhooks with this and the poller verifies them with it (a
# fixed local secret, like the key above: base64 of "batchpipe-dev-emulator-webhooks!").
EMULATOR_WEBHOOK_SECRET: Final = "whsec_YmF0Y2hwaXBlLWRldi1lbXVsYXRvci13ZWJob29rcyE="  # noqa: S105
WEBHOOK_PATH: Final = "/webhooks/openai"
SERVICE_COMMANDS: Final = ("emulator", "ingest", "dispatcher", "poller")
# The providers' own settings that emulator mode replaces (the emulator serves them all): a
# real endpoint, key or token in the caller's environment never reaches the services.
PROVIDER_SETTINGS: Final = (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_WEBHOOK_SECRET",
)


class PlanError(ValueError):
    """The options cannot work (e.g. real OpenAI without a key); the message says why."""


# Runs ``batchpipe`` in a child when the console script is not beside the interpreter.
BOOT = "import sys; sys.argv[0] = 'batchpipe'; from batchpipe.services.cli import main; main()"


def default_launcher(python: str = sys.executable) -> tuple[str, ...]:
    """How a child runs ``batchpipe``: the console script of this venv, else ``python -c``."""
    script = Path(python).parent / "batchpipe"
    return (str(script),) if script.is_file() else (python, "-c", BOOT)


@dataclass(frozen=True)
class DevOptions:
    openai: OpenAIMode = "emulator"
    data_dir: Path = Path(".batchpipe")
    kafka_port: int = 9092
    ingest_port: int = 8000
    emulator_port: int = 8100
    poller_port: int = 8001
    dispatcher_port: int = 6066
    python: str = sys.executable
    launcher: tuple[str, ...] = field(default_factory=default_launcher)


@dataclass(frozen=True)
class ProcessSpec:
    """One child: ``argv`` run in ``cwd`` with ``env``; restarted with backoff if it dies."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    port: int | None = None  # waited for (TCP) before the next child starts
    restart: bool = True
    stop_timeout: float = 15.0
    command: str | None = None  # the ``batchpipe`` subcommand it runs, if any


@dataclass(frozen=True)
class DevPlan:
    processes: tuple[ProcessSpec, ...]
    env: Mapping[str, str]  # the settings every child gets (printed at start)
    shown_env: Mapping[str, str]  # the same, secrets masked
    urls: Mapping[str, str]
    data_dir: Path
    bootstrap: str


def _mask(name: str, value: str) -> str:
    secret = any(word in name for word in ("KEY", "PASSWORD", "SECRET", "TOKEN"))
    if not secret or not value:
        return value
    return value[:3] + "…(masked)"


def build_plan(options: DevOptions, environ: Mapping[str, str]) -> DevPlan:
    """Everything ``batchpipe dev`` will start, in start order (stopped in reverse)."""
    data_dir = options.data_dir.resolve()
    bootstrap = f"127.0.0.1:{options.kafka_port}"
    defaults = {
        **DEMO_DEFAULTS,
        # Faust's data dir and the JSONL files being uploaded: under the state dir too
        "BATCHPIPE_DISPATCHER_DATA_DIR": str(data_dir / "dispatcher" / "data"),
    }
    settings: dict[str, str] = {k: environ.get(k, v) for k, v in defaults.items()}
    settings.update(
        {
            "BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BATCHPIPE_HTTP_HOST": "127.0.0.1",
            "BATCHPIPE_POLLER_HTTP_PORT": str(options.poller_port),
            "BATCHPIPE_DISPATCHER_WEB_PORT": str(options.dispatcher_port),
        }
    )
    emulator_root = f"http://127.0.0.1:{options.emulator_port}"
    emulator_url = f"{emulator_root}/v1"
    if options.openai == "real":
        key = environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise PlanError(
                "--openai real needs OPENAI_API_KEY in the environment "
                "(export OPENAI_API_KEY=sk-...); without it use the default --openai emulator"
            )
        settings["OPENAI_API_KEY"] = key
        if environ.get("OPENAI_BASE_URL"):
            settings["OPENAI_BASE_URL"] = environ["OPENAI_BASE_URL"]
    else:
        # every provider at the one emulator: OpenAI under /v1, Azure OpenAI under /openai,
        # Anthropic under /v1/messages (its SDK takes the root and adds the /v1 paths)
        settings["OPENAI_API_KEY"] = EMULATOR_API_KEY
        settings["OPENAI_BASE_URL"] = emulator_url
        settings["AZURE_OPENAI_ENDPOINT"] = emulator_root
        settings["AZURE_OPENAI_API_KEY"] = EMULATOR_API_KEY
        settings["OPENAI_API_VERSION"] = environ.get("OPENAI_API_VERSION", AZURE_API_VERSION)
        settings["ANTHROPIC_BASE_URL"] = emulator_root
        settings["ANTHROPIC_API_KEY"] = EMULATOR_API_KEY
        # the emulator's batch webhooks reach the poller at once; polling stays the safety net
        settings["OPENAI_WEBHOOK_SECRET"] = EMULATOR_WEBHOOK_SECRET
        settings["BATCHPIPE_EMULATOR_WEBHOOK_SECRET"] = EMULATOR_WEBHOOK_SECRET

    replaced = PROVIDER_SETTINGS if options.openai == "emulator" else ("OPENAI_BASE_URL",)
    child_env = {k: v for k, v in environ.items() if k not in replaced}
    child_env.update(settings)
    child_env["PYTHONUNBUFFERED"] = "1"
    repo_root = str(Path(__file__).resolve().parents[2])
    paths = [repo_root, *filter(None, environ.get("PYTHONPATH", "").split(":"))]
    child_env["PYTHONPATH"] = ":".join(dict.fromkeys(paths))

    def cli(*args: str) -> tuple[str, ...]:
        return (*options.launcher, *args)

    def spec(name: str, argv: tuple[str, ...], **kw: object) -> ProcessSpec:
        command = argv[len(options.launcher)]
        return ProcessSpec(name, argv, child_env, data_dir / name, command=command, **kw)  # type: ignore[arg-type]

    kafka_dir = str(data_dir / "kafka" / "data")
    processes = [
        ProcessSpec(
            "kafka",
            (
                options.python,
                "-m",
                "batchpipe.devtools.dev.broker",
                str(options.kafka_port),
                kafka_dir,
            ),
            child_env,
            data_dir / "kafka",
            port=options.kafka_port,
            stop_timeout=60.0,
        )
    ]
    if options.openai == "emulator":
        processes.append(
            spec(
                "emulator",
                cli(
                    "emulator",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(options.emulator_port),
                    "--data-dir",
                    str(data_dir / "emulator" / "data"),
                    "--processing-seconds",
                    f"{EMULATOR_PROCESSING_SECONDS:g}",
                    "--webhook-url",
                    f"http://127.0.0.1:{options.poller_port}{WEBHOOK_PATH}",
                ),
                port=options.emulator_port,
            )
        )
    processes += [
        spec(
            "ingest",
            cli("ingest", "--host", "127.0.0.1", "--port", str(options.ingest_port)),
            port=options.ingest_port,
        ),
        spec("dispatcher", cli("dispatcher")),
        spec("poller", cli("poller")),
    ]
    urls = {
        "POST requests": f"http://127.0.0.1:{options.ingest_port}/requests",
        "ingest API docs": f"http://127.0.0.1:{options.ingest_port}/docs",
        "poller status page": f"http://127.0.0.1:{options.poller_port}/",
        "poller status": f"http://127.0.0.1:{options.poller_port}/status",
        "dispatcher health": f"http://127.0.0.1:{options.dispatcher_port}/healthz",
        "kafka bootstrap": bootstrap,
    }
    if options.openai == "emulator":
        urls["openai emulator"] = emulator_url
        urls["azure openai emulator"] = f"{emulator_root} (AZURE_OPENAI_ENDPOINT)"
        urls["anthropic emulator"] = f"{emulator_root} (ANTHROPIC_BASE_URL)"
        urls["emulator stats"] = f"http://127.0.0.1:{options.emulator_port}/_emulator/stats"
        urls["poller webhooks"] = f"http://127.0.0.1:{options.poller_port}{WEBHOOK_PATH}"
    else:
        urls["openai"] = settings.get("OPENAI_BASE_URL", "https://api.openai.com/v1 (SDK default)")
    shown = {k: _mask(k, v) for k, v in sorted(settings.items())}
    if options.openai == "emulator":
        shown["(emulator) --processing-seconds"] = f"{EMULATOR_PROCESSING_SECONDS:g}"
    return DevPlan(
        processes=tuple(processes),
        env=settings,
        shown_env=shown,
        urls=urls,
        data_dir=data_dir,
        bootstrap=bootstrap,
    )


def missing_commands(plan: DevPlan, available: Iterable[str]) -> list[str]:
    """The ``batchpipe`` subcommands the plan needs that this installation does not have."""
    have = set(available)
    return [p.command for p in plan.processes if p.command and p.command not in have]


def ports_of(plan: DevPlan) -> dict[str, int]:
    """The TCP ports the plan's children will listen on (checked free before start)."""
    ports = {p.name: p.port for p in plan.processes if p.port is not None}
    ports["poller"] = int(plan.env["BATCHPIPE_POLLER_HTTP_PORT"])
    ports["dispatcher"] = int(plan.env["BATCHPIPE_DISPATCHER_WEB_PORT"])
    return ports
