"""Balancing (sailvl2.curation.balance and the bucket_balance / ngram_resample stages), measured on data
with planted structure: Gaussian clusters of planted sizes, text topics of planted sizes, and a corpus in
which a few phrasings are over-represented. Quotas and weights are checked against hand-computed values;
the n-gram share is recounted here with plain Python."""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import pytest
import torch

import sailvl2.curation.stages.balance  # noqa: F401 - registers bucket_balance and ngram_resample
from sailvl2.curation.balance import (ModelEmbedder, bucket_quotas, kmeans, ngram_weights,
                                      top_ngram_share, weighted_sample)
from sailvl2.curation.stages import get_stage
from sailvl2.curation.types import CurationError, Item
from sailvl2.processing.prompt import build_prompt
from sailvl2.tiny import build_random_checkpoint

SIZES = [500, 200, 100, 50, 50]


def _planted_points(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (len(SIZES), 16))
    points = np.concatenate([c + rng.normal(0, 0.5, (s, 16)) for c, s in zip(centres, SIZES)])
    truth = np.repeat(np.arange(len(SIZES)), SIZES)
    order = rng.permutation(len(points))
    return points[order], truth[order]


def _items(records: list[dict]) -> list[Item]:
    return [Item(f"i{k}", record, "/tmp") for k, record in enumerate(records)]


def _qa(question: str, answer: str) -> dict:
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def test_kmeans_recovers_planted_clusters():
    points, truth = _planted_points()
    result = kmeans(points, 5, seed=0)
    pairs = Counter(zip(truth.tolist(), result.labels.tolist()))
    assert len(pairs) == 5  # every planted cluster is exactly one bucket, and vice versa
    assert sorted(pairs.values()) == sorted(SIZES)
    assert result.labels[0] == 0  # buckets are numbered by first appearance
    again = kmeans(points, 5, seed=0)
    assert np.array_equal(again.labels, result.labels) and again.inertia == result.inertia


def test_bucket_quotas_by_hand():
    assert bucket_quotas(SIZES, 250) == [50, 50, 50, 50, 50]
    assert bucket_quotas(SIZES, 400) == [100, 100, 100, 50, 50]  # level 100: 100+100+100+50+50
    assert bucket_quotas([10, 3, 7], 14) == [6, 3, 5]  # level 5 gives 13; one more to bucket 0
    assert bucket_quotas([10, 3, 7], 99) == [10, 3, 7]
    assert bucket_quotas([4, 4], 0) == [0, 0]


def test_bucket_balance_stage_makes_buckets_uniform():
    points, truth = _planted_points(seed=1)
    stage = get_stage("bucket_balance", {"embedder": "tfidf", "buckets": 5, "target": 250})
    stage.embed = lambda items: points  # the planted embeddings instead of a model's
    items = _items([_qa("q", "a") for _ in points])
    decisions = list(stage.process_all(items))
    assert [d.id for d in decisions] == [item.id for item in items]
    kept_truth = truth[[d.kept for d in decisions]]
    counts = np.bincount(kept_truth, minlength=5)
    assert counts.sum() == 250 and np.all(np.abs(counts - 50) <= 5)  # within 10% of uniform (here: exact)
    before = np.bincount(truth)
    assert before.max() == 10 * before.min() and counts.max() <= 1.1 * counts.min()  # from 10:1 to uniform
    dropped = [d for d in decisions if not d.kept]
    assert all(re.fullmatch(r"balance: bucket \d over quota", d.reason) for d in dropped)
    assert {d.scores["bucket_size"] for d in decisions} == set(map(float, SIZES))
    assert stage.summary()["bucket_kept"] == [50] * 5


TOPICS = [("apple", "pear", "plum", "fruit", "juice", "orchard", "sweet", "ripe"),
          ("car", "road", "engine", "wheel", "drive", "traffic", "fuel", "garage"),
          ("cat", "dog", "pet", "fur", "bark", "paw", "leash", "vet"),
          ("rain", "cloud", "storm", "wind", "sun", "weather", "snow", "cold"),
          ("code", "python", "bug", "compile", "test", "function", "loop", "array")]
COMMON = ("the", "a", "is", "and", "of", "with", "in", "this")


