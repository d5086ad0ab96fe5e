"""The inference benchmark runs end to end (quick mode) and writes a complete JSON report.

No timing is asserted (timings belong to benchmarks/, printed as ratios); what is checked is that the
script runs, that its preprocessing comparison found ours identical to the release path, and that every
reported number and target verdict is present.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO_ROOT


def test_inference_benchmark_quick_run_writes_json(tmp_path):
    out = tmp_path / "inference.json"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "inference.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("preprocess", "vision", "prefill", "decode", "targets", "peak_rss_mb"):
        assert key in report, f"{key} missing from the benchmark JSON"
    assert report["preprocess"]["matches_baseline"] is True
    assert report["preprocess"]["max_abs_diff_vs_baseline"] <= 1e-6
    assert report["preprocess"]["speedup_single"] > 0 and report["peak_rss_mb"] > 0


def test_train_precision_benchmark_runs_both_paths(tmp_path):
    """benchmarks/train_precision.py times the nano step in fp32 and with cpu_bf16 and writes every number; on a
    CPU without native bf16 both paths are fp32, so only the report's shape is checked, not a speed-up."""
    out = tmp_path / "train_precision.json"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "train_precision.py"), "--steps", "2", "--train-records",
         "300", "--json", str(out)], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["baseline_fp32_step_s"] > 0 and report["ours_bf16_step_s"] > 0
    assert report["speedup"] == report["baseline_fp32_step_s"] / report["ours_bf16_step_s"]
    assert isinstance(report["machine"]["native_bf16"], bool)
    # the same rows from the same weights: the two paths' losses agree to bf16 precision
    assert abs(report["ours_mean_loss"] - report["baseline_mean_loss"]) < 0.05 * report["baseline_mean_loss"]
