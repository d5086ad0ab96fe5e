"""The nano ladder: generate the task suite, train a nano SAIL-VL2 from scratch through the stage ladder,
evaluate after every stage, write a report.

    sailvl2 nano                        # full run (`make nano`): the shipped default model comes from this
    sailvl2 nano --preset smoke         # CI-sized: a few steps per stage, a small held-out set
    sailvl2 nano --out runs/nano --seed 0

Stages (recipes in sailvl2/recipes/nano_*.yaml): vision warm-up on large single objects with the LLM layers
frozen -> alignment on captions -> multi-task pre-training -> SFT -> LongCoT SFT (the RL stage arrives with
the RL issue). Each stage starts from the previous one's export.
Outputs in `--out`: data/ (the suite), init/, one run folder per stage, report.md, report.json.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .evaluate import PERCEPTION_PREFIXES, chance_accuracy, evaluate, load_split, perception_accuracy, weighted_chance
from .model import build_nano_init

STAGES = (  # (stage, recipe, mixture file written by the suite generator)
    ("warmup", "nano_warmup", "focus"),
    ("align", "nano_align", "captions"),
    ("multitask", "nano_multitask", "multitask"),
    ("sft", "nano_sft", "sft"),
    ("longcot", "nano_longcot", "cot"),
)
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"sizes": {"train": 20000, "val": 500, "test": 1000}, "eval_limit": 600, "overrides": {}},
    "smoke": {"sizes": {"train": 600, "val": 40, "test": 160}, "eval_limit": 160,
              "overrides": {"warmup": ["max_steps=12"], "align": ["max_steps=12"], "multitask": ["max_steps=30"],
                            "sft": ["max_steps=12"], "longcot": ["max_steps=6"]},
              "common": ["packing.max_seq_len=1024", "save_every=0"]},
}


def _corpus(train_file: Path) -> list[str]:
    texts = []
    for line in train_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        texts += [turn["value"] for turn in record["conversations"]]
    return texts


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def run_ladder(out_dir: str | Path = "runs/nano", preset: str = "full", seed: int = 0,
               stages: tuple[str, ...] | None = None) -> dict[str, Any]:
    from ..api import load
    from ..synth import generate_suite
    from ..training.recipe import load_recipe
    from ..training.trainer import Trainer

    settings = PRESETS[preset]
    out = Path(out_dir)
    started = time.perf_counter()
    data = out / "data"
    if not (data / "manifest.json").is_file():
        generate_suite(data, seed=seed, sizes=settings["sizes"], overwrite=True)
    init = out / "init"
    if not (init / "config.json").is_file():
        build_nano_init(init, _corpus(data / "train.jsonl"), seed=seed)
    test = load_split(data / "test.jsonl", settings["eval_limit"])
    chance = chance_accuracy(load_split(data / "train.jsonl"), test)
    previous, report = init, {"preset": preset, "seed": seed, "stages": [], "chance": chance}
    for stage, recipe_name, mixture in STAGES:
        if stages is not None and stage not in stages:
            continue
        overrides = [f"init={{checkpoint: {previous.resolve()}}}", f"data.mixture={(data / 'mixtures' / f'{mixture}.yaml').resolve()}",
                     f"output_dir={(out / stage).resolve()}", f"seed={seed}",
                     *settings.get("common", []), *settings["overrides"].get(stage, [])]
        result = Trainer(load_recipe(recipe_name, overrides), device="cpu").run()
        previous = out / stage / "final"
        vlm = load(previous, device="cpu", dtype=torch.float32)
        scores = evaluate(vlm, test, max_new_tokens=96)
        losses = _losses(out / stage)
        report["stages"].append({
            "stage": stage, "steps": result.steps, "first_loss": losses[0], "last_loss": losses[-1],
            "train_seconds": result.summary["train_seconds"], "accuracy": scores.per_task,
            "overall": scores.overall, "perception": perception_accuracy(scores.per_task),
            "chance": weighted_chance(scores.per_task, chance),
        })
        (out / f"samples-{stage}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores.samples))
    report["wall_seconds"] = time.perf_counter() - started
    report["final_model"] = str(previous)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    stages = report["stages"]
    lines = [f"# Nano SAIL-VL2 ladder ({report['preset']}, seed {report['seed']})", "",
             f"Wall time: {report['wall_seconds'] / 60:.1f} min. Final model: `{report['final_model']}`.", "",
             "| stage | steps | loss first -> last | train s | held-out accuracy | chance | perception tasks |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for s in stages:
        lines.append(f"| {s['stage']} | {s['steps']} | {s['first_loss']:.3f} -> {s['last_loss']:.3f} | "
                     f"{s['train_seconds']:.0f} | {s['overall']:.1%} | {s.get('chance', 0.0):.1%} | "
                     f"{s.get('perception', 0.0):.1%} |")
    tasks = sorted({task for s in stages for task in s["accuracy"]})
    lines += ["", "Per-task held-out accuracy after each stage (loss curves: `<stage>/loss.png`):", "",
              "| task | n | chance | " + " | ".join(s["stage"] for s in stages) + " |",
              "|---|---:|---:|" + "---:|" * len(stages)]
    for task in tasks:
        n = next(int(s["accuracy"][task]["n"]) for s in stages if task in s["accuracy"])
        cells = [f"{s['accuracy'][task]['accuracy']:.1%}" if task in s["accuracy"] else "-" for s in stages]
        marker = " (perception)" if task.startswith(PERCEPTION_PREFIXES) else ""
        chance = report.get("chance", {}).get(task)
        chance_cell = "-" if chance is None else f"{chance:.1%}"
        lines.append(f"| {task}{marker} | {n} | {chance_cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def clean(out_dir: str | Path) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