def test_tfidf_buckets_are_pure_and_balanced():
    rng = random.Random(0)
    records, topic = [], []
    for k, size in enumerate([300, 120, 60, 30, 30]):
        for _ in range(size):
            words = [rng.choice(TOPICS[k]) if rng.random() < 0.6 else rng.choice(COMMON) for _ in range(12)]
            records.append(_qa("Describe it.", " ".join(words)))
            topic.append(k)
    stage = get_stage("bucket_balance", {"embedder": "tfidf", "buckets": 8, "fraction": 0.4, "tfidf_dim": 2048})
    decisions = list(stage.process_all(_items(records)))
    buckets = [int(d.scores["bucket"]) for d in decisions]
    assert all(len({t for t, b in zip(topic, buckets) if b == bucket}) == 1 for bucket in set(buckets))
    kept = Counter(b for b, d in zip(buckets, decisions) if d.kept)
    quotas = bucket_quotas([buckets.count(b) for b in range(8)], 216)
    assert sum(kept.values()) == 216 and [kept[b] for b in range(8)] == quotas
    # The two smallest topics (60 of 540 samples, 11%) make up more than twice that share of what is kept.
    assert sum(d.kept for t, d in zip(topic, decisions) if t >= 3) / 216 > 2 * 60 / 540


def test_model_embedder_on_a_tiny_checkpoint(tmp_path):
    path = str(build_random_checkpoint(tmp_path / "ckpt", seed=0))
    records = [_qa("<image>\nWhat colour is the square?", "Red."), _qa("How many circles are there?", "3"),
               _qa("Describe the image.", "The picture shows a blue circle and a green triangle.")]
    embedder = ModelEmbedder(path, batch_size=3)
    batched = embedder.embed(records)
    single = np.stack([embedder.embed([r])[0] for r in records])
    assert batched.shape == (3, 64) and np.allclose(batched, single, atol=1e-5)  # padding does not leak in
    # Reference: the unpadded conversation through the LLM, mean over the tokens after the system block.
    tokenizer, model = embedder.chat.processor.tokenizer, embedder.chat.model
    system_block = "<|im_start|>system\n<|im_end|>"
    prompt = build_prompt([{"role": "user", "content": "How many circles are there?"},
                           {"role": "assistant", "content": "3"}], add_generation_prompt=False, system="")
    assert prompt.startswith(system_block)
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        hidden = model.language_model.model(input_ids=ids).last_hidden_state[0]
    reference = hidden[len(tokenizer(system_block)["input_ids"]):].mean(0).numpy()
    assert np.allclose(batched[1], reference / np.linalg.norm(reference), atol=1e-5)

    # Through the stage: 6 copies of one sample and 2 of another form two buckets; target 4 keeps 2 + 2.
    stage = get_stage("bucket_balance", {"embedder": "model", "model": path, "buckets": 2, "target": 4})
    items = _items([records[0]] * 6 + [records[2]] * 2)
    decisions = list(stage.process_all(items))
    buckets = [int(d.scores["bucket"]) for d in decisions]
    assert buckets == [0] * 6 + [1] * 2
    assert sum(d.kept for d in decisions[:6]) == 2 and sum(d.kept for d in decisions[6:]) == 2


def test_ngram_weights_and_share_by_hand():
    weights = ngram_weights(["a b c", "a b c", "x y z"], n=3)
    assert np.allclose(weights, [0.5, 0.5, 1.0])  # document frequencies 2, 2, 1
    # "a b c d" + "a b c e": 3-grams abc, bcd, abc, bce; the top one (abc, twice) is 2 of 4 occurrences.
    assert top_ngram_share(["a b c d", "a b c e"], n=3, top=1) == 0.5
    assert np.allclose(ngram_weights(["a b c d", "a b c e"], n=3), [2 ** -0.5] * 2)  # exp(-(log 2 + 0) / 2)


def test_weighted_sample_follows_the_weights():
    keep = weighted_sample([1.0, 3.0, 0.0, 1.0], 2, seed=5)
    assert keep.sum() == 2 and not keep[2] and np.array_equal(keep, weighted_sample([1.0, 3.0, 0.0, 1.0], 2, seed=5))
    # One draw from two items of weights 1 and 4: the second should win with probability 4/5.
    wins = sum(weighted_sample([1.0, 4.0], 1, seed=s)[1] for s in range(2000))
    assert abs(wins / 2000 - 0.8) < 0.03


