"""``/_emulator/*``: the emulator's own routes (stats, runtime faults, health, when a batch
ended), shared by every provider's API and never authenticated (they exist only in the
emulator). ``stats`` also counts the API calls of this run (``calls``, e.g.
``openai.batches.retrieve``) and the webhook deliveries (``webhooks``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from batchpipe.devtools.emulator.errors import bad_request
from batchpipe.devtools.emulator.web import emulator_of, json_body, json_response


def emulator_router() -> APIRouter:
    router = APIRouter(prefix="/_emulator")

    @router.get("/stats")
    async def stats(request: Request) -> Response:
        emulator = emulator_of(request)
        result = await emulator.store.stats()
        result["faults_injected"] = dict(emulator.faults.counts)
        result["active_batches"] = emulator.lifecycle.active_count
        result["calls"] = dict(sorted(emulator.calls.items()))
        result["webhooks"] = emulator.webhooks.stats()
        return json_response(result)

    @router.get("/batches/{batch_id}/ended")
    async def ended(request: Request, batch_id: str) -> Response:
        """When the batch ended, to the microsecond (this run of the emulator only)."""
        at = emulator_of(request).lifecycle.ended_at.get(batch_id)
        return json_response({"batch_id": batch_id, "ended_at": at})

    @router.get("/faults")
    async def get_faults(request: Request) -> Response:
        return json_response(emulator_of(request).config.faults())

    @router.post("/faults")
    async def set_faults(request: Request) -> Response:
        emulator = emulator_of(request)
        changes = await json_body(request)
        try:
            emulator.config.update_faults(changes)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        return json_response(emulator.config.faults())

    @router.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    return router
