"""Curation benchmark: records/s of the validation + dedup stages, 2 worker processes vs 1.

Run (about 4 minutes on 2 cores; writes every number as JSON):

    .venv/bin/python benchmarks/curate.py --json benchmarks/results/curate.json

Smaller / faster (400 records instead of 1600, about 1 minute): ``--quick``.

The data is generated on the fly in a temporary directory: JPEG photos-like images (a random smooth colour
field plus noise, 160-320 px a side) with short captions; 10% of the records repeat an earlier one (same
image file bytes and caption), 5% carry a slightly re-encoded copy of an earlier image, and 2% have broken
images (zero bytes or truncated). The pipeline is ``validate`` (a map stage: decode, size checks, hashes),
then ``exact_dedup``, ``image_dedup`` and ``text_dedup`` (global stages, in the driver). Stages missing from
the registry are replaced by simple stand-ins defined here, and the JSON says which were used.

The same pipeline runs with ``--workers 1`` and ``--workers 2`` into fresh output folders, ``--repeats``
times each in alternating order (the run with the median map-phase rate is reported). Reported per run:
records/s per stage (records in / seconds spent in the stage, summed over workers), the map phase
(records / seconds of the shards that started once every worker was up, first start to last end: worker
start-up, ~0.2 s since `import sailvl2` stopped importing torch, is excluded) and overall (records / wall seconds, start-up included). The
ratio 2 vs 1 is the map-phase rate ratio; every run's curated output must be identical. Nothing here asserts
on time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _common import base_parser, cpu_snapshot, finish, print_rows
from sailvl2.curation import (
    Decision, InputSpec, PipelineConfig, StageSpec, available_stages, register_stage, run_pipeline,
)

REAL_STAGES = ("validate", "exact_dedup", "image_dedup", "text_dedup")
WORDS = ("a photo of the red blue green cat dog car street house tree river mountain sky at night "
         "in the morning with two three people sitting standing near on under").split()


# ------------------------------------------------------------------------------------------ stand-ins


@register_stage("bench_validate")
class StandInValidate:
    """Decode the first image fully; drop it when that fails or a side is under 32 px."""

    def setup(self) -> None:
        pass

    def process(self, items):
        decisions = []
        for item in items:
            try:
                with Image.open(os.path.join(item.root, item.record["image"])) as image:
                    image.load()
                    side = min(image.size)
                kept, reason = side >= 32, f"image: too small ({side})"
            except Exception as exc:  # noqa: BLE001
                kept, reason = False, f"image: {exc}"
            decisions.append(Decision(item.id, self.name, kept, None if kept else reason))
        return decisions


@register_stage("bench_dedup")
class StandInDedup:
    """Exact duplicates of (image bytes, caption)."""

    def process_all(self, items):
        seen: dict[str, str] = {}
        for item in items:
            with open(os.path.join(item.root, item.record["image"]), "rb") as handle:
                key = hashlib.sha256(handle.read() + json.dumps(item.record["conversations"]).encode()).hexdigest()
            first = seen.setdefault(key, item.id)
            yield Decision(item.id, self.name, first == item.id, None if first == item.id else f"duplicate: {first}")


def pipeline_stages() -> list[tuple[str, dict[str, Any]]]:
    """The real stages where registered, else a stand-in for the map stage and one for all of the dedups."""
    available = set(available_stages())
    stages: list[tuple[str, dict[str, Any]]] = [("validate", {"min_side": 32}) if "validate" in available
                                                else ("bench_validate", {})]
    dedups = [name for name in REAL_STAGES[1:] if name in available]
    stages += [(name, {}) for name in dedups] or [("bench_dedup", {})]
    return stages


# ------------------------------------------------------------------------------------------ data


def make_image(rng: np.random.Generator) -> Image.Image:
    width, height = (int(v) for v in rng.integers(160, 320, size=2))
    coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    noisy = smooth + rng.normal(0.0, 12.0, size=smooth.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_dataset(folder: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "imgs").mkdir(parents=True)
    lines, good = [], []  # good: indices of records with a decodable image file of their own
    for index in range(count):
        draw, name = rng.random(), f"imgs/{index}.jpg"
        caption = " ".join(rng.choice(WORDS, size=int(rng.integers(6, 16))))
        if index > 10 and draw < 0.10:  # exact repeat of an earlier record
            earlier = json.loads(lines[int(rng.integers(0, len(lines)))])
            lines.append(json.dumps({**earlier, "id": f"r{index}"}))
            continue
        if index > 10 and draw < 0.15:  # near duplicate: an earlier image re-encoded at another quality
            with Image.open(folder / f"imgs/{good[int(rng.integers(0, len(good)))]}.jpg") as earlier_image:
                earlier_image.save(folder / name, quality=70)
        elif draw < 0.17:  # broken: zero bytes or a truncated file
            (folder / name).write_bytes(b"" if draw < 0.16 else _jpeg(make_image(rng))[:300])
        else:
            (folder / name).write_bytes(_jpeg(make_image(rng)))
            good.append(index)
        lines.append(json.dumps({"id": f"r{index}", "image": name, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": caption}]}))
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "data.jsonl"


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ runs


def run_once(data: Path, output: Path, workers: int, shard_size: int) -> dict[str, Any]:
    stages = tuple(StageSpec(name, settings) for name, settings in pipeline_stages())
    config = PipelineConfig(inputs=(InputSpec(str(data)),), output=str(output), stages=stages,
                            shard_size=shard_size, contact_sheet=0)
    result = run_pipeline(config, workers=workers, resume=False)
    throughput = result.report["throughput"]
    return {
        "workers": workers, "kept": result.kept, "inputs": result.inputs,
        "stages": {s["name"]: {"in": s["in"], "dropped": s["dropped"], "records_per_s": s.get("records_per_s")}
                   for s in result.report["stages"]},
        "map_phase_records_per_s": throughput["map_phase_records_per_s"],
        "overall_records_per_s": throughput["overall_records_per_s"], "wall_s": throughput["wall_seconds"],
        "output_sha256": hashlib.sha256(b"".join(p.read_bytes() for p in result.data_files)).hexdigest(),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median map-phase rate (a whole run, so its numbers stay consistent)."""
    ordered = sorted(runs, key=lambda run: run["map_phase_records_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def print_table(results: dict[str, Any]) -> None:
    rows = []
    for key in ("1", "2"):
        run = results["runs"][key]
        rows.append((f"workers={key} map phase", f"{run['map_phase_records_per_s']:.1f} records/s"))
        rows.append((f"workers={key} overall (incl. start-up)", f"{run['overall_records_per_s']:.1f} records/s"))
        for name, stage in run["stages"].items():
            if stage["records_per_s"]:
                rows.append((f"workers={key} {name}", f"{stage['records_per_s']:.1f} records/s per process"))
    rows.append(("map phase ratio 2 vs 1", f"{results['ratio_map_phase']:.2f}x"))
    rows.append(("overall ratio 2 vs 1", f"{results['ratio_overall']:.2f}x"))
    rows.append(("outputs identical", str(results["outputs_identical"])))
    print_rows(f"sailvl2 curation benchmark  ({results['records']} records, stages {results['stages']})", rows,
               results)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0], "400 records instead of 1600 (about 1 minute)")
    parser.add_argument("--records", type=int, help="records to generate (default 1600, 400 with --quick)")
    parser.add_argument("--repeats", type=int, help="runs per worker count, median reported (default 3, 1 quick)")
    args = parser.parse_args(argv)
    count = args.records or (400 if args.quick else 1600)
    repeats = args.repeats or (1 if args.quick else 3)
    shard_size = 50 if args.quick else 100
    started, cpu_before = time.perf_counter(), cpu_snapshot()
    with tempfile.TemporaryDirectory(prefix="sailvl2-bench-curate-") as tmp:
        data = make_dataset(Path(tmp) / "in", count)
        trials: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
        for repeat in range(repeats):  # alternate the order so drift in the machine's load hits both alike
            for workers in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                trials[str(workers)].append(run_once(data, Path(tmp) / f"out{workers}", workers, shard_size))
    runs = {key: _median_run(values) for key, values in trials.items()}
    results: dict[str, Any] = {
        "quick": args.quick, "records": count, "shard_size": shard_size, "repeats": repeats,
        "stages": [name for name, _ in pipeline_stages()],
        "machine": {"platform": platform.platform(), "machine": platform.machine(),
                    "python": platform.python_version(), "cpu_count": os.cpu_count()},
        "runs": runs,
        "ratio_map_phase": runs["2"]["map_phase_records_per_s"] / runs["1"]["map_phase_records_per_s"],
        "ratio_overall": runs["2"]["overall_records_per_s"] / runs["1"]["overall_records_per_s"],
        "outputs_identical": len({run["output_sha256"] for values in trials.values() for run in values}) == 1,
        "all_runs": trials,
    }
    return finish(results, started, cpu_before, print_table, args.json)


if __name__ == "__main__":
    main()
