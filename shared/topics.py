"""Every Kafka topic batchpipe uses, with the settings it is created with: the one registry.

``topic_specs`` lists all eight topics in pipeline order. ``ensure_topics`` (``shared.kafka``)
creates them from here, the services ensure the topics they own from here, and
``batchpipe topics`` creates and lists them from here, so a topic has the same partitions and
configs whoever created it first.

- ``requests``, ``batches``, ``results``, ``dead-letters``: the pipeline's public topics
  (contracts in ``shared.contracts``), ``BATCHPIPE_TOPIC_PARTITIONS`` partitions each.
  ``requests`` and ``dead-letters`` carry whole request lines (a dead letter wraps one), so
  they accept messages up to ``MAX_REQUEST_SIZE`` plus headroom for the record batch.
- ``results``: ``max.message.bytes`` is ``BATCHPIPE_RESULTS_MAX_MESSAGE_BYTES``, the limit
  the poller sizes every result against (``services.poller.sizing``).
- the dispatch ledger (``services.dispatcher.ledger``): compacted, ONE partition, so reading
  it back is one ordered log; an entry carries a window's coverage ranges, hence its larger
  message limit.
- the poller state (``services.poller.state_topic``): compacted, one progress record per
  batch, with as many partitions as ``batches``, so each batches partition has a state
  partition of its own.
- the batch inputs (``shared.providers.input_store``): the original lines of batches whose
  provider keeps no input file (Anthropic), kept 31 days.
- the batch nudges (``services.poller.webhooks``): one small record per verified webhook
  event, keyed by the batch id, read by every poller (whichever instance owns the batch
  retrieves it at once), kept a day.

Every topic is created with ``BATCHPIPE_TOPIC_REPLICATION_FACTOR`` replicas and, when
``BATCHPIPE_TOPIC_MIN_INSYNC_REPLICAS`` is set, that ``min.insync.replicas`` (3 and 2 on a
3-broker cluster, as ``batchpipe kafka --brokers 3`` prints).

Only missing topics are created: an existing topic's partitions and configs are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from batchpipe.shared.settings import Settings

# Largest message batchpipe produces (a request line can carry a long prompt or images);
# producers' max request size and consumers' fetch sizes are set from it as well.
MAX_REQUEST_SIZE: Final = 4 * 1024 * 1024
# max.message.bytes of the topics that carry request lines.
REQUEST_TOPIC_MAX_MESSAGE_BYTES: Final = MAX_REQUEST_SIZE + 1024 * 1024
# max.message.bytes of the dispatch ledger (and its producer's max request size).
LEDGER_MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024

COMPACT: Final = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


def ledger_topic(settings: Settings) -> str:
    """The dispatch ledger's name: it belongs to the requests topic it deduplicates."""
    return settings.dispatcher_ledger_topic or f"{settings.requests_topic}.dispatch-ledger"


def _durability(settings: Settings) -> dict[str, str]:
    """Configs every topic gets from the replication settings (``min.insync.replicas``)."""
    isr = settings.topic_min_insync_replicas
    return {} if isr is None else {"min.insync.replicas": str(isr)}


def _spec(settings: Settings, name: str, config: Mapping[str, str] | None = None) -> TopicSpec:
    return TopicSpec(
        name,
        settings.topic_partitions,
        settings.topic_replication_factor,
        {**(config or {}), **_durability(settings)},
    )


def dispatcher_ledger_spec(settings: Settings) -> TopicSpec:
    return TopicSpec(
        ledger_topic(settings),
        1,
        settings.topic_replication_factor,
        {**COMPACT, "max.message.bytes": str(LEDGER_MAX_MESSAGE_BYTES), **_durability(settings)},
    )


# How long a staged batch input is kept: a batch lives at most a day, its results a month.
BATCH_INPUTS_RETENTION_MS: Final = 31 * 24 * 3600 * 1000


def batch_inputs_topic(settings: Settings) -> str:
    """Where providers without input files keep a batch's original lines
    (``shared/providers/input_store.py``)."""
    return f"{settings.requests_topic}.batch-inputs"


def batch_inputs_spec(settings: Settings) -> TopicSpec:
    """Created with the pipeline's topics (an administrator creates them on a secured
    cluster) and ensured again by the first provider that stages a window there."""
    return _spec(
        settings,
        batch_inputs_topic(settings),
        {
            "retention.ms": str(BATCH_INPUTS_RETENTION_MS),
            "max.message.bytes": str(REQUEST_TOPIC_MAX_MESSAGE_BYTES),
        },
    )


# How long a webhook nudge is kept: it matters for minutes (a poller that (re)starts reads the
# recent ones back); a day leaves room for a long outage of the pollers.
BATCH_NUDGES_RETENTION_MS: Final = 24 * 3600 * 1000


def batch_nudges_topic(settings: Settings) -> str:
    """Where a poller that received a batch's webhook tells the batch's owner to retrieve it
    now (``services/poller/webhooks.py``)."""
    return f"{settings.batches_topic}.nudges"


def batch_nudges_spec(settings: Settings) -> TopicSpec:
    """As many partitions as ``batches`` by default (keyed by the batch id as ``batches`` is);
    ensured by the poller when its webhook endpoint is on."""
    return _spec(
        settings, batch_nudges_topic(settings), {"retention.ms": str(BATCH_NUDGES_RETENTION_MS)}
    )


def poller_state_spec(settings: Settings) -> TopicSpec:
    return _spec(settings, settings.poller_state_topic, COMPACT)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """All of batchpipe's topics as the settings describe them, in pipeline order."""
    big = {"max.message.bytes": str(REQUEST_TOPIC_MAX_MESSAGE_BYTES)}
    return [
        _spec(settings, settings.requests_topic, big),
        dispatcher_ledger_spec(settings),
        _spec(settings, settings.batches_topic),
        poller_state_spec(settings),
        _spec(
            settings,
            settings.results_topic,
            {"max.message.bytes": str(settings.results_max_message_bytes)},
        ),
        _spec(settings, settings.dead_letters_topic, big),
        batch_inputs_spec(settings),
        batch_nudges_spec(settings),
    ]


def topic_names(settings: Settings) -> list[str]:
    return [spec.name for spec in topic_specs(settings)]
