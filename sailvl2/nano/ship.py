"""Package a trained nano run as the embedded default model, `sailvl2/assets/nano/`.

    sailvl2 nano --out runs/nano                     # train the ladder from scratch (report in runs/nano)
    python -m sailvl2.nano.ship runs/nano            # copy its final model into the package

`sailvl2.load()` and `sailvl2 chat` without `--model` use the shipped model; `make demo` asks it the bundled
example questions. What is shipped:

- the final checkpoint of the run in the release layout, weights in bf16 (half the size; the CPU upcasts to
  float32 when loading, as for the release checkpoints), with its tokenizer and processor files;
- `examples/`: a few held-out test records of the run's suite (one per task group) with their images;
- `heldout.jsonl` + `heldout/`: the first held-out test records (>= 200) with their images, so a test can
  re-evaluate the shipped weights without regenerating the suite;
- `report.md` / `report.json`: the run's evaluation report, and `shipped.json`: the shipped model's own
  accuracy on `heldout.jsonl` (bf16 weights), the numbers the test checks.

The whole directory must stay within the 25 MB the issue allows; `ship` refuses to write more. The copy is
built beside the destination and swapped in at the end, so a failed run never leaves half a model behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "nano"
MAX_BYTES = 25 * 1024 * 1024
NUM_HELDOUT = 240
# One example per task group, in this order, for `make demo` (the suite's task names start with these). No
# warm-up (`focus/`) questions: that family is not in the ladder's training mixtures (docs/nano.md, Status).
EXAMPLE_TASKS = ("shapes/colour", "shapes/count_all", "shapes/position", "shapes/kind", "shapes/which",
                 "shapes/relation", "ocr/word", "ocr/number", "charts/type", "charts/value", "reasoning/table_row",
                 "grounding/locate", "reasoning/count_sum", "multi_image/")
_MODEL_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt")


def _copy_record(record: dict[str, Any], suite: Path, dest: Path, folder: str) -> dict[str, Any]:
    """The record with its image files copied into `dest/folder` and paths made relative to `dest`."""
    images = record["image"] if isinstance(record["image"], list) else [record["image"]]
    copied = []
    for image in images:
        target = Path(folder) / Path(image).name
        if Path(image).parent.name in ("train", "val", "test"):
            target = Path(folder) / f"{Path(image).parent.name}-{Path(image).name}"
        (dest / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(suite / image, dest / target)
        copied.append(target.as_posix())
    out = {key: value for key, value in record.items() if key != "scene"}
    out["image"] = copied if isinstance(record["image"], list) else copied[0]
    return out


def _pick_examples(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    picked = []
    for prefix in EXAMPLE_TASKS:
        match = next((r for r in records if r["task"].startswith(prefix) and r not in picked), None)
        if match is not None:
            picked.append(match)
    return picked


def _directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def ship(run_dir: str | Path, dest: str | Path = ASSET_DIR) -> dict[str, Any]:
    """Copy the final model of the nano run in `run_dir` (with its examples and held-out set) into `dest`."""
    import torch

    from ..api import load
    from ..errors import CheckpointError
    from .evaluate import evaluate, load_split, perception_accuracy

    run = Path(run_dir).resolve()
    report_path = run / "report.json"
    if not report_path.is_file():
        raise CheckpointError(f"{run} has no report.json: run `sailvl2 nano --out {run}` first")
    report = json.loads(report_path.read_text())
    final = Path(report["final_model"])
    if not final.is_absolute():  # relative to the run folder (runs before session 19: to where they ran)
        final = run / final if (run / final).is_dir() else run / final.parent.name / final.name
    suite = run / "data"
    dest = Path(dest)
    staging = dest.with_name(dest.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    try:
        vlm = load(final, device="cpu", dtype=torch.float32)
        vlm.model.to(torch.bfloat16).save_pretrained(staging)
        vlm.processor.save_pretrained(staging)
        for name in _MODEL_FILES:  # anything the processor did not write itself
            if (final / name).is_file() and not (staging / name).is_file():
                shutil.copyfile(final / name, staging / name)

        test = load_split(suite / "test.jsonl", None)
        heldout = [_copy_record(r, suite, staging, "heldout") for r in test[:NUM_HELDOUT]]
        examples = [_copy_record(r, suite, staging, "examples") for r in _pick_examples(test)]
        for name, records in (("heldout.jsonl", heldout), ("examples.jsonl", examples)):
            (staging / name).write_text("".join(json.dumps(r) + "\n" for r in records))
        for name in ("report.md", "report.json"):
            shutil.copyfile(run / name, staging / name)

        shipped = load(staging, device="cpu", dtype=torch.float32)
        scores = evaluate(shipped, load_split(staging / "heldout.jsonl"), max_new_tokens=96)
        # Names, not this machine's paths: the shipped files say which run and stage they come from.
        source = final.relative_to(run) if final.is_relative_to(run) else final
        summary = {"source_run": run.name, "source_model": str(source), "heldout": len(heldout),
                   "overall": scores.overall, "perception": perception_accuracy(scores.per_task),
                   "per_task": scores.per_task}
        (staging / "shipped.json").write_text(json.dumps(summary, indent=2))
        size = _directory_bytes(staging)
        if size > MAX_BYTES:
            raise CheckpointError(f"the shipped model would take {size / 2**20:.1f} MB, over the 25 MB limit")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = dest.with_name(dest.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if dest.exists():
        dest.replace(previous)
    staging.replace(dest)
    shutil.rmtree(previous, ignore_errors=True)
    summary["bytes"] = size
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a finished `sailvl2 nano` output directory (with report.json)")
    parser.add_argument("--dest", default=str(ASSET_DIR), help="where to write the model (default: the package)")
    args = parser.parse_args(argv)
    summary = ship(args.run_dir, args.dest)
    print(f"shipped {summary['source_model']} -> {args.dest} ({summary['bytes'] / 2**20:.1f} MB); "
          f"held-out accuracy {summary['overall']:.1%} on {summary['heldout']} records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
