"""The evaluation runner: a benchmark TSV in, predictions, metrics, a table and a chart out; resumable.

:func:`run_eval` loads the TSV (bad rows are skipped and counted, ``datasets.py``), builds each item's prompt
(``prompts.py``), generates through a :class:`Generator` - our model (:class:`ModelGenerator`, ``batch_chat``)
or any OpenAI-compatible server (:class:`EndpointGenerator`) - scores (``scoring.py``) and writes the outputs
(``report.py``) into the output folder:

- ``predictions.jsonl``: one line per finished item (``index``, ``prediction``, ``error``, ``prompt``), appended
  as each batch finishes (one ``write`` per line, then flush + ``fsync``), so a killed run loses at most the
  batch in flight. A rerun with the same output folder skips the items already there; a line cut short by
  the kill is dropped and its item generated again. ``run.json`` records what the predictions were made with
  (benchmark, model, thinking, answer budget, tiles); a rerun with other settings is refused.
- ``metrics.json``, ``scores.jsonl``, ``results.md``, ``results.png`` (``report.py``); ``metrics.json`` holds no
  times or paths, so a resumed run writes the same bytes as an uninterrupted one.

Batches group items with the same generation settings (tile budget, MSAC flag, answer budget): the tile budget
depends on the number of images, and one ``batch_chat`` call takes one setting. Greedy decoding throughout
(PAPER.md 9.4). Items whose prompt cannot be built (too many images for the tile budget, ...) or that the model
rejects are recorded with their error and score 0; failed endpoint requests are not recorded (a rerun retries
them) and are counted in ``metrics.json`` as ``failed_requests`` (scored 0 until then).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from ..configuration import atomic_write_text
from ..errors import ConfigError, InputError, SailVL2Error
from .datasets import BenchmarkItem, LoadedBenchmark, load_tsv
from .endpoint import EndpointClient
from .extract import Judge
from .prompts import PreparedInput, build_prompt
from .registry import BenchmarkSpec
from .report import write_report
from .scoring import score_benchmark
from .suite import is_suite, suite_spec

__all__ = [
    "EndpointGenerator", "EvalResult", "Generated", "Generator", "ModelGenerator", "RunSettings", "resolve_spec",
    "run_eval",
]

PREDICTIONS_FILE = "predictions.jsonl"
RUN_FILE = "run.json"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generated:
    """One generation: ``text``, or ``error`` with ``permanent`` telling whether retrying can help (a model that
    rejects the input: no; a failed request: yes)."""

    text: str | None
    error: str | None = None
    permanent: bool = False


class Generator(Protocol):
    """Turns prepared inputs (all with the same tile settings and answer budget) into generations, in order.
    ``label`` names the model in reports; ``identity`` must stay the same for a run to be resumed."""

    label: str
    identity: str

    def generate(self, batch: Sequence[PreparedInput]) -> list[Generated]: ...


class ModelGenerator:
    """Generation with a loaded model (``sailvl2.load``) through ``SAILVL2.batch_chat`` (greedy, left-padded)."""

    def __init__(self, vlm: Any, label: str, identity: str | None = None) -> None:
        self.vlm, self.label, self.identity = vlm, label, identity or label

    def generate(self, batch: Sequence[PreparedInput]) -> list[Generated]:
        first = batch[0]
        try:
            replies = self.vlm.batch_chat(
                [p.text for p in batch], images=[p.images or None for p in batch], max_new_tokens=first.max_new_tokens,
                max_num=first.max_num, use_msac=first.use_msac, batch_size=len(batch), progress=False,
            )
        except SailVL2Error as exc:
            if len(batch) == 1:
                return [Generated(None, f"{type(exc).__name__}: {exc}", permanent=True)]
            return [result for p in batch for result in self.generate([p])]  # find the item(s) at fault
        return [Generated(reply.text) for reply in replies]


class EndpointGenerator:
    """Generation through an OpenAI-compatible server; the batch's requests run ``concurrency`` at a time."""

    def __init__(self, client: EndpointClient) -> None:
        self.client = client
        self.label = client.settings.model
        self.identity = f"{client.settings.model} @ {client.url}"

    def generate(self, batch: Sequence[PreparedInput]) -> list[Generated]:
        return [Generated(c.text) if c.ok else Generated(None, str(c.error)) for c in self.client.complete_many(batch)]


@dataclass(frozen=True)
class RunSettings:
    """``benchmark``: registry name (default: the file name); ``limit``: the first items only;
    ``max_new_tokens`` / ``max_num``: override the benchmark's answer budget / tiles per image."""

    benchmark: str | None = None
    batch_size: int = 8
    thinking: bool = False
    limit: int | None = None
    max_new_tokens: int | None = None
    max_num: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "limit", "max_new_tokens", "max_num"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")


@dataclass
class EvalResult:
    """A finished run: its ``metrics`` (as in ``metrics.json``), output ``paths``, the number of items generated
    by this call and its wall time in seconds."""

    metrics: dict[str, Any]
    paths: dict[str, Path]
    generated: int
    seconds: float


def resolve_spec(loaded: LoadedBenchmark, settings: RunSettings) -> BenchmarkSpec:
    """The spec a run uses: the registry's (the task suite's for suite names) with the settings' overrides."""
    spec = suite_spec(loaded.name) if is_suite(loaded.name) else loaded.spec
    changes: dict[str, Any] = {}
    if settings.max_new_tokens is not None:
        changes["max_new_tokens" if not settings.thinking else "thinking_max_new_tokens"] = settings.max_new_tokens
    if settings.max_num is not None:
        changes["max_num"] = settings.max_num
    return dataclasses.replace(spec, **changes) if changes else spec


