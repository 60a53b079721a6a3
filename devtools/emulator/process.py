"""Line processing: the output line of each request and the streaming pass that writes the
output and error files.

Pure apart from ``run_pass``, which streams the input file once and writes the output and
error files in bounded memory (lines are shuffled inside windows of ``SHUFFLE_WINDOW`` lines,
since OpenAI guarantees no order). Every choice (which lines finished, which failed) is a hash
of the seed, the batch sequence number and the custom_id; the response bodies come from
``endpoints``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from batchpipe.devtools.emulator.determinism import digest, hex_id, pick, unit
from batchpipe.devtools.emulator.endpoints import (
    HANDLERS,
    BadRequestError,
    LineContext,
    Usage,
    generic,
)

SHUFFLE_WINDOW = 1000


FAILURE_BODIES: dict[int, dict[str, Any]] = {
    429: {
        "message": "Rate limit reached for requests (emulated).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    },
    500: {
        "message": "The server had an error while processing your request (emulated).",
        "type": "server_error",
        "param": None,
        "code": None,
    },
    400: {
        "message": "Invalid request (emulated failure).",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    },
}


def respond(request: dict[str, Any], ctx: LineContext) -> tuple[dict[str, Any], bool, Usage]:
    """The output line for one validated request line: (line, succeeded, usage)."""
    custom_id = str(request["custom_id"])
    line_id = f"batch_req_{hex_id(ctx.seed, ctx.batch_seq, custom_id, 'line', length=32)}"
    request_id = f"req_{hex_id(ctx.seed, ctx.batch_seq, custom_id, 'request', length=32)}"
    status = 200
    usage = Usage()
    body: Any
    if ctx.failure_rate > 0 and unit(ctx.seed, "fail", ctx.batch_seq, custom_id) < ctx.failure_rate:
        status = pick(ctx.failure_statuses, ctx.seed, "status", ctx.batch_seq, custom_id)
        body = {"error": dict(FAILURE_BODIES[status])}
    else:
        handler = HANDLERS.get(ctx.endpoint, generic)
        try:
            body, usage = handler(request["body"], ctx, custom_id)
        except BadRequestError as exc:
            status = 400
            body = {
                "error": {
                    "message": str(exc),
                    "type": "invalid_request_error",
                    "param": exc.param,
                    "code": None,
                }
            }
    line = {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }
    return line, status < 300, usage


def expired_line(custom_id: str, ctx: LineContext) -> dict[str, Any]:
    return {
        "id": f"batch_req_{hex_id(ctx.seed, ctx.batch_seq, custom_id, 'line', length=32)}",
        "custom_id": custom_id,
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }


def finish_fraction(ctx: LineContext, custom_id: str) -> float:
    """When (as a fraction of the processing time) this line finishes."""
    return unit(ctx.seed, "finish", ctx.batch_seq, custom_id)


@dataclass
class PassResult:
    completed: int = 0
    failed: int = 0
    unfinished: int = 0
    usage: Usage = field(default_factory=Usage)
    succeeded_custom_ids: list[str] = field(default_factory=list)
    output_lines: int = 0
    error_lines: int = 0


class ShuffledWriter:
    """Writes lines in a seeded order, shuffling within windows (bounded memory)."""

    def __init__(self, handle: IO[bytes], rng: random.Random) -> None:
        self.handle = handle
        self.rng = rng
        self.buffer: list[bytes] = []
        self.count = 0

    def write(self, line: dict[str, Any]) -> None:
        self.buffer.append(orjson.dumps(line) + b"\n")
        self.count += 1
        if len(self.buffer) >= SHUFFLE_WINDOW:
            self.flush()

    def flush(self) -> None:
        self.rng.shuffle(self.buffer)
        self.handle.writelines(self.buffer)
        self.buffer.clear()


def process_lines(
    lines: Iterable[bytes],
    ctx: LineContext,
    out: IO[bytes],
    err: IO[bytes],
    done_before: float,
    expire_rest: bool,
) -> PassResult:
    """Answer every line that finished before ``done_before`` (a fraction of the processing
    time; >= 1 means all); the rest get a ``batch_expired`` error line if ``expire_rest``."""
    result = PassResult()
    out_writer = ShuffledWriter(out, random.Random(digest(ctx.seed, ctx.batch_seq, "out")))
    err_writer = ShuffledWriter(err, random.Random(digest(ctx.seed, ctx.batch_seq, "err")))
    for raw in lines:
        if not raw.strip():
            continue
        request = orjson.loads(raw)
        custom_id = str(request["custom_id"])
        if done_before < 1.0 and finish_fraction(ctx, custom_id) >= done_before:
            result.unfinished += 1
            if expire_rest:
                err_writer.write(expired_line(custom_id, ctx))
            continue
        line, ok, usage = respond(request, ctx)
        if ok:
            result.completed += 1
            result.usage.add(usage)
            result.succeeded_custom_ids.append(custom_id)
            out_writer.write(line)
        else:
            result.failed += 1
            err_writer.write(line)
    out_writer.flush()
    err_writer.flush()
    result.output_lines = out_writer.count
    result.error_lines = err_writer.count
    return result


def run_pass(
    input_path: Path,
    out_path: Path,
    err_path: Path,
    ctx: LineContext,
    done_before: float,
    expire_rest: bool,
) -> PassResult:
    """Stream ``input_path`` once, writing ``out_path`` and ``err_path`` (run it in a thread)."""
    with (
        input_path.open("rb", buffering=1 << 20) as source,
        out_path.open("wb", buffering=1 << 20) as out,
        err_path.open("wb", buffering=1 << 20) as err,
    ):
        return process_lines(source, ctx, out, err, done_before, expire_rest)
