"""The evaluation runner end to end: a tiny random model on a multiple-choice TSV with bad rows (reported, never
fatal), a run killed halfway and resumed (same metrics.json bytes as an uninterrupted run), settings checks, and
the OpenAI-endpoint path through `sailvl2 eval --api-base` against a local stub server. Also the per-kind
scoring (`scoring.py`) against hand-computed scores."""

from __future__ import annotations

import base64
import csv
import json
import re

import pytest
import torch
from PIL import Image

import sailvl2
from sailvl2.cli import main
from sailvl2.errors import ConfigError
from sailvl2.evaluation.datasets import BenchmarkItem, write_tsv
from sailvl2.evaluation.registry import get_spec
from sailvl2.evaluation.runner import ModelGenerator, RunSettings, run_eval
from sailvl2.evaluation.scoring import score_benchmark
from sailvl2.tiny import TINY_VISION, build_random_checkpoint

from .http_stub import JSONStub, serve

GOLD = ["A", "B", "C", "B", "A", "C", "B", "A", "C"]


def _item(k: int, gold: str) -> BenchmarkItem:
    image = Image.new("RGB", (40, 30), (20 * k, 100, 200 - 20 * k))
    return BenchmarkItem.from_images(str(k), f"Question {k}: pick {gold}", [image], answer=gold,
                                     options={"A": "red", "B": "green", "C": "blue"}, category=f"cat{k % 2}")


def _benchmark(path):
    """A 9-item MMStar-style TSV plus 3 bad rows (a wrong field count, no answer, an undecodable image)."""
    write_tsv([_item(k, gold) for k, gold in enumerate(GOLD)], path)
    with open(path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle, delimiter="\t"))
    good = dict(zip(header, [""] * len(header)), question="q", A="x", B="y")
    rows = [
        ["100", "too few fields"],
        [{**good, "index": "101", "image": base64.b64encode(b"bad").decode(), "answer": "A"}[c] for c in header],
        [{**good, "index": "102", "answer": ""}[c] for c in header],
    ]
    with open(path, "a", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # 112-px tiles (16 image tokens each) keep the 11 tiles of an MSAC image cheap.
    vision = {**TINY_VISION, "image_size": 112}
    directory = build_random_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0, vision=vision)
    return ModelGenerator(sailvl2.load(directory, device="cpu", dtype=torch.float32), "tiny", str(directory))


@pytest.fixture()
def data(tmp_path):
    return _benchmark(tmp_path / "MMStar_mini.tsv")


SETTINGS = RunSettings(batch_size=2, max_new_tokens=3)


def test_bad_rows_are_reported_and_the_run_completes(tiny, data, tmp_path):
    result = run_eval(data, tmp_path / "out", tiny, SETTINGS, progress=False)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["skipped_rows"] == {"malformed_row": 1, "missing_answer": 1, "undecodable_image": 1}
    assert metrics["n"] == 9 and metrics["items_in_file"] == 9 and metrics["complete"]
    assert metrics["benchmark"] == "MMStar_mini" and metrics["metric"] == "accuracy"
    assert "Skipped TSV rows: 3 (malformed_row: 1, missing_answer: 1, undecodable_image: 1)" in (
        (tmp_path / "out" / "results.md").read_text())
    # The score is recomputed from the stored predictions: the share of predictions that name the gold letter.
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(int(r["index"]) for r in lines) == list(range(9))
    assert all(r["prompt"].startswith("<image>\nQuestion") and r["prompt"].endswith("directly.") for r in lines)
    scores = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert metrics["score"] == pytest.approx(100 * sum(s["answer"] == s["gold"] for s in scores) / 9)
    assert Image.open(tmp_path / "out" / "results.png").format == "PNG"


