"""Run the emulator: in a background thread (tests, benchmarks) or in the foreground (CLI).

``run_emulator_in_thread(config)`` binds the port first (port 0 = a free one), serves with
uvicorn in its own thread and event loop, and yields a ``RunningEmulator``: a ``str`` equal to
OpenAI's base URL (``http://host:port/v1``) that also carries ``.base_url``, ``.root_url``,
``.azure_endpoint`` and ``.api_version`` (for ``openai.AzureOpenAI``), ``.anthropic_base_url``
(the root, for ``anthropic.Anthropic(base_url=...)``), ``.api_key``,
``.data_dir``, ``.stats()``, ``.ended_at(batch_id)`` and ``.set_faults(**kw)``.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from batchpipe.devtools.emulator.app import create_app
from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.flavours import AZURE_API_VERSION

START_TIMEOUT_SECONDS = 15.0


class RunningEmulator(str):
    """The base URL of a running emulator, plus handles to inspect and steer it."""

    base_url: str
    root_url: str
    azure_endpoint: str
    anthropic_base_url: str
    api_version: str
    api_key: str
    config: EmulatorConfig
    data_dir: Path
    _http: httpx.Client

    def __new__(cls, base_url: str, config: EmulatorConfig, data_dir: Path) -> RunningEmulator:
        self = super().__new__(cls, base_url)
        self.base_url = base_url
        self.root_url = base_url.removesuffix("/v1")
        self.azure_endpoint = self.root_url  # AzureOpenAI adds /openai itself
        self.anthropic_base_url = self.root_url  # the SDK's paths carry /v1 themselves
        self.api_version = AZURE_API_VERSION
        self.api_key = config.api_key or "sk-emulator"
        self.config = config
        self.data_dir = data_dir
        self._http = httpx.Client(base_url=self.root_url, timeout=10)
        return self

    def close(self) -> None:
        self._http.close()

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        response = self._http.get("/_emulator/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def ended_at(self, batch_id: str) -> float | None:
        """``GET /_emulator/batches/{id}/ended``: when the batch ended (None: not yet)."""
        response = self._http.get(f"/_emulator/batches/{batch_id}/ended")
        response.raise_for_status()
        at = response.json()["ended_at"]
        return None if at is None else float(at)

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """``POST /_emulator/faults``; returns the fault config now in force."""
        response = self._http.post("/_emulator/faults", json=changes)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # signals belong to the main thread
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _MainServer(uvicorn.Server):
    """uvicorn for the CLI: SIGINT/SIGTERM shut down gracefully and the process exits 0
    (plain uvicorn re-raises the signal after shutting down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def make_server(config: EmulatorConfig) -> uvicorn.Server:
    uv_config = uvicorn.Config(
        create_app(config),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return _MainServer(uv_config)


@contextlib.contextmanager
def run_emulator_in_thread(config: EmulatorConfig | None = None) -> Iterator[RunningEmulator]:
    """Serve the emulator in a background thread until the ``with`` block ends."""
    config = (config or EmulatorConfig(port=0)).model_copy()
    owned_tmp: tempfile.TemporaryDirectory[str] | None = None
    if config.data_dir is None:
        owned_tmp = tempfile.TemporaryDirectory(prefix="batchpipe-emulator-")
        config.data_dir = Path(owned_tmp.name)
    sock = bind_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]
    uv_config = uvicorn.Config(
        create_app(config), log_level="warning", lifespan="on", timeout_graceful_shutdown=3
    )
    server = _ThreadServer(uv_config)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])  # uvloop when installed: ~1 ms per local request
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, name=f"emulator-{port}", daemon=True)
    thread.start()
    try:
        waited = 0.0
        while not server.started:
            if not thread.is_alive() or waited > START_TIMEOUT_SECONDS:
                raise RuntimeError(f"the emulator did not start: {errors or 'timeout'}")
            threading.Event().wait(0.01)
            waited += 0.01
        shown = f"[{host}]" if ":" in host else host
        running = RunningEmulator(f"http://{shown}:{port}/v1", config, config.data_dir)
        try:
            yield running
        finally:
            running.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        if owned_tmp is not None:
            owned_tmp.cleanup()
