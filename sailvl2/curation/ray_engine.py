"""The Ray engine (``--engine ray``): the local engine's map shards, run by a Ray Data actor pool.

Only the executor changes. The driver cuts the same shards, skips the ones that are done, and runs the
global stages itself. Each pending shard is written to ``work/phase<P>-shard<K>.input.jsonl``. A Ray Dataset
with one row per pending shard goes through ``Dataset.map`` with a pool of ``workers`` actors
(``ActorPoolStrategy``, one CPU each), and each actor calls a stage's ``setup()`` once. The actors run the
local engine's ``process_shard`` and write the same decision, survivor and timing files, so the output is
the same as the local engine's, byte for byte, and resume works the same way.

Which Ray: an already initialised Ray session is used as it is. Otherwise ``ray.init(address=RAY_ADDRESS)``
connects to the cluster named by the ``RAY_ADDRESS`` environment variable (e.g. ``ray://head:10001``, or
``auto`` on a cluster node). Without the variable, a local instance with ``workers`` CPUs is started, and
stopped again when the run ends. On a cluster, the output folder (and the inputs) must be on a filesystem
that every node mounts at the same path, because the actors read their shard files and write their results
there. The nodes must also have sailvl2 and any ``plugins`` modules installed. Ray is optional:
``pip install 'sailvl2[ray]'``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._storage import Layout, item_line, read_jsonl, write_atomic
from .types import CurationError, Decision, Item

__all__ = ["run_shards_on_ray", "shutdown_ray"]

_started_here = False  # whether this process started the Ray instance (and so stops it)


def run_shards_on_ray(tasks: Iterable[tuple], stages: list[Any], workers: int,
                      finished: Callable[[dict[str, Any], tuple], None]) -> None:
    """Run shard tasks ``(phase, shard, stage ids, entries, output root)`` on a Ray Data actor pool; calls
    ``finished(stats, task)`` as each shard completes (in completion order)."""
    rows, tasks_by_shard = [], {}
    for phase, shard, stage_ids, entries, root in tasks:
        path = Layout(root).shard(phase, shard, "input.jsonl")
        write_atomic(path, map(_entry_line, entries))
        rows.append({"phase": phase, "shard": shard, "stage_ids": json.dumps(stage_ids), "input": str(path),
                     "root": root})
        tasks_by_shard[(phase, shard)] = (phase, shard, stage_ids, (), root)
    if not rows:
        return
    ray = _connect(workers)
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # one block per shard: spread them out
    dataset = dataset.map(_ShardActor, fn_constructor_args=(stages,), num_cpus=1,
                          compute=ray.data.ActorPoolStrategy(size=max(1, workers)))
    for row in dataset.iter_rows():
        finished(json.loads(row["stats"]), tasks_by_shard[(row["phase"], row["shard"])])


def shutdown_ray() -> None:
    """Stop the Ray instance if :func:`run_shards_on_ray` started it."""
    global _started_here
    if _started_here:
        import ray

        ray.shutdown()
        _started_here = False


def _connect(workers: int) -> Any:
    global _started_here
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise CurationError("--engine ray needs Ray: pip install 'sailvl2[ray]' (or ray[data])") from exc
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if address is None:  # a local instance: its workers import what this process can (plugins, tests)
            paths = os.pathsep.join(p for p in sys.path if p)
            options.update(num_cpus=max(1, workers), runtime_env={"env_vars": {"PYTHONPATH": paths}})
        ray.init(address=address, **options)
        _started_here = True
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def _entry_line(entry: Item | Decision) -> str:
    if isinstance(entry, Item):
        return '{"item": ' + item_line(entry) + "}"
    return json.dumps({"decision": {"id": entry.id, "stage": entry.stage, "kept": entry.kept,
                                    "reason": entry.reason, "scores": entry.scores}}, ensure_ascii=False)


def _entry(row: dict[str, Any]) -> Item | Decision:
    if "decision" in row:
        return Decision(**row["decision"])
    item = row["item"]
    return Item(item["id"], item["record"], item["root"], item["scores"], item["features"])


class _ShardActor:
    """One Ray actor: holds the stages (set up lazily, once each) and runs shards through them."""

    def __init__(self, stages: list[Any]) -> None:
        self.stages, self.ready, self.started = stages, set(), time.time()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from .runner import process_shard

        layout = Layout(row["root"])
        if layout.shard(row["phase"], row["shard"], "decisions").exists():  # a retried task that had finished
            stats = json.loads(layout.shard(row["phase"], row["shard"], "stats.json").read_text())
            return {"phase": row["phase"], "shard": row["shard"], "stats": json.dumps(stats)}
        entries = [_entry(line) for line in read_jsonl(row["input"])]
        stats = process_shard(self.stages, self.ready, row["phase"], row["shard"], json.loads(row["stage_ids"]),
                              entries, row["root"])
        os.remove(row["input"])
        return {"phase": row["phase"], "shard": row["shard"], "stats": json.dumps({**stats, "worker_started":
                                                                                    self.started})}