def test_killed_run_resumes_to_the_same_metrics(tiny, data, tmp_path):
    run_eval(data, tmp_path / "whole", tiny, SETTINGS, progress=False)
    seen = []

    def kill_after_five(record):
        seen.append(record["index"])
        if len(seen) == 5:
            raise KeyboardInterrupt  # what Ctrl-C / a kill looks like from inside the loop

    with pytest.raises(KeyboardInterrupt):
        run_eval(data, tmp_path / "resumed", tiny, SETTINGS, on_prediction=kill_after_five, progress=False)
    predictions = tmp_path / "resumed" / "predictions.jsonl"
    assert len(predictions.read_text().splitlines()) == 6  # whole batches of 2 are on disk
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    with predictions.open("a") as handle:  # a kill in the middle of a write leaves half a line
        handle.write('{"index": "7", "predic')
    result = run_eval(data, tmp_path / "resumed", tiny, SETTINGS, progress=False)
    assert result.generated == 3  # items 6, 7, 8; the half line was dropped
    assert (tmp_path / "resumed" / "metrics.json").read_bytes() == (tmp_path / "whole" / "metrics.json").read_bytes()
    whole = sorted((tmp_path / "whole" / "predictions.jsonl").read_text().splitlines())
    assert sorted(predictions.read_text().splitlines()) == whole
    # Nothing left to do: a third run generates nothing and writes the same metrics again.
    assert run_eval(data, tmp_path / "resumed", tiny, SETTINGS, progress=False).generated == 0
    assert (tmp_path / "resumed" / "metrics.json").read_bytes() == (tmp_path / "whole" / "metrics.json").read_bytes()


