"""The embedded default model (`sailvl2/assets/nano`, issue 4): what ships, what `load()` picks, and that
the shipped weights still score what their packaging recorded on >= 200 held-out test records."""

from __future__ import annotations

import json

import pytest
import torch

import sailvl2
from sailvl2.demo import SHIPPED_MODEL_DIR, default_model_dir
from sailvl2.nano.evaluate import evaluate, load_split, perception_accuracy
from sailvl2.nano.ship import MAX_BYTES


SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<img>", "</img>", "<IMG_CONTEXT>", "<think>",
                  "</think>", "<ref>", "</ref>", "<box>", "</box>"]


@pytest.fixture(scope="module")
def shipped():
    return sailvl2.load(None, device="cpu", dtype=torch.float32)


def test_default_is_the_shipped_model_within_25_mb(monkeypatch):
    assert (SHIPPED_MODEL_DIR / "config.json").is_file()  # the model ships with the package
    assert default_model_dir() == SHIPPED_MODEL_DIR
    size = sum(p.stat().st_size for p in SHIPPED_MODEL_DIR.rglob("*") if p.is_file())
    assert 0 < size <= MAX_BYTES
    monkeypatch.setenv("SAILVL2_DEFAULT", "random")
    assert default_model_dir() != SHIPPED_MODEL_DIR


def test_shipped_tokenizer_round_trips_special_tokens(shipped):
    tokenizer = shipped.processor.tokenizer
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert tokenizer.decode(ids) == token
    text = "<|im_start|>user\n<img><IMG_CONTEXT></img>\nWhat colour is the star?<|im_end|>"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_shipped_weights_reproduce_their_recorded_heldout_scores(shipped):
    recorded = json.loads((SHIPPED_MODEL_DIR / "shipped.json").read_text())
    records = load_split(SHIPPED_MODEL_DIR / "heldout.jsonl")
    assert len(records) == recorded["heldout"] >= 200
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids) and all(i.startswith("test-") for i in ids)  # held out: the test split
    scores = evaluate(shipped, records, max_new_tokens=96)
    assert scores.per_task.keys() == recorded["per_task"].keys()
    for task, values in scores.per_task.items():
        assert values["n"] == recorded["per_task"][task]["n"]
        # Greedy decoding of the same weights: the same answers, up to one flip per task from float noise.
        assert abs(values["accuracy"] - recorded["per_task"][task]["accuracy"]) <= 1 / values["n"] + 1e-9, task
    assert abs(perception_accuracy(scores.per_task) - recorded["perception"]) <= 0.02
