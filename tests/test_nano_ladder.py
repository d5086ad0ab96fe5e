"""CI-sized run of the nano ladder: suite -> tokenizer -> five stages -> evaluation report."""

from __future__ import annotations

import json

import torch

from sailvl2.cli import main as cli_main
from sailvl2.nano.ship import ship


def test_smoke_ladder_trains_every_stage_and_reports(tmp_path, capsys):
    torch.set_num_threads(2)
    assert cli_main(["nano", "--preset", "smoke", "--out", str(tmp_path / "nano")]) == 0
    report = json.loads((tmp_path / "nano" / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["align", "multitask", "sft", "longcot"]
    for stage in report["stages"]:
        assert stage["last_loss"] < stage["first_loss"], stage["stage"]  # the loss falls at every stage
        assert (tmp_path / "nano" / stage["stage"] / "loss.png").is_file()
        if stage["stage"] == "align":  # the dense stage reports its per-token read-outs, not answers
            assert set(stage["dense_accuracy"]) >= {"kind", "colour", "size"}
            continue
        assert stage["accuracy"] and all(0.0 <= v["accuracy"] <= 1.0 for v in stage["accuracy"].values())
    final = report["stages"][-1]
    # Above chance (uniform guessing among each task's training answers) on the 160 held-out questions.
    assert final["overall"] > final["chance"] > 0.0, (final["overall"], final["chance"])
    assert "| task | n |" in capsys.readouterr().out
    assert (tmp_path / "nano" / "longcot" / "final" / "model.safetensors").is_file()
    assert report["allocator"] in ("mimalloc", "jemalloc", "tcmalloc", "system")

    # The report names the final model relative to the run folder, so a moved run still ships, and the shipped
    # files record the run's name and stage, not this machine's paths.
    assert report["final_model"] == "longcot/final"
    moved = tmp_path / "moved-run"
    (tmp_path / "nano").rename(moved)
    ship(moved, tmp_path / "shipped")
    recorded = json.loads((tmp_path / "shipped" / "shipped.json").read_text())
    assert (recorded["source_run"], recorded["source_model"]) == ("moved-run", "longcot/final")
    assert recorded["heldout"] > 0 and 0.0 <= recorded["overall"] <= 1.0
    assert (tmp_path / "shipped" / "model.safetensors").is_file()


def test_text_layout_and_number_images_are_checked_before_any_work(tmp_path, capsys):
    import pytest

    from sailvl2.errors import ConfigError
    from sailvl2.nano.ladder import run_ladder

    with pytest.raises(ConfigError, match="text_layout"):
        run_ladder(tmp_path / "run", preset="smoke", text_layout="grid")
    assert not (tmp_path / "run").exists()  # nothing generated or written
    with pytest.raises(SystemExit) as exit_info:  # argparse: an unknown choice is a usage error
        cli_main(["nano", "--out", str(tmp_path / "cli"), "--text-layout", "grid"])
    assert exit_info.value.code == 2 and "--text-layout" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    with pytest.raises(ConfigError, match="number_images"):
        run_ladder(tmp_path / "run", preset="smoke", number_images=-1)
    assert not (tmp_path / "run").exists()
    assert cli_main(["nano", "--out", str(tmp_path / "cli"), "--number-images", "-5"]) != 0  # our error, not a crash
    assert "number_images must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    with pytest.raises(ConfigError, match="letter_images"):
        run_ladder(tmp_path / "run", preset="smoke", letter_images=-1)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="chart_images must be >= 0"):
        run_ladder(tmp_path / "run", preset="smoke", chart_images=-2)
    assert not (tmp_path / "run").exists()
    assert cli_main(["nano", "--out", str(tmp_path / "cli"), "--shape-images", "-3"]) != 0
    assert "shape_images must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    with pytest.raises(ConfigError, match="chart_layout must be one of"):
        run_ladder(tmp_path / "run", preset="smoke", chart_layout="grid")
    assert not (tmp_path / "run").exists()


def test_a_rerun_refuses_a_suite_generated_with_other_settings(tmp_path):
    """The ladder reuses the suite in OUT/data on a rerun; one generated with other flags (layout, extra
    reading images, seed or preset) would silently train something else, so it is refused."""
    import pytest

    from sailvl2.errors import ConfigError
    from sailvl2.nano.ladder import run_ladder
    from sailvl2.synth import FOCUS_VERSION, generate_suite

    data = tmp_path / "run" / "data"
    generate_suite(data, seed=0, sizes={"train": 12, "test": 4}, families=["ocr"], image_size=168, workers=1,
                   number_images=3, chart_slot=28)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(ConfigError, match="number_images 3 \\(this run: 0\\)") as error:
        run_ladder(tmp_path / "run", preset="smoke", stages=("align",))
    assert "train_records 12 (this run: 1200)" in str(error.value) and "seed" not in str(error.value)
    assert "chart_slot 28 (this run: 0)" in str(error.value)
    # A suite whose chart read-out stream an older generator wrote (other questions) is refused too.
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**manifest, "chart_images": 2, "chart_read_version": 1}))
    with pytest.raises(ConfigError, match="chart_read_version 1 \\(this run: 2\\)"):
        run_ladder(tmp_path / "run", preset="smoke", stages=("align",), number_images=3, chart_layout="slots",
                   chart_images=2)
    # A suite written before its focus boxes changed (session 16: chart focus, subjects; session 17: count sinks)
    # is refused too.
    for older in ({key: value for key, value in manifest.items() if key != "focus_version"},
                  {**manifest, "focus_version": FOCUS_VERSION - 1}):
        (data / "manifest.json").write_text(json.dumps(older))
        with pytest.raises(ConfigError, match=f"focus_version {older.get('focus_version', 0)} "
                                              f"\\(this run: {FOCUS_VERSION}\\)"):
            run_ladder(tmp_path / "run", preset="smoke", stages=("align",), number_images=3, chart_layout="slots")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before == ["data"]  # nothing trained