def test_resume_with_other_settings_is_refused_and_limit_extends(tiny, data, tmp_path):
    out = tmp_path / "out"
    first = run_eval(data, out, tiny, RunSettings(batch_size=2, max_new_tokens=3, limit=4), progress=False)
    assert first.metrics["n"] == 4 and first.generated == 4
    with pytest.raises(ConfigError, match="other settings"):
        run_eval(data, out, tiny, RunSettings(batch_size=2, max_new_tokens=5), progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        run_eval(data, out, tiny, RunSettings(batch_size=2, max_new_tokens=3, thinking=True), progress=False)
    # A larger limit (or another batch size) is the same run, continued.
    assert run_eval(data, out, tiny, RunSettings(batch_size=3, max_new_tokens=3), progress=False).generated == 5


# ------------------------------------------------------------------------------------------------ endpoint


class _Stub(JSONStub):
    """Answers "The answer is (X)." with X the letter after "pick" in the question, except: question 1 gets a
    wrong letter, question 2 fails once with a 500 (then answers), question 3 fails while `down` is set."""

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "".join(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text")
        number = int(re.search(r"Question (\d+)", text).group(1))
        with server.lock:
            server.requests.append((number, body))
            count = sum(1 for n, _ in server.requests if n == number)
        if number == 2 and count == 1 or number == 3 and server.down:
            return self._send(500, b'{"error": "overloaded"}')
        letter = re.search(r"pick ([A-C])", text).group(1)
        if number == 1:
            letter = "A" if letter != "A" else "B"
        reply = {"choices": [{"message": {"role": "assistant", "content": f"The answer is ({letter})."}}]}
        self._send(200, json.dumps(reply).encode())


@pytest.fixture()
def stub():
    with serve(_Stub, requests=[], down=True) as httpd:
        yield httpd


def test_openai_endpoint_end_to_end_through_the_cli(stub, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sailvl2.evaluation.endpoint.time.sleep", lambda seconds: None)  # no backoff waits
    out = tmp_path / "api"
    argv = ["eval", "--data", str(data), "--api-base", f"http://127.0.0.1:{stub.server_address[1]}/v1",
            "--api-model", "stub-vlm", "--out", str(out), "--batch-size", "4", "--no-progress"]
    assert main(argv) == 1  # question 3 still fails after the retries: the run says so
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "stub-vlm" and metrics["failed_requests"] == 1 and not metrics["complete"]
    # 9 items: question 1 answered wrong, question 3 not answered -> 7 / 9.
    assert metrics["score"] == pytest.approx(100 * 7 / 9)
    assert "rerun the same command" in capsys.readouterr().out
    indices = [json.loads(line)["index"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(indices) == ["0", "1", "2", "4", "5", "6", "7", "8"]
    number, body = stub.requests[0]
    assert body["model"] == "stub-vlm" and body["temperature"] == 0 and body["max_tokens"] == 1024
    assert [part["type"] for part in body["messages"][0]["content"]] == ["image_url", "text"]
    assert body["messages"][0]["content"][1]["text"].endswith(
        "C. blue\nAnswer with the option's letter from the given choices directly.")

    stub.down = False
    before = len(stub.requests)
    assert main(argv) == 0
    assert [n for n, _ in stub.requests[before:]] == [3]  # only the missing item is asked again
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["score"] == pytest.approx(100 * 8 / 9)
    assert metrics["per_category"] == {"cat0": {"n": 5, "score": 100.0}, "cat1": {"n": 4, "score": 75.0}}
    assert "| MMStar_mini | stub-vlm | accuracy | 9 | 88.89 |" in capsys.readouterr().out


def test_cli_rejects_inconsistent_arguments(data, capsys):
    assert main(["eval", "--data", str(data), "--api-base", "http://127.0.0.1:9", "--no-progress"]) == 2
    assert "--api-model" in capsys.readouterr().err
    assert main(["eval", "--data", str(data), "--judge-api-base", "http://127.0.0.1:9"]) == 2
    assert "--judge-model" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ scoring


def _items(answers, **fields):
    return [BenchmarkItem(index=str(k), question="q", answer=a, **fields) for k, a in enumerate(answers)]


def test_scoring_per_kind_against_hand_computed_scores():
    # DocVQA: ANLS. "kitchen" vs "kitchens": distance 1 / 8 -> 0.875; "bathroom": NL >= 0.5 -> 0.
    items = _items(["kitchens", "['7', 'seven']", "x"])
    result = score_benchmark(get_spec("DocVQA_VAL"), items, {"0": "kitchen", "1": "The answer is seven.", "2": None})
    assert result.metric == "anls" and result.score == pytest.approx(100 * (0.875 + 1 + 0) / 3)
    # ChartQA: relaxed accuracy, 5 % on numbers: 104 vs 100 passes, 106 fails, text must match.
    items = _items(["100", "100", "Yes"])
    result = score_benchmark(get_spec("ChartQA_TEST"), items, {"0": "104", "1": "106", "2": "yes"})
    assert result.metric == "relaxed_accuracy" and result.score == pytest.approx(200 / 3)
    # Yes/no (MME) with categories.
    items = [BenchmarkItem(index=str(k), question="q", answer=a, category=c)
             for k, (a, c) in enumerate([("Yes", "count"), ("No", "count"), ("No", "OCR")])]
    result = score_benchmark(get_spec("MME"), items, {"0": "Yes.", "1": "Yes", "2": "No, it is not."})
    assert result.score == pytest.approx(200 / 3)
    assert result.per_category == {"OCR": {"n": 1, "score": 100.0}, "count": {"n": 2, "score": 50.0}}
    # Grounding: IoU of [0,0,100,100] with [0,0,100,200] is 0.5 -> hit; a bad gold box is left out, reported.
    items = _items(["[0, 0, 100, 200]", "[0, 0, 100, 200]", "no box"])
    replies = {"0": "<ref>x</ref><box>[[0, 0, 100, 100]]</box>", "1": "[[0, 0, 100, 90]]", "2": "[[1, 2, 3, 4]]"}
    result = score_benchmark(get_spec("RefCOCO_testA"), items, replies)
    assert result.metric == "grounding_hit" and result.n == 2 and result.score == 50.0
    assert list(result.unscorable) == ["2"]


def test_circular_mmbench_and_the_judge():
    options = {"A": "cat", "B": "dog"}
    # Question 5 in two circular passes (index 5 and 1000005), question 6 once; question 5 fails one pass.
    items = [BenchmarkItem(index=i, question="q", answer=a, options=options)
             for i, a in (("5", "A"), ("1000005", "B"), ("6", "B"))]
    result = score_benchmark(get_spec("MMBench_DEV_EN"), items, {"5": "A", "1000005": "A", "6": "B"})
    assert result.metric == "circular_accuracy" and result.score == 50.0
    assert result.extra == {"vanilla_accuracy": pytest.approx(200 / 3)}

    class Judge:
        def __call__(self, question, response, options):
            return "B" if "could be" in response else None

    items = _items(["B", "B"], options=options)
    replies = {"0": "It could be A or B.", "1": "No idea."}
    result = score_benchmark(get_spec("MMStar"), items, replies, judge=Judge())
    assert result.score == 50.0 and result.answer_sources == {"judge": 1, "none": 1}
