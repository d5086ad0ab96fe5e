"""Reports of evaluation runs: the markdown table and bar chart of one run, and the side-by-side comparison with
the published SAIL-VL2 numbers (PAPER.md 9.2, typed here from the paper's table) and a hand-computed OpenCompass
average; `sailvl2 eval-compare` end to end."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from sailvl2.cli import main
from sailvl2.errors import InputError
from sailvl2.evaluation.report import compare_results, load_metrics, markdown_report, plot_metrics, write_report


def _metrics(benchmark, model, score, **more):
    return {"benchmark": benchmark, "model": model, "metric": "accuracy", "score": score, "n": 10, **more}


def _run(root, folder, benchmark, model, score):
    path = root / folder
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(_metrics(benchmark, model, score)))
    return path


def test_markdown_report_of_one_run():
    metrics = _metrics(
        "MME", "nano", 62.5, extra={"vanilla_accuracy": 70.0},
        per_category={"OCR": {"n": 2, "score": 50.0}, "count": {"n": 6, "score": 66.66666}},
        skipped_rows={"malformed_row": 2, "missing_answer": 1}, prediction_errors=1, failed_requests=0,
        settings={"thinking": False, "max_new_tokens": 1024},
    )
    text = markdown_report(metrics)
    assert text.startswith("# MME: nano\n")
    for line in ("| MME | nano | accuracy | 10 | 62.50 |", "| | | vanilla_accuracy | | 70.00 |",
                 "| OCR | 2 | 50.00 |", "| count | 6 | 66.67 |",
                 "Skipped TSV rows: 3 (malformed_row: 2, missing_answer: 1)",
                 "Settings: thinking=False, max_new_tokens=1024."):
        assert line in text.splitlines()
    assert "could not be prompted or generated: 1;" in text
    assert "Skipped TSV rows: none" in markdown_report(_metrics("MME", "nano", 1.0))


def test_chart_and_outputs_are_written_atomically(tmp_path):
    metrics = _metrics("X", "m", 40.0, per_category={"a": {"n": 5, "score": 20.0}, "b": {"n": 5, "score": 60.0}})
    paths = write_report(tmp_path, metrics, [{"index": "1", "score": 1.0}, {"index": "2", "score": 0.0}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "results.md", "results.png", "scores.jsonl"]
    assert json.loads(paths["metrics"].read_text()) == metrics
    assert [json.loads(line)["index"] for line in paths["scores"].read_text().splitlines()] == ["1", "2"]
    image = Image.open(paths["chart"])
    # 7 x (1.2 + 0.28 * 3 rows) inches at 100 dpi: categories a, b and the overall bar.
    assert image.format == "PNG" and image.size == (700, 204)
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 2  # bars and text, not a blank canvas
    plot_metrics(_metrics("Y", "m", 10.0), tmp_path / "one.png")  # no categories: just the overall bar
    assert Image.open(tmp_path / "one.png").size == (700, 148)


def test_comparison_with_the_paper_column_and_the_opencompass_average(tmp_path):
    alpha = {"MMBench_DEV_EN_V11": 80.0, "MMStar": 60.0, "MMMU_DEV_VAL": 40.0, "MathVista_MINI": 50.0,
             "HallusionBench": 45.0, "AI2D_TEST": 70.0, "OCRBench": 85.0, "MMVet": 30.0}
    paths = [_run(tmp_path, f"alpha-{k}", name, "alpha", score) for k, (name, score) in enumerate(alpha.items())]
    paths += [_run(tmp_path, "beta-mmstar", "MMStar", "beta", 65.0), _run(tmp_path, "beta-suite", "SAILVL2-Suite",
                                                                          "beta", 19.1666)]
    comparison = compare_results(paths, paper="2B")
    assert comparison.columns == ["alpha", "beta", "SAIL-VL2-2B (paper)"]
    assert comparison.rows == [*alpha, "SAILVL2-Suite", "OpenCompass avg"]
    lines = comparison.markdown().splitlines()
    # The paper's 2B numbers (PAPER.md 9.2): MMStar 64.07, OCRBench 895 (89.50 x10), OpenCompass 70.31.
    assert "| MMStar | 60.00 | 65.00 | 64.07 |" in lines
    assert "| OCRBench | 85.00 | — | 89.50 |" in lines
    assert "| MMBench_DEV_EN_V11 | 80.00 | — | 86.77 |" in lines
    assert "| SAILVL2-Suite | — | 19.17 | — |" in lines
    # (80 + 60 + 40 + 50 + 45 + 70 + 85 + 30) / 8 = 57.5; beta lacks 7 of the 8 benchmarks.
    assert "| OpenCompass avg | 57.50 | — | 70.31 |" in lines
    eight_b = compare_results(paths[:2], paper="8B")
    assert eight_b.values["MMStar"]["SAIL-VL2-8B (paper)"] == 70.73
    assert "OpenCompass avg" not in eight_b.rows  # no column has all 8 benchmarks


def test_same_model_twice_gets_folder_labels_and_bad_inputs(tmp_path):
    first, second = _run(tmp_path, "run1", "MMStar", "m", 50.0), _run(tmp_path, "run2", "MMStar", "m", 55.0)
    comparison = compare_results([first, second / "metrics.json"])
    assert comparison.columns == ["m [run1]", "m [run2]"] and comparison.reference is None
    assert "| MMStar | 50.00 | 55.00 |" in comparison.markdown().splitlines()
    with pytest.raises(InputError, match="cannot read"):
        load_metrics(tmp_path / "missing")
    (tmp_path / "other.json").write_text('{"something": 1}')
    with pytest.raises(InputError, match="not a sailvl2 metrics.json"):
        load_metrics(tmp_path / "other.json")
    with pytest.raises(InputError, match="2B"):
        compare_results([first], paper="30B")


def test_eval_compare_cli(tmp_path, capsys):
    runs = [_run(tmp_path, "a", "AI2D_TEST", "nano-a", 30.0), _run(tmp_path, "b", "AI2D_TEST", "nano-b", 35.5)]
    assert main(["eval-compare", *map(str, runs), "--paper", "8B", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| benchmark | nano-a | nano-b | SAIL-VL2-8B (paper) |" in out
    assert "| AI2D_TEST | 30.00 | 35.50 | 87.73 |" in out
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["values"]["AI2D_TEST"] == {"nano-a": 30.0, "nano-b": 35.5, "SAIL-VL2-8B (paper)": 87.73}
    assert Image.open(tmp_path / "cmp" / "comparison.png").format == "PNG"
    assert (tmp_path / "cmp" / "comparison.md").read_text() in out
    assert main(["eval-compare", str(tmp_path / "nothing-here")]) == 2
