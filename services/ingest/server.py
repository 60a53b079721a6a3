"""The HTTP protocol ingest serves with: uvicorn's httptools protocol, with a deadline on headers.

Reason: uvicorn bounds the idle time between two requests of a keep-alive connection
(``timeout_keep_alive``) but not the time a client takes to open a connection and send a
request's headers, so a client that connects and sends nothing, or sends its headers a byte at
a time, holds a connection (a file descriptor, a slot of ``limit_concurrency``) for as long as
it likes; enough of them and the service stops answering anyone. ``GuardedHttpToolsProtocol``
arms a timer when a connection opens and when a request begins, and cancels it once the
request's headers are complete; if it fires first, the client gets ``408 Request Timeout`` and
the connection is closed. The body has its own deadline, in the app
(``BATCHPIPE_INGEST_BODY_TIMEOUT_SECONDS``), where the response is a JSON refusal like every
other.

Invariant: a request whose headers arrived in time is never touched by the timer (it is
cancelled before the app sees the request), so the guard cannot cut a request in progress.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from batchpipe.shared.logs import get_logger

log = get_logger(__name__)

PROTOCOL: Final = "batchpipe.services.ingest.server:GuardedHttpToolsProtocol"
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 28\r\n"
    b"connection: close\r\n\r\n"
    b"request headers not received"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a deadline on each request's headers (module docstring)."""

    # set per process from the settings (``configure``) before the server starts
    header_timeout: ClassVar[float] = 10.0
    header_timeouts: ClassVar[int] = 0  # connections closed by the guard in this process

    _header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def configure(cls, header_timeout: float) -> None:
        cls.header_timeout = header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request in progress (pipelined headers): never cut
        type(self).header_timeouts += 1
        log.info("ingest.header_timeout", timeout_seconds=self.header_timeout)
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def server_options(settings: Any) -> dict[str, Any]:
    """The uvicorn options every ingest process runs with (one process or ``--workers``)."""
    return {
        "http": PROTOCOL,
        "limit_concurrency": settings.ingest_max_connections,
        "timeout_keep_alive": settings.ingest_keep_alive_seconds,
        "backlog": 4096,
    }
