"""The curation engine: shards, worker processes, per-record decisions, resume, curated output.

A pipeline's stages form *phases*: a run of consecutive map stages is one map phase, a run of consecutive
global stages one global phase. Phase 0 is always a map phase (possibly without stages): it reads the inputs,
so unreadable items are recorded there (stage ``"read"``). Each phase consumes the survivors of the one
before, in input order.

* Map phase: the item stream is cut into shards of ``shard_size`` items by position, so shard k always holds
  the same items. Shards run in ``workers`` spawned processes (``multiprocessing`` "spawn" context; each
  worker calls a stage's ``setup()`` once, before its first shard); ``workers=0`` runs them in this process.
  Per shard the stages run in sequence, an item dropped by one never reaching the next. Records a stage
  generates from an item (``Decision.generated``) are placed right after it and go on to the next stage;
  they live in the shard's survivors like any item, so later phases, the output and a resume see them once.
  A stage that raises is retried item by item and the failing items are dropped with
  ``"error: <stage>: <exception>"``.
* Global phase: in the driver, each stage's ``process_all`` over the survivors, chained lazily.

Output folder::

    pipeline.json                         the pipeline and its fingerprint (a resume checks it)
    decisions/phase0-shard00000.jsonl     every decision of a map shard: {id, stage, kept, reason, scores}
    decisions/phase1-exact_dedup.jsonl    every decision of a global stage          (+ "image" when dropped)
    work/...                              survivors and timings per shard / phase (JSONL, JSON)
    images/...                            images that arrived as bytes (WebDataset, Parquet), written once
    data/curated-00000.jsonl ...          the curated records, training engine format
    report.json, report.md, report/       see :mod:`sailvl2.curation.report`

``engine="ray"`` runs the same shards through a Ray Data actor pool instead (:mod:`.ray_engine`).

Resume: a shard whose decision file exists is not recomputed, a finished phase is not re-read; every file is
written to a temporary name and renamed into place, decision files last (they mark a shard done), so a run
killed at any point and rerun produces every record exactly once. Output image paths are absolute
(``images: reference``) or copies under ``data/images/`` referenced relatively (``images: copy``).
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from . import report as report_module
from ._storage import Layout, decision_line, item_line, read_items, read_jsonl, write_atomic, write_curated
from .config import PipelineConfig
from .inputs import READ_STAGE, iter_inputs
from .stages import is_global_stage
from .types import CurationError, Decision, Item, generated_id

__all__ = ["ENGINES", "RunResult", "default_workers", "run_pipeline"]

ENGINES = ("local", "ray")
_IN_FLIGHT_PER_WORKER = 2  # shards queued per worker: keeps workers busy, bounds driver memory


@dataclass(frozen=True)
class RunResult:
    output: Path
    inputs: int  # items read (records plus unreadable items)
    kept: int
    data_files: tuple[Path, ...]
    report: dict[str, Any]


def default_workers() -> int:
    return min(2, os.cpu_count() or 1)


def run_pipeline(config: PipelineConfig, *, workers: int | None = None, resume: bool = True,
                 engine: str = "local", progress: Callable[[str], None] | None = None) -> RunResult:
    """Run ``config`` into ``config.output``; see the module docstring for the layout and the guarantees."""
    if engine not in ENGINES:
        raise CurationError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise CurationError(f"workers must be >= 0, got {workers}")
    return _Run(config, workers, resume, engine, progress or (lambda message: None)).run()


# --------------------------------------------------------------------------------------------- map shards

_worker_stages: list[Any] = []
_worker_ready: set[int] = set()
_worker_started: list[float] = []  # when this worker finished start-up (imports, unpickling the stages)


def _init_worker(stages: list[Any]) -> None:
    _worker_stages[:] = stages
    _worker_ready.clear()
    _worker_started[:] = [time.time()]


def _worker_shard(task: tuple) -> dict[str, Any]:
    return {**process_shard(_worker_stages, _worker_ready, *task), "worker_started": _worker_started[0]}


def process_shard(stages: list[Any], ready: set[int], phase: int, shard: int, stage_ids: list[int],
                   entries: list[Item | Decision], root: str) -> dict[str, Any]:
    """Run one shard through its map stages and write its files; returns its timings."""
    layout, started = Layout(root), time.time()
    lines = [decision_line(e, None) for e in entries if isinstance(e, Decision)]  # unreadable items
    alive = [e for e in entries if isinstance(e, Item)]
    timings: dict[str, dict[str, float]] = {}
    for index in stage_ids:
        stage = stages[index]
        if index not in ready:
            stage.setup()
            ready.add(index)
        clock = time.perf_counter()
        decisions = _safe_process(stage, alive)
        timings[stage.name] = {"in": len(alive), "seconds": time.perf_counter() - clock}
        survivors = []
        for item, decision in zip(alive, decisions):
            item.scores.update(decision.scores)
            children = _generated_items(stage.name, item, decision)
            lines.append(decision_line(decision, item, [child.id for child in children]))
            if decision.kept:
                survivors.append(item)
            survivors += children
        alive = survivors
    write_atomic(layout.shard(phase, shard, "items.jsonl"), map(item_line, alive))
    stats = {"items": len(entries), "items_in": sum(isinstance(e, Item) for e in entries), "kept": len(alive),
             "stages": timings, "started": started, "finished": time.time(), "pid": os.getpid()}
    write_atomic(layout.shard(phase, shard, "stats.json"), [json.dumps(stats)])
    write_atomic(layout.shard(phase, shard, "decisions"), lines)  # last: marks the shard done
    return stats


def _generated_items(stage: str, parent: Item, decision: Decision) -> list[Item]:
    """The items of the records a stage generated from ``parent``: derived ids, the parent's root. Each record
    is copied through JSON, so it shares no objects with the parent's and is checked to be writable."""
    children = []
    for k, record in enumerate(decision.generated):
        child_id = generated_id(parent.id, stage, k)
        try:
            copy = json.loads(json.dumps(record))
        except (TypeError, ValueError) as exc:
            raise CurationError(f"stage {stage!r}: record {k} generated from {parent.id!r} is not JSON: "
                                f"{exc}") from exc
        copy.pop("id", None)
        children.append(Item(child_id, {"id": child_id, **copy}, parent.root))
    return children


