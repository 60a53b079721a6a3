"""What results cost: a price table per model, token totals per (API key, endpoint, model), USD.

Pure (no Kafka, no I/O but reading a price file). The poller counts what it publishes here
(``services/poller/costs.py``, metrics and ``/status``) and ``batchpipe costs`` counts the
results topic (``services/cli/costs.py``); both use ``Totals`` and ``report``.

- Prices: ``shared/prices.json`` ships with the package (with its ``as_of`` date and source
  notes); ``BATCHPIPE_PRICES_FILE`` names a file of the same format whose models replace or add
  to the shipped ones (an entry without ``aliases`` keeps the shipped entry's). Each model has
  a ``sync`` and a ``batch`` price, USD per million input, cached input and output tokens; a
  ``cached_input`` of null charges cached tokens at the input price (the provider lists no
  discount: an upper bound, never a guess below it).
- Model names match exactly, or one of an entry's ``aliases`` (the dated snapshots known to
  share its price). A date suffix is never stripped: snapshots of one model have had different
  prices (gpt-4o-2024-05-13 cost twice gpt-4o-2024-08-06), so an unlisted snapshot is "no
  price". A model with no price is still counted in tokens, with ``priced`` false and no USD.
- Money: cost is linear in tokens, so the totals keep tokens only and price them when reported
  (``Decimal``, rounded to 6 digits): a report does not depend on the order results came in.
- The saving is the synchronous price of the same tokens minus the batch price.

Invariant: input tokens include cached ones (``ResultUsage``), so the uncached input is
``input - cached``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Final

import orjson

from batchpipe.shared.settings import Settings, SettingsError

UNATTRIBUTED: Final = "unattributed"
UNKNOWN_ENDPOINT: Final = "unknown"
MILLION: Final = Decimal(1_000_000)
CENT_DIGITS: Final = Decimal("0.000001")

# (API key name or UNATTRIBUTED, endpoint or UNKNOWN_ENDPOINT, model)
CostKey = tuple[str, str, str]


class PriceFileError(ValueError):
    """A price file that cannot be read or does not have the table's format."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of one tier (``cached_input`` None: charged as input)."""

    input: Decimal
    cached_input: Decimal | None
    output: Decimal

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> Decimal:
        """The USD of these tokens (``input_tokens`` includes ``cached_tokens``)."""
        cached = min(cached_tokens, input_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return (
            (input_tokens - cached) * self.input
            + cached * cached_rate
            + output_tokens * self.output
        ) / MILLION


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model: str
    sync: Price
    batch: Price
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name and alias, with where they come from."""

    as_of: str
    models: Mapping[str, ModelPrice]
    sources: tuple[str, ...] = ()
    overrides: str | None = None  # the override file, if one was merged in
    _names: dict[str, ModelPrice] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for entry in self.models.values():
            for alias in entry.aliases:
                self._names.setdefault(alias, entry)
        for name, entry in self.models.items():  # an entry's own name wins over an alias
            self._names[name] = entry

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of ``model``: its own entry or the entry listing it as an alias."""
        return self._names.get(model)


def _decimal(value: Any, where: str) -> Decimal:
    if type(value) not in (int, float) or value < 0:
        raise PriceFileError(f"{where}: a price is a non-negative number, not {value!r}")
    return Decimal(str(value))


def _price(raw: Any, where: str) -> Price:
    if not isinstance(raw, Mapping):
        raise PriceFileError(f"{where}: expected an object with input, cached_input, output")
    cached = raw.get("cached_input")
    return Price(
        input=_decimal(raw.get("input"), f"{where}.input"),
        cached_input=None if cached is None else _decimal(cached, f"{where}.cached_input"),
        output=_decimal(raw.get("output", 0), f"{where}.output"),
    )


def parse_prices(raw: Any, origin: str = "prices") -> PriceTable:
    """A ``PriceTable`` from the JSON document of a price file; ``PriceFileError`` if bad."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("models"), Mapping):
        raise PriceFileError(f"{origin}: expected an object with a 'models' object")
    models: dict[str, ModelPrice] = {}
    for name, entry in raw["models"].items():
        where = f"{origin}: models.{name}"
        if not isinstance(entry, Mapping):
            raise PriceFileError(f"{where}: expected an object")
        aliases = entry.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise PriceFileError(f"{where}.aliases: expected a list of model names")
        models[str(name)] = ModelPrice(
            model=str(name),
            sync=_price(entry.get("sync"), f"{where}.sync"),
            batch=_price(entry.get("batch"), f"{where}.batch"),
            aliases=tuple(aliases),
        )
    sources = raw.get("sources") or []
    return PriceTable(
        as_of=str(raw.get("as_of", "")),
        models=models,
        sources=tuple(str(s) for s in sources) if isinstance(sources, list) else (str(sources),),
    )


def shipped_prices() -> PriceTable:
    """The price table shipped with batchpipe (``shared/prices.json``)."""
    data = resources.files("batchpipe.shared").joinpath("prices.json").read_bytes()
    return parse_prices(orjson.loads(data), "prices.json")


def load_prices(override: Path | None = None) -> PriceTable:
    """The shipped table, with the models of ``override`` (if given) replacing or added."""
    table = shipped_prices()
    if override is None:
        return table
    try:
        raw = orjson.loads(override.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise PriceFileError(f"{override}: {exc}") from None
    extra = parse_prices(raw, str(override))
    models = {**table.models, **extra.models}
    for name, entry in extra.models.items():  # no "aliases" given: keep the shipped ones
        shipped = table.models.get(name)
        if shipped is not None and "aliases" not in raw["models"][name]:
            models[name] = ModelPrice(name, entry.sync, entry.batch, shipped.aliases)
    return PriceTable(
        as_of=extra.as_of or table.as_of,
        models=models,
        sources=extra.sources + table.sources,
        overrides=str(override),
    )


def prices_of(settings: Settings) -> PriceTable:
    """The price table of these settings; a bad ``BATCHPIPE_PRICES_FILE`` is a
    ``SettingsError`` naming the variable."""
    try:
        return load_prices(settings.prices_file)
    except PriceFileError as exc:
        raise SettingsError(f"BATCHPIPE_PRICES_FILE: {exc}") from None


@dataclass(slots=True)
class Tally:
    """Counts of one (API key, endpoint, model): results, and tokens of those with usage."""

    results: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: Tally) -> None:
        self.results += other.results
        self.input_tokens += other.input_tokens
        self.cached_tokens += other.cached_tokens
        self.output_tokens += other.output_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.total_tokens += other.total_tokens


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


class Totals:
    """Token totals per ``CostKey``; add results with ``add`` or ``add_result``."""

    def __init__(self) -> None:
        self.tallies: dict[CostKey, Tally] = {}

    def add(
        self,
        *,
        api_key: str | None,
        endpoint: str | None,
        model: str,
        input_tokens: int = 0,
        cached_tokens: int = 0,
        output_tokens: int = 0,
        reasoning_tokens: int = 0,
        total_tokens: int = 0,
        results: int = 1,
    ) -> None:
        key = (api_key or UNATTRIBUTED, endpoint or UNKNOWN_ENDPOINT, model)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally()
        tally.results += results
        tally.input_tokens += input_tokens
        tally.cached_tokens += cached_tokens
        tally.output_tokens += output_tokens
        tally.reasoning_tokens += reasoning_tokens
        tally.total_tokens += total_tokens

    def add_result(self, result: Mapping[str, Any]) -> bool:
        """Count one ``ResultMessage`` in its JSON form; False (nothing counted) if it is not
        one (no model)."""
        model = result.get("model")
        if not isinstance(model, str) or not model:
            return False
        usage = result.get("usage")
        usage = usage if isinstance(usage, Mapping) else {}
        api_key, endpoint = result.get("api_key"), result.get("endpoint")
        self.add(
            api_key=api_key if isinstance(api_key, str) else None,
            endpoint=endpoint if isinstance(endpoint, str) else None,
            model=model,
            input_tokens=_count(usage.get("input_tokens")),
            cached_tokens=_count(usage.get("cached_tokens")),
            output_tokens=_count(usage.get("output_tokens")),
            reasoning_tokens=_count(usage.get("reasoning_tokens")),
            total_tokens=_count(usage.get("total_tokens")),
        )
        return True


def _usd(value: Decimal) -> float:
    return float(value.quantize(CENT_DIGITS))


def _priced_row(tally: Tally, price: ModelPrice | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "results": tally.results,
        "input_tokens": tally.input_tokens,
        "cached_tokens": tally.cached_tokens,
        "output_tokens": tally.output_tokens,
        "reasoning_tokens": tally.reasoning_tokens,
        "total_tokens": tally.total_tokens,
        "priced": price is not None,
        "cost_usd": None,
        "sync_cost_usd": None,
        "saving_usd": None,
    }
    if price is not None:
        tokens = (tally.input_tokens, tally.cached_tokens, tally.output_tokens)
        batch, sync = price.batch.cost(*tokens), price.sync.cost(*tokens)
        row.update(cost_usd=_usd(batch), sync_cost_usd=_usd(sync), saving_usd=_usd(sync - batch))
    return row


def _rollup(rows: Iterable[tuple[str, Tally, Decimal | None, Decimal | None]]) -> dict[str, Any]:
    """Sum of rows ``(label, tally, batch USD or None, sync USD or None)`` for one label."""
    tally = Tally()
    batch = sync = Decimal(0)
    unpriced_results = unpriced_tokens = 0
    for _, part, part_batch, part_sync in rows:
        tally.add(part)
        if part_batch is None or part_sync is None:
            unpriced_results += part.results
            unpriced_tokens += part.input_tokens + part.output_tokens
        else:
            batch += part_batch
            sync += part_sync
    return {
        "results": tally.results,
        "input_tokens": tally.input_tokens,
        "cached_tokens": tally.cached_tokens,
        "output_tokens": tally.output_tokens,
        "reasoning_tokens": tally.reasoning_tokens,
        "total_tokens": tally.total_tokens,
        "cost_usd": _usd(batch),
        "sync_cost_usd": _usd(sync),
        "saving_usd": _usd(sync - batch),
        "unpriced_results": unpriced_results,
        "unpriced_tokens": unpriced_tokens,
    }


def report(totals: Totals, prices: PriceTable) -> dict[str, Any]:
    """The totals priced: one row per (API key, endpoint, model), the sums per API key, per
    endpoint and per model, and the grand total. Roll-ups add the USD of priced rows only and
    say how many results and tokens had no price."""
    rows: list[dict[str, Any]] = []
    priced: list[tuple[CostKey, Tally, Decimal | None, Decimal | None]] = []
    for key in sorted(totals.tallies):
        tally = totals.tallies[key]
        price = prices.lookup(key[2])
        tokens = (tally.input_tokens, tally.cached_tokens, tally.output_tokens)
        batch = price.batch.cost(*tokens) if price else None
        sync = price.sync.cost(*tokens) if price else None
        priced.append((key, tally, batch, sync))
        api_key, endpoint, model = key
        rows.append(
            {
                "api_key": api_key,
                "endpoint": endpoint,
                "model": model,
                "price_model": price.model if price else None,
                **_priced_row(tally, price),
            }
        )

    def by(index: int, name: str) -> list[dict[str, Any]]:
        labels = sorted({key[index] for key, *_ in priced})
        return [
            {
                name: label,
                **_rollup((label, t, b, s) for key, t, b, s in priced if key[index] == label),
            }
            for label in labels
        ]

    unpriced_models = sorted({key[2] for key, _, batch, _ in priced if batch is None})
    return {
        "currency": "USD",
        "prices": {
            "as_of": prices.as_of,
            "overrides": prices.overrides,
            "sources": list(prices.sources),
        },
        "rows": rows,
        "by_api_key": by(0, "api_key"),
        "by_endpoint": by(1, "endpoint"),
        "by_model": by(2, "model"),
        "total": _rollup(("", t, b, s) for _, t, b, s in priced),
        "unpriced_models": unpriced_models,
    }
