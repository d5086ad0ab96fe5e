"""MixtureStream: the deterministic, resumable, self-checking iterator over a data mixture.

How items are drawn (one scheme per mixture, see :mod:`sailvl2.data.mixture`):

* **repeat** (the default): epoch ``e`` takes ``floor(r) * n + round(frac(r) * n)`` items from a dataset of
  ``n`` items with repeat ``r``: ``floor(r)`` full passes, then one pass over a subset of ``round(frac(r) * n)``
  items chosen by a generator seeded with ``(seed, dataset, e)``. The datasets' items are interleaved in a
  uniformly random order: each step draws a dataset with probability proportional to the items it has left
  this epoch, so the counts per epoch are exact. ``n`` is counted once, when the stream starts.
* **weight**: each step draws a dataset with probability ``weight / sum(weights)``; each dataset loops over
  its own passes forever. With ``epochs=N`` the stream ends when a dataset would begin its pass N + 1.

Inside one pass a dataset is read in file order (shuffle data files offline, as usual for streamed data), or
through a shuffle buffer of ``shuffle_buffer`` items seeded per pass. Each item is validated
(:func:`validate_record`); bad ones are counted per dataset and reason and skipped, and the run stops with
``DataError`` once the skipped fraction exceeds ``error_budget``.

**Exact resume**: ``state_dict()`` holds, per dataset, its pass and how many items that pass has given, plus
the interleaving generator's state and the stats. Restoring reopens every pass and skips forward, which
re-reads the file up to the cursor: cheap for JSONL lines, Parquet row groups and tar headers, but a full
replay of the pass when a shuffle buffer is used.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .errors import DataError
from .readers import count_items, iter_records
from .records import Record, Skipped, reason_category, validate_record

if TYPE_CHECKING:  # runtime import would be circular: mixture re-exports this module's class
    from .mixture import MixtureConfig

__all__ = ["MixtureItem", "MixtureStream"]

_LOG = logging.getLogger("sailvl2.data")
_WARN_FIRST = 5  # skips logged at WARNING per dataset; later ones at DEBUG (all are counted in stats)
_STATE_VERSION = 1
_SELECT, _SHUFFLE = 0, 1  # purposes mixed into per-pass seeds, so the two generators never coincide


class MixtureItem(NamedTuple):
    record: Record
    dataset: str
    max_num: int | None


class MixtureStream:
    """Iterator of :class:`MixtureItem` ``(record, dataset_name, max_num)`` over a :class:`MixtureConfig`.

    ``seed`` fixes the whole sequence. ``epochs=None`` streams forever. ``error_budget`` is the largest
    tolerated fraction of skipped items, checked once ``min_seen`` items were drawn (``0``: the first bad
    item raises). ``check_images`` decodes every image while validating (costly; missing files are always
    caught). ``shuffle_buffer`` > 1 shuffles within each pass through a buffer of that many records.
    """

    def __init__(self, config: MixtureConfig, seed: int = 0, *, error_budget: float = 0.01, min_seen: int = 100,
                 check_images: bool = False, epochs: int | None = None, shuffle_buffer: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0 <= error_budget <= 1:
            raise DataError(f"error_budget must be a fraction in [0, 1], got {error_budget}")
        if min_seen < 0 or (epochs is not None and epochs < 1) or shuffle_buffer < 0:
            raise DataError(f"need min_seen >= 0, epochs >= 1 (or None), shuffle_buffer >= 0; got "
                            f"{min_seen}, {epochs}, {shuffle_buffer}")
        self.config, self.seed, self.error_budget, self.min_seen = config, seed, float(error_budget), min_seen
        self.check_images, self.epochs, self.shuffle_buffer = check_images, epochs, shuffle_buffer
        self._names = [d.name for d in config.datasets]
        self._rates = config.rates()
        self._mode = config.mode
        self._rng = np.random.default_rng(seed)
        self._epoch = 0  # repeat mode: the stream's epoch
        self._finished = False
        self._counts: list[int] | None = None  # repeat mode: items per dataset, counted on first use
        self._remaining: list[int] | None = None  # repeat mode: draws left per dataset this epoch
        # Per dataset: [epoch (weight mode: its own passes), pass within the epoch (repeat mode), taken].
        self._cursors = [[0, 0, 0] for _ in self._names]
        self._live: list[Iterator[Record | Skipped] | None] = [None] * len(self._names)
        self._yielded = [0] * len(self._names)
        self._skipped: list[dict[str, int]] = [{} for _ in self._names]

    # ----------------------------------------------------------------------------------- iteration

    def __iter__(self) -> "MixtureStream":
        return self

    def __next__(self) -> MixtureItem:
        while not self._finished:
            index = self._choose()
            if index is None:
                continue
            item = self._take(index)
            if item is None:
                continue
            if isinstance(item, Skipped):
                reason, where = item.reason, item.source
            else:
                reason, where = validate_record(item, self.check_images), item.source
            if reason is None:
                self._yielded[index] += 1
            else:
                self._count_skip(index, reason, where)
            self._check_budget(reason, where)
            if reason is None:
                assert isinstance(item, Record)
                return MixtureItem(item, self._names[index], self.config.datasets[index].max_num)
        raise StopIteration

    def _choose(self) -> int | None:
        """The next dataset to draw from (None: the epoch ended or the stream finished; ask again)."""
        if self._mode == "weight":
            total = sum(self._rates)
            point = float(self._rng.random()) * total
            for index, weight in enumerate(self._rates):
                if point < weight:
                    return index
                point -= weight
            return max(i for i, w in enumerate(self._rates) if w > 0)  # float round-off at the top end
        if self._remaining is None:
            self._start_epoch()
        assert self._remaining is not None
        left = sum(self._remaining)
        if left == 0:
            self._epoch += 1
            if self.epochs is not None and self._epoch >= self.epochs:
                self._finished = True
            else:
                self._start_epoch()
            return None
        point = int(self._rng.integers(left))
        for index, count in enumerate(self._remaining):
            if point < count:
                self._remaining[index] -= 1
                return index
            point -= count
        raise AssertionError("unreachable: point < sum(remaining)")

    def _start_epoch(self) -> None:
        counts = self._item_counts()
        self._remaining = [math.floor(rate) * n + self._partial_size(i) for i, (rate, n)
                           in enumerate(zip(self._rates, counts))]
        if sum(self._remaining) == 0:
            raise DataError(f"the mixture has no items: datasets {dict(zip(self._names, counts))}")
        for index in range(len(self._names)):
            self._cursors[index] = [self._epoch, 0, 0]
            self._live[index] = None

    def _take(self, index: int) -> Record | Skipped | None:
        """The next item of dataset ``index`` (None: weight mode reached ``epochs`` and finished)."""
        cursor = self._cursors[index]
        if self._live[index] is None:
            self._live[index] = self._open(index)
        item = next(self._live[index], None)  # type: ignore[arg-type]
        if self._mode == "weight" and item is None:
            if cursor[2] == 0:
                raise DataError(f"dataset {self._names[index]!r} has no items")
            cursor[0], cursor[2] = cursor[0] + 1, 0
            if self.epochs is not None and cursor[0] >= self.epochs:
                self._finished = True
                return None
            self._live[index] = self._open(index)
            item = next(self._live[index], None)  # type: ignore[arg-type]
        if item is None:
            raise DataError(f"dataset {self._names[index]!r} ended after {cursor[2]} items of a pass that was "
                            "counted longer; did its files change during the run?")
        cursor[2] += 1
        if self._mode == "repeat" and cursor[2] == self._pass_length(index):
            # Move to the next pass now, so a state saved here never points at an exhausted pass.
            cursor[1], cursor[2] = cursor[1] + 1, 0
            self._live[index] = None
        return item

    # ----------------------------------------------------------------------------------- passes

    def _item_counts(self) -> list[int]:
        if self._counts is None:  # reads headers / lines once per run; see readers.count_items
            self._counts = [count_items(d.source) for d in self.config.datasets]
        return self._counts

    def _partial_size(self, index: int) -> int:
        fraction = self._rates[index] - math.floor(self._rates[index])
        return math.floor(fraction * self._item_counts()[index] + 0.5)

    def _pass_length(self, index: int) -> int:
        full = math.floor(self._rates[index])
        return self._item_counts()[index] if self._cursors[index][1] < full else self._partial_size(index)

    def _selection(self, index: int) -> np.ndarray | None:
        """Repeat mode's partial pass: a seeded boolean mask of the items it takes (None: take all)."""
        epoch, pass_index, _ = self._cursors[index]
        if self._mode != "repeat" or pass_index < math.floor(self._rates[index]):
            return None
        n = self._item_counts()[index]
        rng = np.random.default_rng((self.seed, index, epoch, _SELECT))
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=self._partial_size(index), replace=False)] = True
        return mask

    def _open(self, index: int) -> Iterator[Record | Skipped]:
        """Dataset ``index``'s current pass, positioned after the items it has already given."""
        epoch, pass_index, taken = self._cursors[index]
        source = self.config.datasets[index].source
        mask = self._selection(index)
        if self.shuffle_buffer <= 1:
            if mask is None:
                return iter_records(source, start=taken)
            chosen = np.flatnonzero(mask)
            start = int(chosen[taken - 1]) + 1 if taken else 0
            return _masked(iter_records(source, start=start), mask, start)
        items = iter_records(source)
        if mask is not None:
            items = _masked(items, mask, 0)
        rng = np.random.default_rng((self.seed, index, epoch, pass_index, _SHUFFLE))
        # The buffer's content depends on everything before it, so resuming replays the pass up to `taken`.
        return itertools.islice(_shuffled(items, self.shuffle_buffer, rng), taken, None)

    # ----------------------------------------------------------------------------------- bookkeeping

    def _count_skip(self, index: int, reason: str, where: str) -> None:
        counts = self._skipped[index]
        category = reason_category(reason)
        counts[category] = counts.get(category, 0) + 1
        total = sum(counts.values())
        if total <= _WARN_FIRST:
            suffix = "; further skips of this dataset are logged at DEBUG" if total == _WARN_FIRST else ""
            _LOG.warning("skipping a record of %r (%s): %s%s", self._names[index], where, reason, suffix)
        else:
            _LOG.debug("skipping a record of %r (%s): %s", self._names[index], where, reason)

    def _check_budget(self, reason: str | None, where: str) -> None:
        skipped = sum(sum(c.values()) for c in self._skipped)
        seen = skipped + sum(self._yielded)
        if skipped == 0 or skipped <= self.error_budget * seen:
            return
        if self.error_budget > 0 and seen < self.min_seen:
            return
        detail = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                           for name, counts in zip(self._names, self._skipped) if counts)
        last = f" Last: {reason} ({where})." if reason else ""
        raise DataError(f"too many bad records: skipped {skipped} of {seen} seen ({skipped / seen:.1%}, "
                        f"error_budget {self.error_budget:.1%}). By dataset: {detail}.{last}")

    @property
    def stats(self) -> dict[str, Any]:
        """``{"seen", "yielded", "skipped", "datasets": {name: {"yielded", "skipped": {reason: n}}}}``."""
        yielded, skipped = sum(self._yielded), sum(sum(c.values()) for c in self._skipped)
        return {"seen": yielded + skipped, "yielded": yielded, "skipped": skipped,
                "datasets": {name: {"yielded": y, "skipped": dict(s)}
                             for name, y, s in zip(self._names, self._yielded, self._skipped)}}

    # ----------------------------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, Any]:
        """A small JSON-serialisable snapshot; ``load_state_dict`` of it continues with the very next item."""
        return {
            "version": _STATE_VERSION, "seed": self.seed, "mode": self._mode,
            "shuffle_buffer": self.shuffle_buffer, "epoch": self._epoch, "finished": self._finished,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "remaining": None if self._remaining is None else list(self._remaining),
            "counts": None if self._counts is None else list(self._counts),
            "datasets": {name: {"epoch": c[0], "pass": c[1], "taken": c[2]}
                         for name, c in zip(self._names, self._cursors)},
            "stats": self.stats,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the stream must have the same datasets, seed, and shuffle buffer."""
        try:
            if state["version"] != _STATE_VERSION:
                raise DataError(f"unsupported stream state version {state['version']!r}")
            mine = {"seed": self.seed, "mode": self._mode, "shuffle_buffer": self.shuffle_buffer}
            theirs = {key: state[key] for key in mine}
            # By name: checkpoints write their state JSON with sorted keys (training/checkpoint.py), so the
            # datasets come back in alphabetical order, not the mixture's.
            if mine != theirs or sorted(state["datasets"]) != sorted(self._names):
                raise DataError(f"the state belongs to another stream: it has {theirs} and datasets "
                                f"{list(state['datasets'])}, this stream {mine} and {self._names}")
            if state["counts"] is not None and state["counts"] != self._item_counts():
                raise DataError(f"datasets changed since the state was saved: item counts "
                                f"{state['counts']} then, {self._item_counts()} now")
            cursors = [[int(d["epoch"]), int(d["pass"]), int(d["taken"])]
                       for d in (state["datasets"][name] for name in self._names)]
            stats = state["stats"]["datasets"]
            yielded = [int(stats[name]["yielded"]) for name in self._names]
            skipped = [{str(k): int(v) for k, v in stats[name]["skipped"].items()} for name in self._names]
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"malformed stream state: {exc!r}") from exc
        self._rng, self._cursors, self._yielded, self._skipped = rng, cursors, yielded, skipped
        self._epoch, self._finished = int(state["epoch"]), bool(state["finished"])
        self._remaining = None if state["remaining"] is None else [int(v) for v in state["remaining"]]
        self._live = [None] * len(self._names)


def _masked(items: Iterator[Record | Skipped], mask: np.ndarray, start: int) -> Iterator[Record | Skipped]:
    """The items whose position (counted from ``start``) is set in ``mask``."""
    for position, item in enumerate(items, start):
        if position < len(mask) and mask[position]:  # a file grown since counting: its tail is not drawn
            yield item


def _shuffled(items: Iterator[Record | Skipped], size: int, rng: np.random.Generator) -> Iterator[Record | Skipped]:
    """Buffered shuffle: each new item replaces (and releases) a random buffered one; the rest go out shuffled."""
    buffer: list[Record | Skipped] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = int(rng.integers(size))
        yield buffer[slot]
        buffer[slot] = item
    for slot in rng.permutation(len(buffer)):
        yield buffer[int(slot)]
