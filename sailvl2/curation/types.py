"""The types every curation stage works with (the shared design of issue 6).

An :class:`Item` is one training record travelling through a pipeline; each stage answers every item with a
:class:`Decision` (kept, or dropped with a reason, plus any score values). Stages come in two shapes:

* :class:`MapStage` - per record, stateless, run in parallel worker processes on shards of items
  (validation, judges, text checks, synthesis); ``setup()`` runs once per worker before the first shard.
  Its decision on an item may also carry new records made from it (``Decision.generated``, e.g. the QA
  records ``cap2qa`` writes from a caption); they join the stream right after that item.
* :class:`GlobalStage` - needs the whole dataset (dedup, balancing); runs in the driver over every surviving
  item in deterministic input order.

Image paths in ``Item.record["image"]`` (a path or a list of paths) are always file paths: readers write
images that arrive as bytes (WebDataset members, Parquet image columns) to files first. Relative paths
resolve against ``Item.root``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import CurationError

__all__ = ["CurationError", "Decision", "GlobalStage", "Item", "MapStage", "generated_id"]


@dataclass
class Item:
    """One record travelling through the pipeline.

    ``id`` is unique within a run (records without one get ``"<source-stem>:<index>"``); ``record`` is the
    JSON object in the training engine's format plus any extra fields; ``root`` the folder relative image
    paths resolve against; ``scores`` collects stage scores (e.g. ``{"vir": 4, "phash_distance": 3}``);
    ``features`` caches intermediate values (e.g. ``"sha256"``). Features are never written to the curated
    output; JSON-serialisable ones survive a resumed run, others are dropped, so a stage must recompute a
    feature it does not find.
    """

    id: str
    record: dict[str, Any]
    root: str
    scores: dict[str, float] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What one stage decided about one item. ``reason`` reads ``"<category>: <detail>"`` like the reasons of
    :mod:`sailvl2.data.records` (the category is what the report counts); it is None when kept.

    ``generated`` (map stages only) holds new records made from the item, JSON objects in the training
    format. Each becomes an item placed right after this one, whether this one is kept or dropped, with the
    id :func:`generated_id` ``(item id, stage, k)`` (any ``id`` field of the record is replaced) and the
    item's ``root`` (relative image paths resolve as the item's do). The stages after this one see them;
    this one does not.
    """

    id: str
    stage: str
    kept: bool
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    generated: tuple[dict[str, Any], ...] = ()


def generated_id(parent_id: str, stage: str, index: int) -> str:
    """The id of the ``index``-th record stage ``stage`` generated from item ``parent_id``:
    ``"<parent id>:<stage>.<index>"``. Stage names are unique within a pipeline and input ids are unique, so
    these are too (unless an input record already has such an id: the runner checks the output)."""
    return f"{parent_id}:{stage}.{index}"


@runtime_checkable
class MapStage(Protocol):
    """A per-record stage. ``process`` returns one Decision per input item, in the same order (a Decision may
    carry ``generated`` records)."""

    name: str

    def setup(self) -> None: ...

    def process(self, items: list[Item]) -> list[Decision]: ...


@runtime_checkable
class GlobalStage(Protocol):
    """A whole-dataset stage, run in the driver. ``process_all`` yields one Decision per item, in input
    order (it may read every item before yielding the first). It cannot add records: no ``generated``."""

    name: str

    def process_all(self, items: Iterable[Item]) -> Iterator[Decision]: ...