def _safe_process(stage: Any, items: list[Item]) -> list[Decision]:
    """``stage.process(items)``; when it raises, each item alone, the ones that still raise dropped."""
    if not items:
        return []
    try:
        return _checked(stage, items, stage.process(items))
    except CurationError:
        raise
    except Exception:  # noqa: BLE001 - a bad record must never take the worker down; isolate it below
        pass
    decisions = []
    for item in items:
        try:
            decisions += _checked(stage, [item], stage.process([item]))
        except CurationError:
            raise
        except Exception as exc:  # noqa: BLE001
            decisions.append(Decision(item.id, stage.name, False, f"error: {stage.name}: {type(exc).__name__}: "
                                                                  f"{exc}"))
    return decisions


def _checked(stage: Any, items: list[Item], decisions: Any) -> list[Decision]:
    decisions = list(decisions)
    if [d.id for d in decisions] != [item.id for item in items]:
        raise CurationError(f"stage {stage.name!r} returned decisions for {[d.id for d in decisions][:5]} "
                            f"given items {[item.id for item in items][:5]}: it must return one Decision per "
                            f"item, in order")
    for decision in decisions:
        if not isinstance(decision.generated, (tuple, list)) or \
                not all(isinstance(record, dict) for record in decision.generated):
            raise CurationError(f"stage {stage.name!r}: Decision.generated of {decision.id!r} must be a tuple of "
                                f"records (dicts), got {type(decision.generated).__name__}")
    return decisions


