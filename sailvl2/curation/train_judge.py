"""Train caption judges (PAPER.md 4.1) on the nano task suite and measure them on held-out pairs.

    python -m sailvl2.curation.train_judge --out runs/judge --init DIR            # full preset
    python -m sailvl2.curation.train_judge --out /tmp/judge --preset smoke          # seconds, tiny random model

Steps: generate the task suite (``captions`` and ``focus`` families) -> judge data (``judge_data``: true,
vague, incomplete and corrupted captions with ITA scores, uniform over classes) -> fine-tune one model per
judge with the ``judge_yesno`` / ``judge_score`` recipes (each export gets a ``judge.json``) -> ask each
judge about the held-out pairs (``LocalJudge``) -> run a curation pipeline whose ``judge`` stage uses the
trained judges on the held-out captions -> ``report.json`` and ``report.md``.

Precision / recall (PAPER.md 4.1, Table 2 reports them without defining the positive class): we give both
readings. *keep*: of the pairs the judge keeps (Yes, or score >= 3), the share that are good (ITA >= 3), and
of the good pairs the share kept; *drop*: the same for bad pairs. An unreadable reply counts as a drop, as in
the stage's default. ``--init`` is the model to fine-tune (default: the shipped nano model; the smoke
preset builds a tiny random one). Training runs on ``--threads`` CPU threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..configuration import atomic_write_text
from .judge_data import CORRUPTIONS, build_judge_data
from .judges import JUDGE_CONFIG, JudgeRequest, LocalJudge
from .types import CurationError

__all__ = ["PRESETS", "RECIPES", "binary_metrics", "evaluate_judge", "main", "markdown", "train_judges"]

RECIPES = {"ita_yesno": "judge_yesno", "ita_score": "judge_score"}
PRESETS: dict[str, dict[str, Any]] = {
    # The nano model on one CPU thread: ~26 one-shape caption samples per 2048-token row, ~1 step/s, so
    # 300 steps are ~7800 samples in 4-5 minutes per judge (measured: docs/curation_judges.md).
    "full": {"sizes": {"train": 16000, "val": 2000, "test": 2000}, "families": {"focus": 1},
             "corruptions": ("colour",), "per_class_train": 2000, "per_class_heldout": 200,
             "overrides": ["max_steps=300"]},
    # Multi-shape scenes (the `captions` family) with every corruption: for a model that sees shape kinds
    # and counts (the nano model of run 9 on, docs/curation_judges.md).
    "scenes": {"sizes": {"train": 16000, "val": 2000, "test": 2000}, "families": {"captions": 1},
               "corruptions": ("colour", "kind", "count"), "per_class_train": 2000, "per_class_heldout": 200,
               "overrides": ["max_steps=300"]},
    # The Yes/No judge checks a brief caption fact by fact in a <think> block before answering (judge_data
    # `verification_lines`): the count, then every named shape (docs/curation_judges.md, session 7).
    "verify": {"sizes": {"train": 16000, "val": 1000, "test": 1000}, "families": {"captions": 1},
               "corruptions": ("colour", "kind", "count"), "per_class_train": 4000, "per_class_heldout": 200,
               "verify": True, "judges": ("ita_yesno",), "overrides": ["max_steps=2400"]},
    "smoke": {"sizes": {"train": 240, "test": 160}, "families": {"captions": 1, "focus": 2},
              "per_class_train": 12, "per_class_heldout": 4,
              "overrides": ["max_steps=2", "packing.max_seq_len=1024", "schedule.warmup_steps=1"]},
}
STAGE_MIN = 3  # the filter rule's ITA threshold (PAPER.md 4.1): score >= 3 keeps
VERIFY_REPLY_TOKENS = 160  # a verifying judge's checks: 7 lines of up to ~12 tokens for a 6-shape caption


def binary_metrics(good: Sequence[bool], kept: Sequence[bool]) -> dict[str, Any]:
    """Precision / recall of the keep decision and of the drop decision against the truth ``good``."""
    pairs = list(zip(good, kept))
    counts = Counter(pairs)
    tp, fp, fn, tn = counts[(True, True)], counts[(False, True)], counts[(True, False)], counts[(False, False)]
    ratio = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
    return {"n": len(pairs), "accuracy": ratio(tp + tn, len(pairs)),
            "keep": {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)},
            "drop": {"precision": ratio(tn, tn + fn), "recall": ratio(tn, tn + fp)},
            "counts": {"good_kept": tp, "bad_kept": fp, "good_dropped": fn, "bad_dropped": tn}}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def evaluate_judge(model_dir: str | Path, records: Sequence[dict[str, Any]], judge: str, image_root: str | Path,
                   batch_size: int = 16) -> dict[str, Any]:
    """Ask the trained ``judge`` (``ita_yesno`` / ``ita_score``) about held-out judge records; metrics."""
    local = LocalJudge(str(model_dir), batch_size=batch_size, max_new_tokens=4)
    requests = [JudgeRequest((str(Path(image_root) / r["image"]),), r["judge"]["caption"]) for r in records]
    started = time.perf_counter()
    verdicts = local.ask(judge, requests)
    seconds = time.perf_counter() - started
    good = [r["judge"]["score"] >= STAGE_MIN for r in records]
    if judge == "ita_score":
        kept = [v.value is not None and v.value >= STAGE_MIN for v in verdicts]
    else:
        kept = [v.value is True for v in verdicts]
    metrics = binary_metrics(good, kept)
    by_variant: dict[str, list[bool]] = defaultdict(list)
    for record, keep in zip(records, kept):
        by_variant[record["judge"]["variant"]].append(keep)
    metrics["kept_share_by_variant"] = {k: round(sum(v) / len(v), 4) for k, v in sorted(by_variant.items())}
    metrics["unparseable"] = local.unparseable[judge]
    metrics["eval_seconds"] = round(seconds, 1)
    if judge == "ita_score":
        truth = [r["judge"]["score"] for r in records]
        metrics["exact_accuracy"] = round(sum(t == v.value for t, v in zip(truth, verdicts)) / len(records), 4)
        confusion = Counter(f"{t}->{v.value}" for t, v in zip(truth, verdicts))
        metrics["confusion"] = dict(sorted(confusion.items()))
    metrics["examples"] = [{"caption": r["judge"]["caption"], "variant": r["judge"]["variant"],
                            "truth": r["conversations"][-1]["value"], "reply": v.reply}
                           for r, v in list(zip(records, verdicts))[:8]]
    return metrics


def _pipeline_check(out: Path, data: Path, finals: dict[str, Path]) -> dict[str, Any]:
    """The trained judges as the ``judge`` stage of a curation pipeline over the held-out score pairs."""
    from .config import PipelineConfig
    from .runner import run_pipeline

    records = _read_jsonl(data / "heldout-ita_score.jsonl")
    rows = [{"id": r["id"], "image": str((data / r["image"]).resolve()),
             "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                               {"from": "gpt", "value": r["judge"]["caption"]}]} for r in records]
    source = out / "pipeline" / "captions.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    stage = {"stage": "judge", "backend": "local", "judges": sorted(finals),
             "models": {name: str(path) for name, path in finals.items()}, "batch_size": 16, "max_new_tokens": 4}
    config = PipelineConfig.from_dict({"inputs": [str(source)], "output": str(out / "pipeline" / "curated"),
                                       "stages": [stage], "contact_sheet": 0})
    result = run_pipeline(config, workers=0, resume=False)
    kept_ids = {json.loads(line)["id"] for path in result.data_files
                for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    good = [r["judge"]["score"] >= STAGE_MIN for r in records]
    return {"stage": stage, **binary_metrics(good, [r["id"] in kept_ids for r in records])}


def _tile_size(checkpoint: Path) -> int:
    """The vision tile size of a release-layout checkpoint (its config.json), 224 if it does not say."""
    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CurationError(f"cannot read {checkpoint / 'config.json'}: {error}") from error
    return int(config.get("vision_config", {}).get("image_size") or config.get("force_image_size") or 224)


def _default_init(out: Path, preset: str, seed: int) -> Path:
    from ..demo import SHIPPED_MODEL_DIR

    if (SHIPPED_MODEL_DIR / "config.json").is_file():
        return SHIPPED_MODEL_DIR
    if preset != "smoke":
        raise CurationError("no shipped nano model in this checkout: pass --init DIR (a SAIL-VL2 checkpoint; "
                            "one that sees colours, e.g. the nano ladder's runs/nano/warmup/final)")
    from ..tiny import build_random_checkpoint

    init = out / "init"
    if not (init / "config.json").is_file():
        build_random_checkpoint(init, seed=seed)
    return init


def train_judges(out_dir: str | Path, preset: str = "full", init: str | Path | None = None, seed: int = 0,
                 judges: Sequence[str] | None = None, threads: int = 1,
                 overrides: Sequence[str] = (), pipeline: bool = True,
                 corruptions: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every step (module docstring) into ``out_dir``; returns the report (also written there)."""
    import torch

    from ..synth import generate_suite
    from ..training.recipe import load_recipe
    from ..training.trainer import Trainer

    if preset not in PRESETS:
        raise CurationError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    judges = tuple(judges or PRESETS[preset].get("judges", ("ita_yesno", "ita_score")))
    unknown = sorted(set(judges) - set(RECIPES))
    if unknown or not judges:
        raise CurationError(f"judges must be some of {sorted(RECIPES)}, got {list(judges)}")
    settings, out = PRESETS[preset], Path(out_dir)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    suite, data = out / "suite", out / "data"
    init_dir = Path(init) if init is not None else _default_init(out, preset, seed)
    init_label = (str(init) if init is not None
                  else "random (smoke)" if init_dir == out / "init" else "shipped nano model")
    if not (suite / "manifest.json").is_file():
        # Scenes at the judge model's own tile size: the nano model's 168-px tile puts one image token on
        # each cell of the scenes' shape grid (sailvl2/nano/model.py); resampled scenes would straddle tokens.
        generate_suite(suite, seed=seed, sizes=settings["sizes"], families=settings["families"], workers=1,
                       image_size=_tile_size(init_dir), overwrite=True)
    manifest = build_judge_data(suite, data, per_class_train=settings["per_class_train"],
                                per_class_heldout=settings["per_class_heldout"], seed=seed,
                                families=tuple(settings["families"]),
                                corruptions=tuple(corruptions or settings.get("corruptions", CORRUPTIONS)),
                                verify=settings.get("verify", False))
    report: dict[str, Any] = {"preset": preset, "seed": seed, "init": init_label, "threads": threads,
                              "families": manifest["families"], "corruptions": manifest["corruptions"],
                              "overrides": list(overrides), "data": manifest["files"], "judges": {}}
    finals: dict[str, Path] = {}
    for judge in judges:
        recipe = load_recipe(RECIPES[judge], [
            f"init={{checkpoint: {init_dir.resolve()}}}", f"data.mixture={(data / f'mixture-{judge}.yaml').resolve()}",
            f"output_dir={(out / judge).resolve()}", f"seed={seed}", *settings["overrides"], *overrides])
        result = Trainer(recipe, device="cpu").run()
        final = out / judge / "final"
        # Atomic, so a judge folder never holds half a judge.json (LocalJudge reads it on load). "init" is
        # provenance only: the path as the user gave it, or which default was used, never a machine's absolute
        # site-packages path that would not mean anything once the judge is copied elsewhere.
        atomic_write_text(final / JUDGE_CONFIG, json.dumps(
            {"judge": judge, "prompt_style": manifest["prompt_style"], "recipe": RECIPES[judge],
             "init": init_label, **({"max_new_tokens": VERIFY_REPLY_TOKENS} if manifest["verify"] else {})},
            indent=2) + "\n")
        finals[judge] = final
        metrics = evaluate_judge(final, _read_jsonl(data / f"heldout-{judge}.jsonl"), judge, data)
        report["judges"][judge] = {"steps": result.steps, "train_seconds": round(result.summary["train_seconds"], 1),
                                   "samples_seen": result.summary["samples_seen"],
                                   "first_loss": result.losses[0] if result.losses else None,
                                   "last_loss": result.summary["final_loss"], "model": str(final), **metrics}
    if pipeline:
        report["pipeline"] = _pipeline_check(out, data, finals)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown(report))
    return report


