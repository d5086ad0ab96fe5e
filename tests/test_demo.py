"""`make demo` (python -m sailvl2.demo): offline, on the shipped model and on the random-weight fallback."""

from __future__ import annotations

import json

from PIL import Image

from sailvl2 import demo


def test_demo_answers_bundled_examples_and_draws_boxes(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    examples = [json.loads(line) for line in (demo.SHIPPED_MODEL_DIR / "examples.jsonl").read_text().splitlines()]
    assert len(examples) >= 8 and any(r["task"].startswith("grounding/") for r in examples)
    table = [line for line in printed.splitlines() if line.endswith((" yes", " no"))]
    assert len(table) == len(examples)  # one row per example: task, question, answer, truth, verdict
    assert f"/{len(examples)} right)" in printed
    sheet = Image.open(tmp_path / "boxes.png").convert("RGB")
    # The true box of every grounding example is outlined in green on the sheet.
    assert (0, 160, 60) in {pixel for _, pixel in sheet.getcolors(maxcolors=1 << 20)}


def test_demo_falls_back_to_a_random_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAILVL2_DEFAULT", "random")
    monkeypatch.setenv("SAILVL2_HOME", str(tmp_path / "home"))
    assert demo.main(["--out", str(tmp_path / "out"), "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    assert "random" in printed and "NOTE" in printed
    assert (tmp_path / "home" / demo.RANDOM_DEMO_NAME / "config.json").is_file()
    assert (tmp_path / "out" / "boxes.png").is_file()
