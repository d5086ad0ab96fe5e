"""The nano ladder: generate the task suite, train a nano SAIL-VL2 from scratch through the stage ladder,
evaluate after every stage, write a report.

    sailvl2 nano                        # full run (`make nano`): the shipped default model comes from this
    sailvl2 nano --preset smoke         # CI-sized: a few steps per stage, a small held-out set
    sailvl2 nano --out runs/nano --seed 0

Stages: vision-language alignment -> multi-task pre-training -> SFT -> LongCoT SFT (recipes in
sailvl2/recipes/nano_*.yaml; the RL stage arrives with the RL issue). The alignment stage is dense
(nano/dense.py): the ViT and projector learn, with the LLM frozen, to turn each image token into the LLM's own
word embeddings of what the scene description says is in its cell (kind, colour, size, row, column), as the
paper's alignment stage trains the vision side into a frozen LLM's space on captions. Next-token training on the
caption texts (the `nano_align` recipe) is not in the ladder: measured, any of it, before or inside multi-task
training, breaks the later read-out of one shape's attributes (docs/nano-sessions.md, session 6). Each stage
starts from the previous one's export. The multi-task and SFT stages train on the suite's multi-turn dialogues
(one image, several questions); the held-out evaluation asks one question per image, as the shipped demo does.
Outputs in `--out`: data/ (the suite), init/, one run folder per stage, report.md, report.json.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .._malloc import active_allocator
from ..errors import ConfigError
from .dense import DenseConfig, train_dense
from .evaluate import PERCEPTION_PREFIXES, chance_accuracy, evaluate, load_split, perception_accuracy, weighted_chance
from .model import NANO_IMAGE_SIZE, NANO_VISION, build_nano_init

NANO_PATCH = NANO_VISION["patch_size"]
TEXT_LAYOUTS = ("free", "slots")

DENSE = "dense"  # the recipe name of the vision stage, which trains outside the LM trainer (nano/dense.py)
STAGES = (  # (stage, recipe, mixture file written by the suite generator)
    ("align", DENSE, None),
    ("multitask", "nano_multitask", "multitask"),
    ("sft", "nano_sft", "sft"),
    ("longcot", "nano_longcot", "cot"),
)
PRESETS: dict[str, dict[str, Any]] = {
    # Run 58's settings (docs/nano-sessions.md, sessions 13-21): text, charts and tables one character per ViT
    # patch; 8000 extra number, 8000 letter-string, 8000 chart read-out and 8000 shape-scene images (the
    # mixtures' weights are in synth/mixtures.py, the stages' steps in the nano_* recipes, focus boxes in
    # synth/tasks.py); the vision stage also learns each shape's box and its digits. The shipped model
    # (sailvl2/assets/nano) comes from it.
    "full": {"sizes": {"train": 20000, "val": 500, "test": 1000}, "eval_limit": 600, "overrides": {},
             "dense": DenseConfig(steps=1500, word_aligned=True, box_weight=4.0, box_digit_weight=1.0),
             "text_layout": "slots", "chart_layout": "slots", "number_images": 8000, "letter_images": 8000,
             "chart_images": 8000, "shape_images": 8000},
    # CI-sized: the free layout and no extra images keep it within about 2 minutes.
    "smoke": {"sizes": {"train": 1200, "val": 40, "test": 160}, "eval_limit": 160,
              "text_layout": "free", "chart_layout": "free", "number_images": 0, "letter_images": 0,
              "chart_images": 0, "shape_images": 0,
              "dense": DenseConfig(steps=300, word_aligned=True, eval_images=64),
              "overrides": {"multitask": ["max_steps=160"],
                            "sft": ["max_steps=200"], "longcot": ["max_steps=12"]},
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


def loss_ends(losses: list[float]) -> tuple[float, float]:
    """Mean loss over the first and over the last tenth of a stage's steps (at least one step each): a
    packed row's loss depends on which samples it holds, so two single steps can be ordered either way
    even when the stage learns (run 7's SFT: 0.387 at step 1, 0.622 at its last step, 0.573 -> 0.538 by tenths)."""
    window = max(1, len(losses) // 10)
    return sum(losses[:window]) / window, sum(losses[-window:]) / window


def run_ladder(out_dir: str | Path = "runs/nano", preset: str = "full", seed: int = 0,
               stages: tuple[str, ...] | None = None, text_layout: str | None = None,
               number_images: int | None = None, letter_images: int | None = None,
               chart_layout: str | None = None, chart_images: int | None = None,
               shape_images: int | None = None) -> dict[str, Any]:
    """Run the ladder into ``out_dir``; the suite settings left at None come from the preset (the full preset's
    reproduce the shipped model, run 58). ``text_layout="slots"`` draws the suite's text one character per ViT
    patch and trains the dense stage's character head per patch (docs/nano-sessions.md, session 9).
    ``number_images`` > 0 adds that many number-reading images to the train split (the ``ocr-numbers`` stream of
    the multi-task and SFT mixtures; session 11), ``letter_images`` > 0 random letter strings likewise
    (``ocr-letters``: held-out words are never training words, so reading them needs spelling; session 12).
    ``chart_layout="slots"`` draws the charts and tables that way too (synth/charts.py; session 13), and
    ``chart_images`` > 0 adds that many charts and tables asked for one value or cell, or which category or row
    is largest (``charts-read``; session 14), ``shape_images`` > 0 shape scenes asked the counts and spatial
    questions (``shapes-more``; session 21)."""
    settings = PRESETS.get(preset)
    if settings is None:
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    text_layout = settings["text_layout"] if text_layout is None else text_layout
    chart_layout = settings["chart_layout"] if chart_layout is None else chart_layout
    number_images = settings["number_images"] if number_images is None else number_images
    letter_images = settings["letter_images"] if letter_images is None else letter_images
    chart_images = settings["chart_images"] if chart_images is None else chart_images
    shape_images = settings["shape_images"] if shape_images is None else shape_images
    for argument, layout in (("text_layout", text_layout), ("chart_layout", chart_layout)):
        if layout not in TEXT_LAYOUTS:
            raise ConfigError(f"{argument} must be one of {TEXT_LAYOUTS}, got {layout!r}")
    for argument, count in (("number_images", number_images), ("letter_images", letter_images),
                            ("chart_images", chart_images), ("shape_images", shape_images)):
        if count < 0:
            raise ConfigError(f"{argument} must be >= 0, got {count}")
    from ..api import load
    from ..synth import CHART_READ_VERSION, FOCUS_VERSION, generate_suite
    from ..training.recipe import load_recipe
    from ..training.trainer import Trainer

    out = Path(out_dir)
    started = time.perf_counter()
    data = out / "data"
    text_slot = NANO_PATCH if text_layout == "slots" else 0
    chart_slot = NANO_PATCH if chart_layout == "slots" else 0
    wanted = {"seed": seed, "text_slot": text_slot, "chart_slot": chart_slot,
              "number_images": number_images, "letter_images": letter_images, "chart_images": chart_images,
              "shape_images": shape_images,
              "train_records": settings["sizes"]["train"],
              "chart_read_version": CHART_READ_VERSION if chart_images else 0,
              "focus_version": FOCUS_VERSION}
    if (data / "manifest.json").is_file():  # a rerun into the same folder reuses its suite, if it is the same one
        manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
        found = {key: manifest.get(key, 0) for key in wanted}
        found["train_records"] = manifest.get("splits", {}).get("train", {}).get("records")
        differing = ", ".join(f"{key} {found[key]} (this run: {wanted[key]})" for key in wanted
                              if found[key] != wanted[key])
        if differing:
            raise ConfigError(f"{data} holds a suite generated with other settings: {differing}; "
                              "use a new output folder")
    else:
        generate_suite(data, seed=seed, sizes=settings["sizes"], image_size=NANO_IMAGE_SIZE, overwrite=True,
                       text_slot=text_slot, number_images=number_images, letter_images=letter_images,
                       chart_slot=chart_slot, chart_images=chart_images, shape_images=shape_images)
    init = out / "init"
    if not (init / "config.json").is_file():
        build_nano_init(init, _corpus(data / "train.jsonl"), seed=seed)
    test = load_split(data / "test.jsonl", settings["eval_limit"])
    chance = chance_accuracy(load_split(data / "train.jsonl"), test)
    previous, report = init, {"preset": preset, "seed": seed, "stages": [], "chance": chance}
    if text_layout != "free":
        report["text_layout"] = text_layout
    if chart_layout != "free":
        report["chart_layout"] = chart_layout
    if number_images:
        report["number_images"] = number_images
    if letter_images:
        report["letter_images"] = letter_images
    if chart_images:
        report["chart_images"] = chart_images
    if shape_images:
        report["shape_images"] = shape_images
    for stage, recipe_name, mixture in STAGES:
        if stages is not None and stage not in stages:
            continue
        if recipe_name == DENSE:
            dense = replace(settings["dense"], seed=seed)
            # Per-patch characters; the images with text at half of each batch, twice the steps.
            if "slots" in (text_layout, chart_layout):
                dense = replace(dense, char_target="slots", text_share=0.5, steps=2 * dense.steps)
            summary = train_dense(previous, data, out / stage, dense)
            previous = out / stage / "final"
            first, last = loss_ends(_losses(out / stage))
            report["stages"].append({"stage": stage, "steps": summary["steps"], "first_loss": first,
                                     "last_loss": last, "train_seconds": summary["train_seconds"],
                                     "dense_accuracy": summary["heldout_accuracy"]})
            continue
        overrides = [f"init={{checkpoint: {previous.resolve()}}}",
                     f"data.mixture={(data / 'mixtures' / f'{mixture}.yaml').resolve()}",
                     f"output_dir={(out / stage).resolve()}", f"seed={seed}",
                     *settings.get("common", []), *settings["overrides"].get(stage, [])]
        result = Trainer(load_recipe(recipe_name, overrides), device="cpu").run()
        previous = out / stage / "final"
        vlm = load(previous, device="cpu", dtype=torch.float32)
        scores = evaluate(vlm, test, max_new_tokens=96)
        first, last = loss_ends(_losses(out / stage))
        report["stages"].append({
            "stage": stage, "steps": result.steps, "first_loss": first, "last_loss": last,
            "train_seconds": result.summary["train_seconds"], "accuracy": scores.per_task,
            "overall": scores.overall, "perception": perception_accuracy(scores.per_task),
            "chance": weighted_chance(scores.per_task, chance),
        })
        (out / f"samples-{stage}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores.samples))
    report["wall_seconds"] = time.perf_counter() - started
    report["allocator"] = active_allocator()  # the wall time depends on it (sailvl2/_malloc.py)
    report["final_model"] = str(previous.relative_to(out))  # relative: the run folder can move
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    stages = report["stages"]
    allocator = report.get("allocator", "not recorded")  # reports before session 19 lack it
    lines = [f"# Nano SAIL-VL2 ladder ({report['preset']}, seed {report['seed']})", "",
             f"Wall time: {report['wall_seconds'] / 60:.1f} min (allocator: {allocator}). "
             f"Final model: `{report['final_model']}`.", "",
             "| stage | steps | loss, first -> last tenth of the steps | train s | held-out accuracy | chance "
             "| perception tasks |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for s in stages:
        if "dense_accuracy" in s:  # the vision stage has no answers to score, only its per-token read-outs
            scores = ", ".join(f"{k} {v:.1%}" for k, v in s["dense_accuracy"].items())
            lines.append(f"| {s['stage']} | {s['steps']} | {s['first_loss']:.3f} -> {s['last_loss']:.3f} | "
                         f"{s['train_seconds']:.0f} | per image token: {scores} | - | - |")
            continue
        lines.append(f"| {s['stage']} | {s['steps']} | {s['first_loss']:.3f} -> {s['last_loss']:.3f} | "
                     f"{s['train_seconds']:.0f} | {s['overall']:.1%} | {s.get('chance', 0.0):.1%} | "
                     f"{s.get('perception', 0.0):.1%} |")
    stages = [s for s in stages if "accuracy" in s]
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