def run_eval(data: str | os.PathLike, out_dir: str | os.PathLike, generator: Generator,
             settings: RunSettings = RunSettings(), judge: Judge | None = None,
             on_prediction: Callable[[dict[str, Any]], None] | None = None, progress: bool = True) -> EvalResult:
    """Evaluate ``generator`` on the benchmark TSV ``data``, writing into ``out_dir`` (resumes what is there).
    ``on_prediction`` is called with each prediction record after it is on disk."""
    start = time.perf_counter()
    loaded = load_tsv(data, settings.benchmark)
    spec = resolve_spec(loaded, settings)
    items = loaded.items[: settings.limit]
    if not items:
        raise InputError(f"{loaded.summary()}: no usable items to evaluate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _claim_run(out, spec, generator, settings)
    done = _read_predictions(out / PREDICTIONS_FILE)
    pending = [item for item in items if item.index not in done]
    failed: set[str] = set()
    generated = 0
    with tqdm(total=len(items), initial=len(items) - len(pending), unit="item", desc=spec.name,
              disable=not progress, dynamic_ncols=True) as bar:
        for batch, errors in _batches(pending, spec, settings):
            records = [{"index": item.index, "prediction": None, "error": message, "prompt": None}
                       for item, message in errors]
            results = generator.generate(batch) if batch else []
            for prepared, result in zip(batch, results, strict=True):
                if result.error is not None and not result.permanent:
                    failed.add(prepared.index)
                    _log.warning("item %s: %s", prepared.index, result.error)
                    continue
                records.append({"index": prepared.index, "prediction": result.text, "error": result.error,
                                "prompt": prepared.text})
            _append_lines(out / PREDICTIONS_FILE, records)
            generated += len(records)
            bar.update(len(batch) + len(errors))
            for record in records:
                done[record["index"]] = record
                if on_prediction is not None:
                    on_prediction(record)
    scored = score_benchmark(spec, items, {i: r.get("prediction") for i, r in done.items()}, judge)
    metrics = {
        "benchmark": spec.name, "model": generator.label, "data": Path(data).name, "kind": spec.kind.value,
        "metric": scored.metric, "score": scored.score, "n": scored.n,
        "score_sum": sum(s.score for s in scored.items), "extra": scored.extra, "per_category": scored.per_category,
        "items_in_file": len(loaded.items), "skipped_rows": dict(sorted(loaded.skipped.items())),
        "unscorable": scored.unscorable,
        "prediction_errors": sum(1 for item in items if item.index in done and done[item.index].get("error")),
        "failed_requests": len(failed), "complete": not failed, "answer_sources": scored.answer_sources,
        "settings": {"thinking": settings.thinking, "max_new_tokens": _budget(spec, settings), "max_num": spec.max_num,
                     "use_msac": spec.use_msac, "limit": settings.limit, "judge": getattr(judge, "model", None)},
    }
    rows = [dataclasses.asdict(s) for s in scored.items]
    paths = write_report(out, metrics, rows)
    paths["predictions"] = out / PREDICTIONS_FILE
    return EvalResult(metrics, paths, generated, time.perf_counter() - start)


def _budget(spec: BenchmarkSpec, settings: RunSettings) -> int:
    return spec.thinking_max_new_tokens if settings.thinking else spec.max_new_tokens


def _batches(items: Sequence[BenchmarkItem], spec: BenchmarkSpec, settings: RunSettings
             ) -> Iterator[tuple[list[PreparedInput], list[tuple[BenchmarkItem, str]]]]:
    """Batches of prepared inputs with equal generation settings, plus the items whose prompt failed. Prompts
    are built as the items come, so only the open batches hold decoded images."""
    open_batches: dict[tuple[int, bool, int], list[PreparedInput]] = {}
    errors: list[tuple[BenchmarkItem, str]] = []
    for item in items:
        try:
            prepared = build_prompt(item, spec, settings.thinking)
        except SailVL2Error as exc:
            errors.append((item, f"{type(exc).__name__}: {exc}"))
            continue
        key = (prepared.max_num, prepared.use_msac, prepared.max_new_tokens)
        batch = open_batches.setdefault(key, [])
        batch.append(prepared)
        if len(batch) == settings.batch_size:
            yield open_batches.pop(key), errors
            errors = []
    for batch in open_batches.values():
        yield batch, errors
        errors = []
    if errors:
        yield [], errors


def _claim_run(out: Path, spec: BenchmarkSpec, generator: Generator, settings: RunSettings) -> None:
    """Record the run's settings in ``run.json``, or check them against the predictions already there."""
    identity = {"benchmark": spec.name, "model": generator.identity, "thinking": settings.thinking,
                "max_new_tokens": _budget(spec, settings), "max_num": spec.max_num, "use_msac": spec.use_msac}
    path = out / RUN_FILE
    if path.exists() and (out / PREDICTIONS_FILE).exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            before = None
        if before != identity:
            raise ConfigError(
                f"{str(out)!r} holds predictions made with other settings ({before} vs now {identity}); "
                "use another output folder or delete it"
            )
        return
    atomic_write_text(path, json.dumps(identity, indent=2) + "\n")


def _read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """The prediction records on disk by index. Lines that do not parse (a write cut short by a kill) are
    dropped and the file is rewritten without them, so later appends start on a line of their own."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    records: dict[str, dict[str, Any]] = {}
    kept, dropped = [], 0
    for line in text.splitlines():
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("index"), str):
                raise ValueError("not a prediction record")
        except ValueError:
            dropped += 1
            continue
        records[record["index"]] = record
        kept.append(line)
    if dropped or (text and not text.endswith("\n")):
        _log.warning("%s: dropped %d unreadable line(s), their items are generated again", path, dropped)
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return records


def _append_lines(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append one JSON line per record, each with a single ``write`` (``O_APPEND``), then ``fsync``."""
    if not records:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for record in records:
            os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