def _share(texts: list[str], top: int = 100) -> float:
    """Top-``top`` word 3-gram share, recounted independently of the module."""
    counts: Counter = Counter()
    for text in texts:
        tokens = re.findall(r"\w+", text.lower())
        counts.update(zip(tokens, tokens[1:], tokens[2:]))
    return sum(sorted(counts.values(), reverse=True)[:top]) / sum(counts.values())


def test_ngram_resample_lowers_the_top_ngram_share():
    rng = random.Random(0)
    templates = ("The image shows a {} next to the {}.", "In this picture, there is a {} near the {}.",
                 "This image depicts a {} beside the {}.")
    nouns, places = ("cat", "dog", "car", "tree", "boat", "lamp"), ("table", "road", "river", "wall", "park")
    vocab = [f"w{k}" for k in range(400)]
    records, templated = [], []
    for k in range(1000):  # 60% in three planted phrasings, 40% varied text
        if k % 5 < 3:
            answer = rng.choice(templates).format(rng.choice(nouns), rng.choice(places))
        else:
            answer = " ".join(rng.choice(vocab) for _ in range(10))
        records.append(_qa("Describe the image.", answer))
        templated.append(k % 5 < 3)
    texts = [r["conversations"][1]["value"] for r in records]

    def run(power: float) -> tuple[list, float]:
        stage = get_stage("ngram_resample", {"fraction": 0.5, "power": power, "seed": 0})
        decisions = list(stage.process_all(_items(records)))
        kept_texts = [t for t, d in zip(texts, decisions) if d.kept]
        share = _share(kept_texts)
        summary = stage.summary()
        assert len(kept_texts) == 500 and summary["top_share_after"] == pytest.approx(share)
        assert summary["top_share_before"] == pytest.approx(_share(texts))
        return decisions, share

    before = _share(texts)
    decisions, after = run(1.0)
    _, uniform = run(0.0)
    assert before > 0.5 and after < before - 0.3  # measured: 0.568 -> 0.176
    assert abs(uniform - before) < 0.05  # sampling without the weights leaves the share where it was
    assert sum(d.kept for d, t in zip(decisions, templated) if t) < 150  # of 600 templated answers
    dropped = [d for d in decisions if not d.kept]
    assert all(d.reason.startswith("resample: over-represented n-grams (weight ") for d in dropped)
    assert max(d.scores["ngram_weight"] for d in dropped) < min(d.scores["ngram_weight"]
                                                                for d, t in zip(decisions, templated) if not t)


def test_settings_are_checked():
    with pytest.raises(CurationError, match="embedder"):
        get_stage("bucket_balance", {"embedder": "bert", "target": 3})
    with pytest.raises(CurationError, match="needs model"):
        get_stage("bucket_balance", {"target": 3})
    with pytest.raises(CurationError, match="exactly one of target"):
        get_stage("bucket_balance", {"embedder": "tfidf", "target": 3, "fraction": 0.5})
    with pytest.raises(CurationError, match="exactly one of target"):
        get_stage("ngram_resample", {})
    with pytest.raises(CurationError, match="unknown setting"):
        get_stage("ngram_resample", {"fraction": 0.5, "ngram": 3})


def test_global_stage_summary_reaches_the_pipeline_report(tmp_path):
    import json

    from sailvl2.curation import PipelineConfig, run_pipeline
    from sailvl2.curation.config import InputSpec, StageSpec

    answers = ["The image shows a cat next to the table."] * 30 + [f"word{k} other{k} thing{k}" for k in range(30)]
    records = [{"id": f"r{k}", **_qa("Describe the image.", text)} for k, text in enumerate(answers)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = PipelineConfig(inputs=(InputSpec(str(tmp_path / "data.jsonl")),), output=str(tmp_path / "out"),
                            stages=(StageSpec("ngram_resample", {"fraction": 0.5, "seed": 0, "top": 5}),),
                            shard_size=16)
    run_pipeline(config, workers=0, progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    summary = next(stage for stage in report["stages"] if stage["name"] == "ngram_resample")["summary"]
    kept = [json.loads(line)["conversations"][1]["value"]
            for path in sorted((tmp_path / "out" / "data").glob("*.jsonl")) for line in path.open()]
    assert summary["top_share_before"] == pytest.approx(_share(answers, top=5))
    assert summary["top_share_after"] == pytest.approx(_share(kept, top=5))
    assert summary["top_share_after"] < summary["top_share_before"]
