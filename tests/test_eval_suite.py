"""Our task suite as a benchmark TSV: export of hand-made suite records (prompts, images and answers come back
exactly), the suite's spec and scoring (hand-scored replies), and end to end on the shipped nano model: the
runner on the exported held-out records gives the same replies and accuracy as `nano.evaluate.evaluate`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from sailvl2.errors import DatasetError
from sailvl2.evaluation.datasets import load_tsv
from sailvl2.evaluation.prompts import build_prompt
from sailvl2.evaluation.runner import ModelGenerator, RunSettings, resolve_spec, run_eval
from sailvl2.evaluation.scoring import score_benchmark
from sailvl2.evaluation.suite import export_suite, is_suite, suite_record, suite_spec

THINK = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{}."
)


def _split(tmp_path: Path) -> Path:
    """Four suite records in the nano layout (images relative to the split's folder)."""
    (tmp_path / "img").mkdir()
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255)), ("c", (0, 200, 0))):
        Image.new("RGB", (64, 48), colour).save(tmp_path / "img" / f"{name}.png")
    records = [
        {"id": "r0", "image": ["img/a.png"], "task": "shapes/colour", "kind": "direct", "answer": "red",
         "conversations": [{"from": "human", "value": "<image>\nWhat colour is the square?"},
                           {"from": "gpt", "value": "red"}]},
        {"id": "r1", "image": ["img/a.png", "img/b.png"], "task": "multi_image/count", "kind": "direct",
         "answer": "2", "conversations": [{"from": "human", "value": "Image-1: <image>\nImage-2: <image>\nHow many?"},
                                          {"from": "gpt", "value": "2"}]},
        {"id": "r2", "image": ["img/c.png"], "task": "grounding/locate", "kind": "direct",
         "answer": [100, 100, 300, 300],
         "conversations": [{"from": "human", "value": "<image>\nWhere is the green star? Answer with a box."},
                           {"from": "gpt", "value": "<ref>green star</ref><box>[[100, 100, 300, 300]]</box>"}]},
        {"id": "r3", "image": "img/b.png", "task": "reasoning/count_sum", "kind": "cot", "answer": "3",
         "conversations": [{"from": "human", "value": "<image>\nHow many in total?" + THINK},
                           {"from": "gpt", "value": "<think>1 + 2 = 3</think>\n\\boxed{3}"}]},
    ]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_export_round_trip_reproduces_prompts_images_and_answers(tmp_path):
    split = _split(tmp_path)
    tsv = export_suite(split, tmp_path / "SAILVL2-Suite_test.tsv")
    loaded = load_tsv(tsv)
    assert loaded.skipped == {} and [item.index for item in loaded.items] == ["r0", "r1", "r2", "r3"]
    spec = resolve_spec(loaded, RunSettings())
    records = [json.loads(line) for line in split.read_text().splitlines()]
    for item, record in zip(loaded.items, records):
        prepared = build_prompt(item, spec)
        assert prepared.text == record["conversations"][0]["value"]  # exactly the nano question
        files = [record["image"]] if isinstance(record["image"], str) else record["image"]
        assert item.image_data == [(tmp_path / f).read_bytes() for f in files]  # the files' own bytes
        assert prepared.max_num == 1 and prepared.use_msac is False and prepared.max_new_tokens == 96
        assert suite_record(item) == {"id": record["id"], "answer": record["answer"], "task": record["task"],
                                      "kind": record["kind"]}
    assert loaded.items[2].answer == "[100, 100, 300, 300]" and loaded.items[0].category == "shapes/colour"
    assert export_suite(split, tmp_path / "two.tsv", limit=2) and len(load_tsv(tmp_path / "two.tsv")) == 2


def test_suite_names_and_spec():
    assert is_suite("SAILVL2-Suite") and is_suite("sailvl2_suite_heldout") and is_suite("SAILVL2 Suite.v2")
    assert not is_suite("MMStar") and not is_suite("SAILVL2")
    spec = suite_spec("SAILVL2-Suite_x")
    assert spec.name == "SAILVL2-Suite_x" and spec.instruction == "" and spec.kind.value == "short_answer"


