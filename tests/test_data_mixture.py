"""Mixture config (YAML) and MixtureStream: exact repeat counts, weighted proportions, seeds, counted skips,
the error budget, and resume == uninterrupted."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sailvl2.data import DataError, MixtureConfig, MixtureStream
from sailvl2.errors import ConfigError

from .test_data_records import png_bytes, text_sample, write_all_formats, write_jsonl, write_tar


def make_jsonl(folder: Path, name: str, n: int) -> Path:
    rows = [{**text_sample(k), "id": f"{name}-{k}"} for k in range(n)]
    return write_jsonl(folder / f"{name}.jsonl", rows)


def mixture(folder: Path, datasets: list[dict[str, Any]]) -> MixtureConfig:
    return MixtureConfig.from_dict({"datasets": datasets}, base_dir=folder)


def ids(stream: MixtureStream, count: int | None = None) -> list[tuple[str, str]]:
    out = []
    for item in stream:
        out.append((item.dataset, item.record.id))
        if count is not None and len(out) == count:
            break
    return out


@pytest.fixture
def three(tmp_path: Path) -> Path:
    for name, n in (("a", 5), ("b", 4), ("c", 3)):
        make_jsonl(tmp_path, name, n)
    return tmp_path


# ------------------------------------------------------------------------------------------- drawing


def test_repeat_counts_are_exact_per_epoch(three: Path) -> None:
    config = mixture(three, [{"name": "a", "path": "a.jsonl", "repeat": 2, "max_num": 4},
                             {"name": "b", "path": "b.jsonl", "repeat": 0.5},
                             {"name": "c", "path": "c.jsonl"}])  # repeat 1 by default
    items = list(MixtureStream(config, seed=3, epochs=4))
    assert len(items) == 4 * (10 + 2 + 3)
    assert {(i.dataset, i.max_num) for i in items} == {("a", 4), ("b", None), ("c", None)}
    subsets = set()
    for epoch in range(4):
        chunk = [(i.dataset, i.record.id) for i in items[15 * epoch : 15 * (epoch + 1)]]
        counts = Counter(chunk)
        assert all(counts[("a", f"a-{k}")] == 2 for k in range(5))
        assert all(counts[("c", f"c-{k}")] == 1 for k in range(3))
        half = [rid for name, rid in chunk if name == "b"]
        assert len(half) == len(set(half)) == 2
        subsets.add(tuple(sorted(half)))
        # within a dataset a pass is read in file order
        assert [rid for name, rid in chunk if name == "a"] == [f"a-{k}" for k in range(5)] * 2
    assert len(subsets) > 1  # the fractional subset is re-drawn every epoch


def test_weights_give_proportions(three: Path) -> None:
    config = mixture(three, [{"name": "a", "path": "a.jsonl", "weight": 1}, {"name": "b", "path": "b.jsonl", "weight": 3},
                             {"name": "c", "path": "c.jsonl", "weight": 6}, {"name": "z", "path": "a.jsonl", "weight": 0}])
    draws = Counter(name for name, _ in ids(MixtureStream(config, seed=0), 3000))
    assert draws["z"] == 0
    for name, share in (("a", 0.1), ("b", 0.3), ("c", 0.6)):
        assert abs(draws[name] / 3000 - share) < 0.03, draws


def test_weight_mode_epochs_end_at_the_first_exhausted_dataset(three: Path) -> None:
    config = mixture(three, [{"name": "a", "path": "a.jsonl", "weight": 1}, {"name": "c", "path": "c.jsonl", "weight": 1}])
    items = ids(MixtureStream(config, seed=1, epochs=2))
    counts = Counter(name for name, _ in items)
    assert max(counts["a"] / 5, counts["c"] / 3) == 2 and min(counts["a"] / 5, counts["c"] / 3) <= 2


def test_seed_fixes_the_sequence(three: Path) -> None:
    for rate in ("repeat", "weight"):
        config = mixture(three, [{"name": n, "path": f"{n}.jsonl", rate: 1} for n in "abc"])
        first, again, other = (ids(MixtureStream(config, seed=s), 40) for s in (5, 5, 6))
        assert first == again and first != other


# ------------------------------------------------------------------------------------------- bad data


def write_bad_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ok.png").write_bytes(png_bytes((1, 2, 3)))
    (folder / "corrupt.png").write_bytes(b"\x89PNG garbage")
    return write_jsonl(folder / "bad.jsonl", [
        {**text_sample(0), "image": "ok.png"},
        {**text_sample(1), "image": "missing.png"},
        {**text_sample(2), "image": "corrupt.png"},
        "{broken json",
        {**text_sample(3), "image": ["ok.png", "ok.png"], "conversations": [
            {"from": "human", "value": "<image> one placeholder"}, {"from": "gpt", "value": "two images"}]},
        {**text_sample(4), "conversations": [{"from": "human", "value": "no answer"}]},
        text_sample(5),
    ])


def test_bad_records_are_counted_skipped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_bad_dataset(tmp_path)
    write_tar(tmp_path / "t.tar", [("x.json", json.dumps(text_sample(9)).encode()), ("x.png", b"not a png"),
                                   ("y.json", json.dumps(text_sample(8)).encode())])
    config = mixture(tmp_path, [{"name": "bad", "path": "bad.jsonl"}, {"name": "tar", "path": "t.tar"}])
    with caplog.at_level(logging.WARNING, logger="sailvl2.data"):
        stream = MixtureStream(config, seed=0, check_images=True, error_budget=1.0, epochs=2)
        got = sorted(rid for _, rid in ids(stream))
    assert got == sorted(["s0", "s5", "s8"] * 2)
    stats = stream.stats
    assert stats["datasets"]["bad"] == {"yielded": 4, "skipped": {
        "missing image file": 2, "undecodable image": 2, "bad JSON": 2, "image placeholder mismatch": 2,
        "last turn not from gpt": 2}}
    assert stats["datasets"]["tar"] == {"yielded": 2, "skipped": {"undecodable image": 2}}
    assert (stats["seen"], stats["yielded"], stats["skipped"]) == (18, 6, 12)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5 + 2 and "missing.png" in " ".join(warnings)  # first 5 per dataset, then DEBUG
    assert sum("logged at DEBUG" in w for w in warnings) == 1


def test_missing_files_are_not_decoded_but_counted_without_check_images(tmp_path: Path) -> None:
    config = mixture(tmp_path, [{"name": "bad", "path": str(write_bad_dataset(tmp_path))}])
    stream = MixtureStream(config, seed=0, error_budget=1.0, epochs=1)
    assert sorted(rid for _, rid in ids(stream)) == ["s0", "s2", "s5"]  # the corrupt image passes unchecked
    assert "undecodable image" not in stream.stats["datasets"]["bad"]["skipped"]


def test_error_budget(tmp_path: Path) -> None:
    rows: list[Any] = []
    for k in range(60):
        rows.append(text_sample(k) if k % 5 else "{bad")  # 20% bad
    config = mixture(tmp_path, [{"name": "noisy", "path": str(write_jsonl(tmp_path / "n.jsonl", rows))}])
    with pytest.raises(DataError, match=r"skipped \d+ of 20 seen .*noisy: bad JSON \d+") as info:
        list(MixtureStream(config, seed=0, error_budget=0.1, min_seen=20))
    assert "error_budget 10.0%" in str(info.value)
    with pytest.raises(DataError, match="skipped 1 of 1 seen"):
        list(MixtureStream(config, seed=0, error_budget=0))  # 0: the first bad record stops the run
    assert len(list(MixtureStream(config, seed=0, error_budget=0.25, epochs=3))) == 3 * 48


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    make_jsonl(tmp_path, "a", 2)
    for key in ("weight", "repeat"):
        config = mixture(tmp_path, [{"name": "e", "path": "empty.jsonl", key: 1}])
        with pytest.raises(DataError, match="no items"):
            next(MixtureStream(config, seed=0))
    config = mixture(tmp_path, [{"name": "e", "path": "empty.jsonl"}, {"name": "a", "path": "a.jsonl"}])
    assert len(list(MixtureStream(config, seed=0, epochs=2))) == 4  # an empty part of a repeat mixture is fine


# ------------------------------------------------------------------------------------------- resume


def _resume_configs(root: Path) -> dict[str, tuple[MixtureConfig, dict[str, Any]]]:
    for name, n in (("a", 5), ("b", 4)):
        make_jsonl(root, name, n)
    bad = write_bad_dataset(root / "bad")
    formats = write_all_formats(root / "formats")
    repeat = [{"name": "a", "path": "a.jsonl", "repeat": 2}, {"name": "b", "path": "b.jsonl", "repeat": 0.5},
              {"name": "bad", "path": str(bad), "repeat": 1.5}]
    return {
        "repeat": (mixture(root, repeat), {}),
        "repeat_shuffled": (mixture(root, repeat), {"shuffle_buffer": 3}),
        "weight": (mixture(root, [{"name": "a", "path": "a.jsonl", "weight": 2}, {"name": "bad", "path": str(bad)}]), {}),
        "formats": (mixture(root, [{"name": f, "path": str(formats[f]), "repeat": 1.5}
                                   for f in ("parquet", "hf", "webdataset")] + repeat[:1]), {}),
    }


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    for label, (config, options) in _resume_configs(tmp_path).items():
        kwargs = {"seed": 11, "error_budget": 1.0, "check_images": True, **options}
        reference = MixtureStream(config, **kwargs)
        full = ids(reference, 60)
        # 0: before anything; mid-epoch; exactly at and right after an epoch boundary (epochs: 12+, 13+ items)
        for cut in (0, 1, 7, 11, 12, 13, 25, 33):
            first = MixtureStream(config, **kwargs)
            head = ids(first, cut) if cut else []
            # As checkpoints write it: sorted keys put the datasets in alphabetical order ("formats" is not).
            state = json.loads(json.dumps(first.state_dict(), sort_keys=True))
            resumed = MixtureStream(config, **kwargs)
            resumed.load_state_dict(state)
            assert head + ids(resumed, 60 - cut) == full, (label, cut)
            assert resumed.stats == reference.stats, (label, cut)
        assert len(json.dumps(reference.state_dict())) < 2000


def test_resume_with_epochs_limit_and_mismatches(three: Path) -> None:
    config = mixture(three, [{"name": "a", "path": "a.jsonl"}, {"name": "c", "path": "c.jsonl"}])
    whole = ids(MixtureStream(config, seed=2, epochs=2))
    first = MixtureStream(config, seed=2, epochs=2)
    head = ids(first, 9)
    resumed = MixtureStream(config, seed=2, epochs=2)
    resumed.load_state_dict(first.state_dict())
    assert head + ids(resumed) == whole and len(whole) == 16
    with pytest.raises(DataError, match="another stream"):
        MixtureStream(config, seed=3).load_state_dict(first.state_dict())
    with pytest.raises(DataError, match="malformed stream state"):
        MixtureStream(config, seed=2).load_state_dict({"version": 1})
    make_jsonl(three, "a", 6)  # the file grew since the state was saved
    with pytest.raises(DataError, match="changed since the state was saved"):
        MixtureStream(config, seed=2).load_state_dict(first.state_dict())


# ------------------------------------------------------------------------------------------- YAML


def test_yaml_round_trip_and_relative_paths(three: Path) -> None:
    (three / "sub").mkdir()
    write_tar(three / "sub" / "s-0.tar", [("k.json", json.dumps(text_sample(1)).encode())])
    write_tar(three / "sub" / "s-1.tar", [("k.json", json.dumps(text_sample(2)).encode())])
    (three / "mix.yaml").write_text(
        "datasets:\n"
        "  - {name: a, path: a.jsonl, repeat: 2, max_num: 6, kind: cot}\n"
        "  - {name: shards, path: 'sub/s-*.tar', image_root: sub}\n"
        "  - {name: both, path: [b.jsonl, c.jsonl], format: jsonl, repeat: 0.5}\n")
    config = MixtureConfig.from_yaml(three / "mix.yaml")
    assert config.mode == "repeat" and config.rates() == [2.0, 1.0, 0.5]
    a, shards, both = config.datasets
    assert a.path == str(three / "a.jsonl") and a.max_num == 6 and a.kind == "cot"
    assert shards.image_root == str(three / "sub") and shards.source.resolved_format() == "webdataset"
    assert both.path == (str(three / "b.jsonl"), str(three / "c.jsonl"))
    items = list(MixtureStream(config, seed=0, epochs=1))
    assert len(items) == 10 + 2 + 4 and {i.record.kind for i in items if i.dataset == "a"} == {"cot"}


@pytest.mark.parametrize("text, message", [
    ("datasets: [{name: a, path: a.jsonl, weight: 1, repeat: 2}]", "both 'weight' and 'repeat'"),
    ("datasets: [{name: a, path: a.jsonl, weight: -1}]", "'weight' must be >= 0"),
    ("datasets: [{name: a, path: a.jsonl, repeat: two}]", "'repeat' must be a number"),
    ("datasets: [{name: a, path: a.jsonl, wieght: 1}]", r"unknown key\(s\) \['wieght'\]"),
    ("mixture: []", r"unknown mixture key\(s\) \['mixture'\]"),
    ("datasets: [{name: a, path: nope.jsonl}]", "dataset 'a': data path .*nope.jsonl' not found"),
    ("datasets: [{name: a, path: 'x-*.tar'}]", "no data files match"),
    ("datasets: [{name: a, path: gone.parquet, format: parquet}]", "gone.parquet' not found"),
    ("datasets: [{name: a, path: a.jsonl, weight: 1}, {name: b, path: b.jsonl, repeat: 1}]", "one scheme"),
    ("datasets: [{name: a, path: a.jsonl}, {name: a, path: b.jsonl}]", r"repeated: \['a'\]"),
    ("datasets: [{path: a.jsonl}]", "missing 'name'"),
    ("datasets: [{name: a, path: a.jsonl, max_num: 0}]", "'max_num' must be a positive integer"),
    ("datasets: [{name: a, path: a.jsonl, kind: fast}]", "'kind' must be one of"),
    ("datasets: [{name: a, path: a.jsonl, format: csv}]", "unknown format 'csv'"),
    ("datasets: [{name: a, path: a.jsonl, weight: 0}]", "nothing would ever be drawn"),
    ("datasets: []", "non-empty list"),
    ("datasets: [{name: a, path: a.jsonl\n", "cannot read mixture file"),
])
def test_yaml_errors_are_clear(three: Path, text: str, message: str) -> None:
    (three / "mix.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        MixtureConfig.from_yaml(three / "mix.yaml")
    assert "mix.yaml" in str(info.value)


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        MixtureConfig.from_yaml(tmp_path / "absent.yaml")