def _chunks(entries: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(entries)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --------------------------------------------------------------------------------------------- global stages


def _apply_global(stage: Any, items: Iterable[Item], layout: Layout, phase: int) -> Iterator[Item]:
    """Chain one global stage: yields the kept items, writes its decisions once it has answered every item."""
    pending: deque[Item] = deque()
    upstream = iter(items)
    waited = 0.0  # time spent pulling from earlier stages, subtracted from this stage's time

    def feed() -> Iterator[Item]:
        nonlocal waited
        while True:
            clock = time.perf_counter()
            item = next(upstream, None)
            waited += time.perf_counter() - clock
            if item is None:
                return
            pending.append(item)
            yield item

    lines, kept, total, clock = [], 0, 0, time.perf_counter()
    for decision in stage.process_all(feed()):
        if not pending or pending[0].id != decision.id:
            raise CurationError(f"global stage {stage.name!r} answered {decision.id!r} out of input order "
                                f"(next item: {pending[0].id if pending else 'none read yet'!r})")
        item = pending.popleft()
        if decision.generated:
            raise CurationError(f"global stage {stage.name!r} generated records for {decision.id!r}; only map "
                                f"stages (process) may add records")
        item.scores.update(decision.scores)
        lines.append(decision_line(decision, item))
        total += 1
        if decision.kept:
            kept += 1
            yield item
    if pending or next(upstream, None) is not None:
        raise CurationError(f"global stage {stage.name!r} stopped before answering every item")
    seconds = time.perf_counter() - clock - waited
    stats = {"in": total, "kept": kept, "seconds": seconds}
    if callable(getattr(stage, "summary", None)):  # e.g. bucket sizes, n-gram shares before/after
        stats["summary"] = stage.summary()
    write_atomic(layout.stage(phase, stage.name, "stats.json"), [json.dumps(stats)])
    write_atomic(layout.stage(phase, stage.name, "decisions"), lines)


def _replay_global(name: str, path: Path, items: Iterable[Item]) -> Iterator[Item]:
    """A finished global stage on a resumed run: its recorded decisions, checked against the items."""
    decisions = read_jsonl(path)
    for item in items:
        row = next(decisions, None)
        if row is None or row["id"] != item.id:
            raise CurationError(f"{path} does not match the items reaching stage {name!r}; rerun with --no-resume")
        item.scores.update(row["scores"])
        if row["kept"]:
            yield item


# --------------------------------------------------------------------------------------------- the run


class _Run:
    def __init__(self, config: PipelineConfig, workers: int, resume: bool, engine: str,
                 progress: Callable[[str], None]) -> None:
        self.config, self.workers, self.engine, self.progress = config, workers, engine, progress
        self.layout = Layout(config.output)
        self.stages = config.build_stages()
        self.phases = _phases(self.stages)
        self.executor: futures.ProcessPoolExecutor | None = None
        self.fresh_shards: list[dict[str, Any]] = []  # timings of shards computed by this run
        self.resumed_shards = 0
        self._ready: set[int] = set()  # stages set up in this process (workers=0)
        self._prepare(resume)

    def _prepare(self, resume: bool) -> None:
        marker = self.layout.root / "pipeline.json"
        fingerprint = self.config.fingerprint()
        if marker.exists() and resume:
            previous = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint")
            if previous != fingerprint:
                raise CurationError(f"{self.layout.root} holds a run of a different pipeline (fingerprint "
                                    f"{previous}, this one {fingerprint}); use --no-resume or another output")
        elif not resume:  # start over: only our own subfolders, never the rest of the folder
            for name in ("decisions", "work", "data", ".data.tmp", "report", "images"):
                shutil.rmtree(self.layout.root / name, ignore_errors=True)
        for folder in (self.layout.decisions, self.layout.work):  # half-written files of a killed run
            for temp in folder.glob("*.tmp*") if folder.is_dir() else ():
                temp.unlink()
        stages = [{"name": s.name, "settings": spec.settings} for s, spec in zip(self.stages, self.config.stages)]
        write_atomic(marker, [json.dumps({"fingerprint": fingerprint, "stages": stages}, indent=1)])

    def run(self) -> RunResult:
        started = time.perf_counter()
        try:
            shard_counts = {}
            for index, (kind, stage_ids) in enumerate(self.phases):
                if kind == "map":
                    shard_counts[index] = self._map_phase(index, stage_ids)
                else:
                    self._global_phase(index, stage_ids)
        finally:
            if self.executor is not None:
                self.executor.shutdown(cancel_futures=True)
            if self.engine == "ray":
                from .ray_engine import shutdown_ray

                shutdown_ray()
        data_files = self._write_output()
        wall = time.perf_counter() - started
        inputs = sum(json.loads(self.layout.shard(0, k, "stats.json").read_text())["items"]
                     for k in range(shard_counts[0]))
        info = {"engine": self.engine, "workers": self.workers, "wall_seconds": wall, "inputs": inputs,
                "shards": shard_counts[0], "resumed_shards": self.resumed_shards, "images": self.config.images,
                "map_window": _window(self.fresh_shards), "stage_stats": self._stage_stats(shard_counts)}
        decision_files = [p for index, (kind, ids) in enumerate(self.phases)
                          for p in ([self.layout.shard(index, k, "decisions") for k in range(shard_counts[index])]
                                    if kind == "map" else
                                    [self.layout.stage(index, self.stages[i].name, "decisions") for i in ids])]
        report = report_module.write_report(self.layout.root, [READ_STAGE] + [s.name for s in self.stages],
                                            decision_files, data_files, info, self.config.contact_sheet)
        self.progress(f"done: {report['kept']} of {inputs} records kept -> {self.layout.root / 'data'}")
        return RunResult(self.layout.root, inputs, report["kept"], tuple(data_files), report)

    def _source(self, phase: int) -> Iterator[Item | Decision]:
        if phase == 0:
            return iter_inputs(self.config.inputs, self.layout.root / "images")
        previous = phase - 1
        if self.phases[previous][0] == "global":
            return read_items(self.layout.survivors(previous))
        count = json.loads(self.layout.phase(previous).read_text())["shards"]
        return (item for k in range(count) for item in read_items(self.layout.shard(previous, k, "items.jsonl")))

    def _map_phase(self, phase: int, stage_ids: list[int]) -> int:
        done = self.layout.phase(phase)
        if done.exists():
            shards = json.loads(done.read_text())["shards"]
            self.resumed_shards += shards if phase == 0 else 0
            return shards
        count = [0]
        tasks = self._pending(phase, stage_ids, count)
        if self.engine == "ray":
            from .ray_engine import run_shards_on_ray

            run_shards_on_ray(tasks, self.stages, self.workers, self._finished)
        elif self.workers == 0:
            for task in tasks:
                self._finished(process_shard(self.stages, self._ready, *task), task)
        else:
            in_flight: dict[futures.Future, tuple] = {}
            for task in tasks:
                while len(in_flight) >= _IN_FLIGHT_PER_WORKER * self.workers:
                    self._collect(in_flight, futures.FIRST_COMPLETED)
                in_flight[self._pool().submit(_worker_shard, task)] = task
            self._collect(in_flight, futures.ALL_COMPLETED)
        write_atomic(done, [json.dumps({"shards": count[0]})])
        return count[0]

    def _pending(self, phase: int, stage_ids: list[int], count: list[int]) -> Iterator[tuple]:
        """Shard tasks (phase, shard, stage ids, entries, output root) not done yet; ``count`` gets the total."""
        for shard, entries in enumerate(_chunks(self._source(phase), self.config.shard_size)):
            count[0] = shard + 1
            if self.layout.shard(phase, shard, "decisions").exists():
                self.resumed_shards += phase == 0
                continue
            yield (phase, shard, stage_ids, entries, str(self.layout.root))

    def _pool(self) -> futures.ProcessPoolExecutor:
        if self.executor is None:
            context = multiprocessing.get_context("spawn")
            self.executor = futures.ProcessPoolExecutor(self.workers, mp_context=context,
                                                        initializer=_init_worker, initargs=(self.stages,))
        return self.executor

    def _collect(self, in_flight: dict[futures.Future, tuple], when: str) -> None:
        finished, _ = futures.wait(list(in_flight), return_when=when)
        broken: list[tuple] = []
        while finished:
            for future in finished:
                task = in_flight.pop(future)
                try:
                    self._finished(future.result(), task)
                except futures.process.BrokenProcessPool:
                    broken.append(task)
            # A broken pool fails every queued shard too: collect them all before retrying.
            finished = futures.wait(list(in_flight))[0] if broken and in_flight else set()
        if broken:
            self._retry_alone(broken)

    def _retry_alone(self, tasks: list[tuple]) -> None:
        """A worker died (killed by the OS, a crash in native code): rerun the shards one at a time in a new
        pool, so the shard that kills a worker on its own is the one named."""
        for task in sorted(tasks, key=lambda t: t[1]):
            if self.executor is not None:
                self.executor.shutdown(cancel_futures=True)
                self.executor = None
            try:
                self._finished(self._pool().submit(_worker_shard, task).result(), task)
            except futures.process.BrokenProcessPool as exc:
                raise CurationError(f"shard {task[1]} of phase {task[0]} kills its worker process (out of "
                                    f"memory, or a crash in native code); the items are in the input at "
                                    f"positions {task[1] * self.config.shard_size}+") from exc

    def _finished(self, stats: dict[str, Any], task: tuple) -> None:
        self.fresh_shards.append(stats)
        self.progress(f"phase {task[0]} shard {task[1]}: {stats['kept']} of {stats['items']} kept")

    def _global_phase(self, phase: int, stage_ids: list[int]) -> None:
        survivors = self.layout.survivors(phase)
        if survivors.exists():
            return
        stream: Iterable[Item] = self._source(phase)
        for index in stage_ids:
            stage = self.stages[index]
            path = self.layout.stage(phase, stage.name, "decisions")
            stream = _replay_global(stage.name, path, stream) if path.exists() else \
                _apply_global(stage, stream, self.layout, phase)
        count = write_atomic(survivors, map(item_line, stream))
        self.progress(f"phase {phase} ({', '.join(self.stages[i].name for i in stage_ids)}): {count} kept")

    def _stage_stats(self, shard_counts: dict[int, int]) -> dict[str, dict[str, float]]:
        totals: dict[str, dict[str, float]] = {}
        for index, (kind, stage_ids) in enumerate(self.phases):
            if kind == "map":
                for k in range(shard_counts[index]):
                    stats = json.loads(self.layout.shard(index, k, "stats.json").read_text())
                    for name, values in stats["stages"].items():
                        total = totals.setdefault(name, {"in": 0, "seconds": 0.0})
                        total["in"] += values["in"]
                        total["seconds"] += values["seconds"]
            else:
                for i in stage_ids:
                    name = self.stages[i].name
                    totals[name] = json.loads(self.layout.stage(index, name, "stats.json").read_text())
        return totals

    def _write_output(self) -> list[Path]:
        survivors = self._source(len(self.phases))  # the last phase's survivors
        return write_curated(survivors, self.layout.root, self.config.shard_size, self.config.images)


def _phases(stages: list[Any]) -> list[tuple[str, list[int]]]:
    """[(kind, stage indices)]: runs of map / global stages; phase 0 is a map phase (it reads the inputs)."""
    phases: list[tuple[str, list[int]]] = [("map", [])]
    for index, stage in enumerate(stages):
        kind = "global" if is_global_stage(stage) else "map"
        if phases[-1][0] != kind:
            phases.append((kind, []))
        phases[-1][1].append(index)
    return phases


def _window(shards: list[dict[str, Any]]) -> dict[str, float] | None:
    """Items and wall seconds of the map shards this run computed once every worker was up (spawned workers
    start apart, and a stage's setup() may load a model), from the first such shard's start to the last
    one's end."""
    all_up = max((s.get("worker_started", 0.0) for s in shards), default=0.0)
    shards = [s for s in shards if s["started"] >= all_up] or shards
    if not shards:
        return None
    seconds = max(s["finished"] for s in shards) - min(s["started"] for s in shards)
    return {"items": sum(s["items_in"] for s in shards), "seconds": seconds}
