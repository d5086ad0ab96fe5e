"""The multi-turn twins of the suite's direct streams (`sailvl2.synth.writer.dialogues`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sailvl2.data.mixture import MixtureConfig
from sailvl2.data.readers import iter_records
from sailvl2.synth import check_suite, generate_suite
from sailvl2.synth.writer import SHAPE_STREAM_TASKS


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_dialogues_hold_exactly_the_single_turn_records(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    manifest = generate_suite(out, seed=5, sizes={"train": 400, "test": 40}, image_size=168, workers=1)
    singles = _records(out / "train.jsonl")
    streams = manifest["splits"]["train"]["dialogue_streams"]
    assert "test" not in {k for k, v in manifest["splits"].items() if "dialogue_streams" in v}
    assert not any(name.endswith("-cot-dialogues") for name in streams)
    merged = [row for name in streams for row in _records(out / "families" / f"train-{name}.jsonl")]
    assert [len(_records(out / "families" / f"train-{n}.jsonl")) for n in streams] == list(streams.values())
    # Rebuild the single-turn records from the dialogues: the same questions and answers, nothing else.
    rebuilt = []
    for row in merged:
        turns = row["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert len(turns) // 2 == len(row["tasks"])
        first = turns[0]["value"]
        prefix = first[: first.rfind("<image>\n") + len("<image>\n")]
        assert prefix.count("<image>") == (1 if isinstance(row["image"], str) else len(row["image"]))
        for k in range(0, len(turns), 2):
            assert k == 0 or "<image>" not in turns[k]["value"]  # the image(s) only in the first turn
            question = turns[k]["value"] if k == 0 else prefix + turns[k]["value"]
            image = row["image"]  # family files sit one folder down from the split files
            image = image[3:] if isinstance(image, str) else [p[3:] for p in image]
            rebuilt.append((json.dumps(image), question, turns[k + 1]["value"], row["tasks"][k // 2]))
    direct = [(json.dumps(r["image"]), r["conversations"][0]["value"], r["conversations"][1]["value"], r["task"])
              for r in singles if r["kind"] == "direct"]
    assert sorted(rebuilt) == sorted(direct)
    assert len({row["id"] for row in merged}) == len(merged)
    assert len(merged) < len(direct)  # items ask several questions about one image


def test_training_mixtures_use_the_dialogues_and_parse(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    generate_suite(out, seed=5, sizes={"train": 300, "test": 20}, image_size=168, workers=1)
    mixture = MixtureConfig.from_yaml(out / "mixtures" / "sft.yaml")
    names = [d.name for d in mixture.datasets]
    assert "shapes-dialogues" in names and "shapes" not in names
    dataset = next(d for d in mixture.datasets if d.name == "shapes-dialogues")
    records = list(iter_records(dataset.path))
    assert records and all(len(r.conversations) >= 2 for r in records)


def test_spatial_stream_and_its_repeat_in_the_mixtures(tmp_path: Path) -> None:
    from sailvl2.synth.writer import SPATIAL_TASKS

    out = tmp_path / "suite"
    manifest = generate_suite(out, seed=5, sizes={"train": 400, "test": 40}, image_size=168, workers=1)
    singles = _records(out / "train.jsonl")
    spatial = _records(out / "families" / "train-spatial.jsonl")
    # Exactly the single-turn training records of the spatial tasks, in order, images relative to families/.
    expected = [r for r in singles if r["task"] in SPATIAL_TASKS and r["kind"] == "direct"]
    assert expected and [r["id"] for r in spatial] == [r["id"] for r in expected]
    assert [r["conversations"] for r in spatial] == [r["conversations"] for r in expected]
    assert all(r["image"] == "../" + e["image"] for r, e in zip(spatial, expected))
    assert manifest["splits"]["train"]["spatial_stream"] == len(spatial)
    assert not (out / "families" / "test-spatial.jsonl").exists()  # held-out splits are asked one by one
    boosted = MixtureConfig.from_yaml(out / "mixtures" / "multitask-spatial.yaml")
    rates = dict(zip([d.name for d in boosted.datasets], boosted.rates()))
    assert boosted.mode == "repeat" and rates["spatial"] == 3.0 and rates["shapes-dialogues"] == 1.0
    assert rates["grounding"] == 1.0  # grounding's single-turn records besides its dialogues
    plain = MixtureConfig.from_yaml(out / "mixtures" / "multitask.yaml")
    assert set(rates) - {d.name for d in plain.datasets} == {"spatial"}
    # The ladder's multi-task mixture also asks grounding and chart questions as first turns (single-turn records).
    assert {"grounding", "charts", "grounding-dialogues", "charts-dialogues"} <= {d.name for d in plain.datasets}
    assert "spatial" in manifest["mixtures"]["multitask-spatial"]
    # The ladder's own mixtures draw every stream once, except grounding's two in the multi-task mixture
    # (twice: the reading streams would otherwise crowd them out; session 12). This suite has no reading streams.
    for name in ("multitask", "sft", "cot"):
        mixture = MixtureConfig.from_yaml(out / "mixtures" / f"{name}.yaml")
        rates = dict(zip([d.name for d in mixture.datasets], mixture.rates()))
        twice = {"grounding", "grounding-dialogues"} if name == "multitask" else set()
        assert "spatial" not in rates and {stream for stream, rate in rates.items() if rate != 1.0} == twice
        assert all(rates[stream] == 2.0 for stream in twice)
        # Every stage asks grounding as a first turn too (boxes fell through SFT and LongCoT without it).
        assert "grounding" in rates


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_shape_images_add_a_train_only_dialogue_stream(tmp_path: Path) -> None:
    """shape_images: fresh train-owned shape scenes asked up to three counts and spatial questions, written as
    single-turn records (re-derived by the checker) and as their dialogues, which the mixtures draw; the counts
    ask about two or more of a colour or kind more often than the suite's own; byte-identical on regeneration,
    and the rest of the suite unchanged."""
    sizes = {"train": 200, "test": 40}
    plain = tmp_path / "plain"
    generate_suite(plain, seed=4, sizes=sizes, families=["shapes", "ocr"], image_size=168, workers=1)
    manifest = generate_suite(tmp_path / "a", seed=4, sizes=sizes, families=["shapes", "ocr"], image_size=168,
                              workers=2, shape_images=300)
    generate_suite(tmp_path / "b", seed=4, sizes=sizes, families=["shapes", "ocr"], image_size=168, workers=1,
                   shape_images=300)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert manifest["shape_images"] == 300
    families = tmp_path / "a" / "families"
    singles = _records(families / "train-shapes-more.jsonl")
    merged = _records(families / "train-shapes-more-dialogues.jsonl")
    assert len(merged) == 300 and len({r["image"] for r in singles}) == 300
    assert all(r["image"].startswith("../images/shapes-more/") for r in singles)
    by_image: dict[str, list[str]] = {}
    for record in singles:
        assert record["task"] in SHAPE_STREAM_TASKS
        by_image.setdefault(record["image"], []).append(record["task"])
    assert all(1 <= len(tasks) <= 3 and len(set(tasks)) == len(tasks) for tasks in by_image.values())
    assert set(SHAPE_STREAM_TASKS) == {r["task"] for r in singles}
    # Each dialogue holds its image's questions, in the same order, the image in the first turn only.
    for row in merged:
        assert row["tasks"] == by_image[row["image"]]
        assert len(row["conversations"]) == 2 * len(row["tasks"])
        assert [t["value"].count("<image>") for t in row["conversations"][::2]] == [1] + [0] * (len(row["tasks"]) - 1)
    # The checker re-derives every stream answer too: 240 split records plus the stream's.
    report = check_suite(tmp_path / "a")
    assert report.failures == [] and report.checked == 240 + len(singles)

    def several(records: list[dict]) -> float:
        counts = [r for r in records if r["task"] in ("shapes/count_colour", "shapes/count_kind")]
        return sum(int(r["answer"]) >= 2 for r in counts) / len(counts)

    assert several(singles) > several(_records(tmp_path / "a" / "train.jsonl")) + 0.15
    # The splits' own files and images are those of the suite without the stream.
    with_stream, without = _digests(tmp_path / "a"), _digests(plain)
    own = ("mixtures", "manifest")
    assert {p: d for p, d in with_stream.items() if "shapes-more" not in p and not p.startswith(own)} \
        == {p: d for p, d in without.items() if not p.startswith(own)}
    rates = {name: dict(zip([d.name for d in mix.datasets], mix.rates()))
             for name, mix in ((n, MixtureConfig.from_yaml(tmp_path / "a" / "mixtures" / f"{n}.yaml"))
                               for n in ("multitask", "sft", "cot"))}
    assert [rates[n]["shapes-more-dialogues"] for n in ("multitask", "sft", "cot")] == [0.5, 0.25, 0.25]
    assert "shapes-more" not in (plain / "mixtures" / "multitask.yaml").read_text()
    with pytest.raises(ValueError, match="shape_images must be >= 0"):
        generate_suite(tmp_path / "c", seed=4, sizes=sizes, shape_images=-1)
