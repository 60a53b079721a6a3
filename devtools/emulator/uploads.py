"""The body of ``POST /v1/files``: a multipart form whose file part is streamed straight into
the storage's tmp directory, in one pass.

Starlette's ``request.form()`` spools a file part into a temporary file (one thread-pool hop
per ~64 KiB chunk once it passes 1 MiB), which the emulator then copied into place: ~0.2 s of
the API's CPU per 50 MB upload, five times the client's, and the time a dispatcher waits for
its last window. Here the parser (python-multipart, as Starlette uses it) hands file bytes to a
buffer that is written in 1 MiB pieces from a worker thread, straight to the tmp file that
``FileStorage.commit`` later moves under its id. Nothing is held whole in memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

FLUSH_BYTES = 1 << 20
MAX_FIELDS = 16
MAX_FIELD_BYTES = 64 * 1024


class FormError(Exception):
    """The body is not a form the endpoint accepts (the message is safe to return)."""


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    file_field: str | None = None  # the name of the (single) file part
    filename: str | None = None
    tmp: Path | None = None  # the file part's bytes, to be committed or unlinked
    size: int = 0


@dataclass
class _Part:
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


async def read_upload_form(request: Request, tmp: Path, max_file_bytes: int) -> UploadForm:
    """Parse the form; the file part (at most one) goes to ``tmp``. On any error the partial
    file is removed before the error propagates."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        # (the SDK always sends multipart; an urlencoded form has no file, which the
        # endpoint reports as a missing parameter)
        form = await request.form(max_files=0, max_fields=MAX_FIELDS)
        return UploadForm(fields={k: v for k, v in form.items() if isinstance(v, str)})
    boundary = params.get(b"boundary")
    if not boundary:
        raise FormError("Missing boundary in multipart.")
    out = UploadForm()
    part = _Part()
    header_name = bytearray()
    header_value = bytearray()
    disposition = b""
    pending = bytearray()  # file bytes not written yet
    ended = False
    handle: IO[bytes] | None = None

    def on_part_begin() -> None:
        nonlocal part, disposition
        part = _Part()
        disposition = b""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        nonlocal disposition
        if bytes(header_name).lower() == b"content-disposition":
            disposition = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if name is None:
            raise FormError('The Content-Disposition header field "name" must be provided.')
        part.name = name.decode("utf-8", "replace")
        if b"filename" in options:
            if out.file_field is not None:
                raise FormError("Too many files. Maximum number of files is 1.")
            part.is_file = True
            out.file_field = part.name
            out.filename = options[b"filename"].decode("utf-8", "replace")
        elif len(out.fields) >= MAX_FIELDS:
            raise FormError(f"Too many fields. Maximum number of fields is {MAX_FIELDS}.")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.is_file:
            out.size += end - start
            if out.size > max_file_bytes:
                raise FormError("File is too large.")
            pending.extend(data[start:end])
        else:
            if len(part.data) + end - start > MAX_FIELD_BYTES:
                raise FormError("Form field too large.")
            part.data.extend(data[start:end])

    def on_part_end() -> None:
        if not part.is_file:
            out.fields[part.name] = part.data.decode("utf-8", "replace")

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": on_end,
        },
    )

    async def flush(final: bool) -> None:
        nonlocal handle, pending
        if not pending and not (final and out.file_field is not None):
            return
        if handle is None:
            handle = await asyncio.to_thread(tmp.open, "wb")
        data, pending = pending, bytearray()
        if data:
            await asyncio.to_thread(handle.write, data)

    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if len(pending) >= FLUSH_BYTES:
                await flush(final=False)
        parser.finalize()
        if not ended:  # (python-multipart accepts a body cut before its closing boundary)
            raise FormError("Invalid multipart data.")
        await flush(final=True)
    except BaseException as exc:
        if handle is not None:
            await asyncio.to_thread(handle.close)
        await asyncio.to_thread(tmp.unlink, True)
        if isinstance(exc, FormParserError):
            raise FormError("Invalid multipart data.") from exc
        raise
    if handle is not None:
        await asyncio.to_thread(handle.close)
        out.tmp = tmp
    return out
