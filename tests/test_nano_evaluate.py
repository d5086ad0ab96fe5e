"""Scoring rules of the nano evaluation, on hand-written replies."""

from __future__ import annotations

import pytest

from sailvl2.nano.evaluate import iou, normalise, score


@pytest.mark.parametrize(
    "record, reply, expected",
    [
        ({"answer": "red"}, "red", 1.0),
        ({"answer": "red"}, "It is red.", 1.0),
        ({"answer": "red"}, "It is blue.", 0.0),
        ({"answer": "3"}, "There are 3 circles.", 1.0),
        ({"answer": "3"}, "3", 1.0),
        ({"answer": "3"}, "There are 13 circles.", 0.0),
        ({"answer": "3"}, "3 or 4 circles", 0.0),
        ({"answer": "yes"}, "Yes.", 1.0),
        ({"answer": "yes"}, "No.", 0.0),
        ({"answer": "HELLO 42"}, "hello 42", 1.0),
        ({"answer": "2.5"}, "2.5", 1.0),
        ({"answer": "The first image."}, "The first image.", 1.0),
        ({"answer": "The first image."}, "The second image.", 0.0),
        ({"answer": "7", "kind": "cot"}, "<think>\n3 + 4 = 7\n</think>\n\\boxed{7}", 1.0),
        ({"answer": "7", "kind": "cot"}, "<think>\n3 + 4 = 7\n</think>\n7", 0.0),
        ({"answer": "7", "kind": "cot"}, "<think>\n3 + 4 = 7 \\boxed{7}", 0.0),  # unterminated thinking
        ({"answer": [100, 100, 300, 300]}, "<ref>red circle</ref><box>[[110, 105, 305, 290]]</box>", 1.0),
        ({"answer": [100, 100, 300, 300]}, "<ref>red circle</ref><box>[[250, 250, 500, 500]]</box>", 0.0),
        ({"answer": [100, 100, 300, 300]}, "I do not know.", 0.0),
    ],
)
def test_score(record, reply, expected):
    assert score(record, reply) == expected


def test_iou_and_normalise_hand_computed():
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert normalise("  It's RED!  ") == "it s red"
    assert normalise("2.5 apples.") == "2.5 apples"


def test_chance_accuracy_by_hand():
    from sailvl2.nano.evaluate import chance_accuracy, weighted_chance

    train = [{"task": "colour", "answer": a} for a in ("red", "blue", "red", "green")] + \
            [{"task": "exists", "answer": a} for a in ("yes", "no")] + \
            [{"task": "locate", "answer": [1, 2, 3, 4]}]
    test = [{"task": "colour", "answer": "red"}, {"task": "exists", "answer": "no"},
            {"task": "locate", "answer": [5, 6, 7, 8]}, {"task": "unseen", "answer": "x"}]
    chance = chance_accuracy(train, test)
    assert chance == {"colour": 1 / 3, "exists": 1 / 2, "locate": 0.0, "unseen": 0.0}
    per_task = {"colour": {"n": 3, "accuracy": 1.0}, "exists": {"n": 1, "accuracy": 0.0}}
    assert abs(weighted_chance(per_task, chance) - (3 * (1 / 3) + 1 * 0.5) / 4) < 1e-12


def test_evaluate_batches_task_by_task_and_reports_in_record_order():
    """evaluate() sends the questions grouped by task (so a long caption does not hold a batch of one-word answers)
    and still reports every sample against its own record, in the records' order."""
    from types import SimpleNamespace

    from sailvl2.nano.evaluate import evaluate

    tasks = ["shapes/colour", "captions/brief", "shapes/colour", "ocr/word", "captions/brief", "shapes/colour"]
    records = [{"id": f"test-{k}", "task": task, "answer": f"a{k}", "image": [],
                "conversations": [{"from": "human", "value": f"q{k}"}]} for k, task in enumerate(tasks)]
    batches = []

    class FakeVLM:
        def batch_chat(self, questions, images, max_new_tokens, batch_size, max_num):
            assert len(images) == len(questions)
            for start in range(0, len(questions), batch_size):
                batches.append(questions[start:start + batch_size])
            # right for even record numbers, wrong for odd ones
            return [SimpleNamespace(text=f"a{q[1:]}" if int(q[1:]) % 2 == 0 else "nope") for q in questions]

    report = evaluate(FakeVLM(), records, batch_size=2)
    assert [sample["id"] for sample in report.samples] == [r["id"] for r in records]
    assert [sample["correct"] for sample in report.samples] == [k % 2 == 0 for k in range(len(records))]
    assert batches == [["q1", "q4"], ["q3", "q0"], ["q2", "q5"]]  # captions, ocr + shapes, shapes
    assert report.per_task["shapes/colour"] == {"n": 3, "accuracy": 2 / 3}