def test_suite_scoring_with_hand_scored_replies(tmp_path):
    loaded = load_tsv(export_suite(_split(tmp_path), tmp_path / "SAILVL2-Suite.tsv"))
    spec = resolve_spec(loaded, RunSettings())
    replies = {
        "r0": "It is red.",  # the answer as a word of a short sentence: right
        "r1": "3",  # wrong number
        "r2": "<ref>green star</ref><box>[[100, 100, 300, 250]]</box>",  # IoU 0.75: a hit
        "r3": "<think>1 + 2 = 3</think>\n\\boxed{3}",  # the boxed answer after the thinking: right
    }
    result = score_benchmark(spec, loaded.items, replies)
    assert result.metric == "nano_suite" and result.score == 75.0
    assert [s.score for s in result.items] == [1.0, 0.0, 1.0, 1.0]
    assert result.per_category["multi_image/count"] == {"n": 1, "score": 0.0}
    # Not inside <think>: the reasoning record needs its \boxed{} after the thinking.
    assert score_benchmark(spec, loaded.items[3:], {"r3": "<think>\\boxed{3}"}).score == 0.0


def test_export_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        export_suite(tmp_path / "none.jsonl", tmp_path / "x.tsv")
    split = _split(tmp_path)
    bad = json.loads(split.read_text().splitlines()[0])
    bad["conversations"][0]["value"] = "What colour? <image>"  # the image is not where build_prompt puts it
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(DatasetError, match="cannot reproduce its prompt"):
        export_suite(tmp_path / "bad.jsonl", tmp_path / "x.tsv")
    bad = json.loads(split.read_text().splitlines()[0])
    bad["image"] = ["img/missing.png"]
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(DatasetError, match="missing.png"):
        export_suite(tmp_path / "bad.jsonl", tmp_path / "x.tsv")
    assert not (tmp_path / "x.tsv").exists()


# ------------------------------------------------------------------------------------------------ nano, end to end


def _nano_dir() -> Path:
    """The shipped nano model; SAILVL2_TEST_NANO_DIR may point at another trained nano checkpoint folder with
    the same files (config, weights, heldout.jsonl + heldout/)."""
    from sailvl2.demo import SHIPPED_MODEL_DIR

    directory = Path(os.environ.get("SAILVL2_TEST_NANO_DIR", SHIPPED_MODEL_DIR))
    # The model ships with the package: a missing one is a defect, not a reason to skip.
    assert (directory / "config.json").is_file() and (directory / "heldout.jsonl").is_file(), (
        f"no trained nano model with heldout.jsonl at {directory} (ship one with sailvl2.nano.ship)")
    return directory


def test_runner_on_the_exported_suite_equals_the_nano_evaluation(tmp_path):
    import sailvl2
    from sailvl2.nano.evaluate import evaluate, load_split

    directory = _nano_dir()
    # 32 short-answer records (no reasoning chains, no captions) keep it fast: their answers, grounding boxes
    # included, fit in 32 new tokens. Image paths are made absolute so the subset split can live in tmp_path.
    chosen = []
    for line in (directory / "heldout.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("kind") != "cot" and "captions" not in record["task"] and len(chosen) < 32:
            record["image"] = [str(directory / image) for image in record["image"]]
            chosen.append(json.dumps(record))
    split = tmp_path / "subset.jsonl"
    split.write_text("\n".join(chosen) + "\n", encoding="utf-8")

    vlm = sailvl2.load(directory, device="cpu", dtype=torch.float32)
    report = evaluate(vlm, load_split(split), max_new_tokens=32, batch_size=16)
    tsv = export_suite(split, tmp_path / "SAILVL2-Suite_subset.tsv")
    result = run_eval(tsv, tmp_path / "out", ModelGenerator(vlm, "nano"), RunSettings(batch_size=8, max_new_tokens=32),
                      progress=False)
    predictions = {json.loads(line)["index"]: json.loads(line)["prediction"]
                   for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()}
    assert len(predictions) == 32 and {s["id"]: s["reply"] for s in report.samples} == predictions
    metrics = result.metrics
    assert metrics["score_sum"] == sum(s["correct"] for s in report.samples)
    assert metrics["score"] == pytest.approx(100 * report.overall)
    assert {t: (v["n"], v["score"]) for t, v in metrics["per_category"].items()} == {
        t: (v["n"], pytest.approx(100 * v["accuracy"])) for t, v in report.per_task.items()}
    assert metrics["skipped_rows"] == {} and metrics["complete"]
    assert metrics["score_sum"] > 0  # the model answers some right, so the comparison is not 0 == 0
