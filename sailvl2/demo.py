"""`make demo`: chat about bundled images with the default model, end to end on the CPU, offline.

    python -m sailvl2.demo [--model DIR] [--out DIR]

The default model is the nano SAIL-VL2 shipped in `sailvl2/assets/nano/`: trained from scratch by our own
pipeline (`sailvl2 nano`, docs/nano.md) on the procedural task suite, and packaged by
`python -m sailvl2.nano.ship`. The demo asks it the bundled example questions (held-out test records of its
suite), prints question, answer and ground truth side by side, streams one answer, and writes the grounding
answers' boxes (predicted in red, true in green) to `OUT/boxes.png`.

A checkout without the shipped model (or `SAILVL2_DEFAULT=random`) falls back to a small RANDOM-weight model
built into `$SAILVL2_HOME` (default `~/.cache/sailvl2`): its answers are noise, but every step runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

RANDOM_DEMO_NAME = "random-demo-v1"
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "nano"


def _home() -> Path:
    return Path(os.environ.get("SAILVL2_HOME", Path.home() / ".cache" / "sailvl2"))


def default_model_dir() -> Path:
    """The model used when none is given: the shipped nano model, else a random-weight demo model."""
    if os.environ.get("SAILVL2_DEFAULT") != "random" and (SHIPPED_MODEL_DIR / "config.json").is_file():
        return SHIPPED_MODEL_DIR
    directory = _home() / RANDOM_DEMO_NAME
    if not (directory / "config.json").is_file():
        from .tiny import build_random_checkpoint

        print(f"[sailvl2] building a small random-weight demo model in {directory} "
              "(no shipped nano model in this checkout)", file=sys.stderr)
        staging = directory.with_name(directory.name + f".tmp-{os.getpid()}")
        build_random_checkpoint(staging, seed=0)
        if directory.exists():  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.replace(directory)
    return directory


def example_records(model_dir: Path) -> list[dict[str, Any]]:
    """The bundled example questions of a shipped model (image paths made absolute); [] when it has none."""
    path = model_dir / "examples.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for record in records:
        images = record["image"] if isinstance(record["image"], list) else [record["image"]]
        record["image"] = [str(model_dir / image) for image in images]
    return records


def _fallback_records(out: Path) -> list[dict[str, Any]]:
    """Two drawn scenes and questions for the random-weight model (no ground truth)."""
    scene = Image.new("RGB", (448, 448), "white")
    draw = ImageDraw.Draw(scene)
    draw.rectangle((40, 60, 160, 180), fill=(220, 30, 30))
    draw.ellipse((240, 220, 380, 360), fill=(30, 80, 220))
    scene.save(out / "shapes.png")
    question = "<image>\nLocate the red square. Answer with <ref> and <box>."
    return [{"task": "captions", "image": [str(out / "shapes.png")], "answer": None,
             "conversations": [{"from": "human", "value": "<image>\nDescribe the image."}]},
            {"task": "grounding/locate", "image": [str(out / "shapes.png")], "answer": None,
             "conversations": [{"from": "human", "value": question}]}]


def _question(record: dict[str, Any]) -> str:
    return record["conversations"][0]["value"]


def _short(text: Any, width: int) -> str:
    text = " ".join(str(text).replace("<image>", "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _draw_grounding(records: list[dict[str, Any]], responses: list[Any], path: Path) -> int:
    """One panel per grounding question: predicted boxes in red, the true box in green."""
    from .answers import draw_boxes

    panels = []
    for record, response in zip(records, responses):
        if not record["task"].startswith("grounding/"):
            continue
        image = Image.open(record["image"][0]).convert("RGB")
        truth = record.get("answer")
        if isinstance(truth, list) and len(truth) == 4:
            scale = (image.width / 1000, image.height / 1000, image.width / 1000, image.height / 1000)
            image = draw_boxes(image, [[v * s for v, s in zip(truth, scale)]], color=(0, 160, 60))
        panels.append(draw_boxes(image, response.boxes, color=(220, 0, 0)))
    if not panels:
        return 0
    sheet = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width
    sheet.save(path)
    return len(panels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the shipped nano model)")
    parser.add_argument("--out", default="out/demo", help="where the boxes PNG and the example images go")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)

    import sailvl2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model) if args.model else default_model_dir()
    started = time.perf_counter()
    vlm = sailvl2.load(model_dir)
    print(f"loaded {model_dir} on {vlm.device} in {time.perf_counter() - started:.1f}s")
    records = example_records(model_dir)
    if not records:
        print("NOTE: no bundled examples with this model (random weights?): answers are not checked.")
        records = _fallback_records(out)
    for record in records:
        for image in record["image"]:
            if Path(image).parent != out:
                shutil.copyfile(image, out / Path(image).name)

    print(f"\n[batch_chat] {len(records)} questions about the bundled images, one batch at a time")
    started = time.perf_counter()
    responses = vlm.batch_chat([_question(r) for r in records], images=[r["image"] for r in records],
                               max_new_tokens=args.max_new_tokens, progress=False)
    from .nano.evaluate import score

    print(f"{'task':<22} {'question':<46} {'answer':<34} {'truth':<24} ok")
    right = 0
    for record, response in zip(records, responses):
        truth = record.get("answer")
        ok = score(record, response.text) if truth is not None else None
        right += bool(ok)
        mark = "-" if ok is None else ("yes" if ok else "no")
        print(f"{_short(record['task'], 22):<22} {_short(_question(record), 46):<46} "
              f"{_short(response.text, 34):<34} {_short(truth, 24):<24} {mark}")
    checked = sum(r.get("answer") is not None for r in records)
    print(f"({time.perf_counter() - started:.1f}s; {right}/{checked} right)")

    # A multi-turn chat about a shapes scene, the second answer streamed (the nano model trains on dialogues;
    # it does not write captions, docs/nano.md).
    index = next((i for i, r in enumerate(records) if r["task"].startswith("shapes/")), 0)
    first, question = records[index], _question(records[index])
    follow_up = "How many shapes are there?"
    print(f"\n[streamed chat] {Path(first['image'][0]).name}\nQ: {_short(question, 80)}\n"
          f"A: {responses[index].text}\nQ: {follow_up}\nA: ", end="")
    for piece in vlm.chat(follow_up, images=first["image"], stream=True, max_new_tokens=args.max_new_tokens,
                          history=[(question, responses[index].text)]):
        print(piece, end="", flush=True)
    print()

    drawn = _draw_grounding(records, responses, out / "boxes.png")
    print(f"\n[grounding] {drawn} grounding answer(s) drawn on {out / 'boxes.png'} (red: predicted, green: true)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