def _pr(block: dict[str, Any]) -> str:
    show = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    return (f"{show(block['keep']['precision'])} | {show(block['keep']['recall'])} | "
            f"{show(block['drop']['precision'])} | {show(block['drop']['recall'])}")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    lines = [f"# Caption judges (preset {report['preset']}, seed {report['seed']})", "",
             f"Init: `{report['init']}`; {report['threads']} CPU thread(s); wall time {report['wall_seconds']} s.", "",
             "| judge | steps | train s | samples | loss first -> last | held-out n | keep P | keep R | drop P | "
             "drop R | unparseable |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, j in report["judges"].items():
        first = "-" if j["first_loss"] is None else f"{j['first_loss']:.3f}"
        last = "-" if j["last_loss"] is None else f"{j['last_loss']:.3f}"
        lines.append(f"| {name} | {j['steps']} | {j['train_seconds']} | {j['samples_seen']} | {first} -> {last} | "
                     f"{j['n']} | {_pr(j)} | {j['unparseable']} |")
    lines += ["", "Share of held-out pairs kept, by caption variant (true captions should be kept, the "
              "corruptions dropped):", ""]
    for name, j in report["judges"].items():
        shares = ", ".join(f"{k} {v:.2f}" for k, v in j["kept_share_by_variant"].items())
        lines.append(f"- {name}: {shares}" + (f"; exact score accuracy {j['exact_accuracy']:.3f}"
                                               if "exact_accuracy" in j else ""))
    if "pipeline" in report:
        p = report["pipeline"]
        lines += ["", f"Pipeline check (judge stage, judges {p['stage']['judges']}, over {p['n']} held-out "
                  f"captions): keep P / R / drop P / R = {_pr(p).replace(' |', ' /')}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m sailvl2.curation.train_judge", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (suite, data, runs, report)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--init", default=None, help="checkpoint to fine-tune (default: the shipped nano model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--judges", default=None, help="comma-separated: ita_yesno, ita_score (default: the preset's, "
                        "else both)")
    parser.add_argument("--corruptions", default=None, help=f"comma-separated, some of {','.join(CORRUPTIONS)} "
                        "(default: the preset's)")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the curation-pipeline check")
    parser.add_argument("overrides", nargs="*", help="recipe key=value overrides for every judge")
    args = parser.parse_args(argv)
    judges = tuple(args.judges.split(",")) if args.judges else None
    report = train_judges(args.out, args.preset, args.init, args.seed, judges, args.threads,
                          args.overrides, not args.no_pipeline,
                          tuple(args.corruptions.split(",")) if args.corruptions else None)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
