"""After a rebalance: settle every unfinished dispatch of the newly assigned partitions.

A worker that died mid-dispatch left a ledger entry in ``planned``, ``uploaded`` or
``created``. Before its partitions are consumed again, the new owner asks the provider for the
batches carrying those dispatch ids (``find_batches``, by metadata; by batch id when the entry
has one): a batch that exists has its record re-published and the entry marked ``published``
(so its requests are skipped on replay); a dispatch with no batch is marked ``abandoned`` (its
requests are windowed again). Reconciliation never creates a batch: that is how a crash at any
step neither loses a request nor submits one twice.
"""

from __future__ import annotations

from collections.abc import Iterable

from batchpipe.services.dispatcher.dispatch import DispatchSteps
from batchpipe.services.dispatcher.kafka_writes import KafkaWrites
from batchpipe.services.dispatcher.ledger import LedgerEntry, LedgerState
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.services.dispatcher.records import TP
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.base import Pending, Submission
from batchpipe.shared.providers.registry import Providers

log = get_logger(__name__)


async def reconcile(
    state: LedgerState,
    tps: Iterable[TP],
    *,
    providers: Providers,
    steps: DispatchSteps,
    writes: KafkaWrites,
    metrics: Metrics,
    only: set[str] | None = None,
) -> dict[str, str]:
    """Resolve the unfinished entries covering ``tps``: dispatch id -> ``republished``,
    ``abandoned`` or ``in_doubt`` (the provider cannot tell yet whether a batch it is still
    running is this dispatch's: the entry stays unfinished, its requests stay covered, and
    the next reconciliation asks again). ``only``: just these dispatches (the re-check of
    those in doubt while consuming: any other unfinished entry is then in flight here)."""
    pending = [e for e in state.unfinished(tps) if only is None or e.dispatch_id in only]
    outcome: dict[str, str] = {}
    if not pending:
        return outcome
    by_provider: dict[str, list[LedgerEntry]] = {}
    for entry in pending:
        by_provider.setdefault(entry.provider, []).append(entry)
    found: dict[str, Submission | Pending] = {}
    for name, entries in sorted(by_provider.items()):
        found |= await providers.get(name).find(
            [e.dispatch_id for e in entries],
            not_before=min(e.planned_at for e in entries),
            staged={e.dispatch_id: e.file_id for e in entries if e.file_id},
            counts={e.dispatch_id: e.request_count for e in entries},
        )
    for entry in pending:
        batch = found.get(entry.dispatch_id)
        if batch is None and entry.batch_id is not None:
            batch = await providers.get(entry.provider).find_by_id(entry.batch_id)
        if isinstance(batch, Pending):
            outcome[entry.dispatch_id] = "in_doubt"
        elif batch is None:
            await steps.abandon(entry)
            outcome[entry.dispatch_id] = "abandoned"
        else:
            created = entry.with_state(
                "created",
                batch_id=batch.batch_id,
                file_id=entry.file_id or batch.input_file_id,
            )
            await writes.batch_record(created, submitted_at=batch.created_at)
            await writes.ledger_entry(created.with_state("published"))
            outcome[entry.dispatch_id] = "republished"
        metrics.reconciled.labels(outcome[entry.dispatch_id]).inc()
        log.info(
            "ledger.reconciled",
            dispatch_id=entry.dispatch_id,
            state=entry.state,
            outcome=outcome[entry.dispatch_id],
            provider=entry.provider,
            batch_id=batch.batch_id if batch is not None else None,
        )
    return outcome
