"""The curation engine: inputs, stage sequencing, error isolation, worker parity, kill-and-resume, output.

The stages here are test-only ones registered under ``t_*`` names; expected kept / dropped sets are worked
out by hand from the generated data. The training engine's own reader (``sailvl2.data.readers``) checks that
the curated output is ready for training.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from sailvl2.curation import Decision, PipelineConfig, load_pipeline, register_stage, run_pipeline
from sailvl2.curation.config import InputSpec, StageSpec
from sailvl2.curation.inputs import CAPTION_PROMPT, iter_inputs
from sailvl2.data.readers import iter_records
from sailvl2.data.records import Record, validate_record
from sailvl2.errors import CurationError

from .curate_kill import run_and_kill



@register_stage("t_min_side")
class MinSide:
    """Drops images whose shorter side is below ``min_side``; scores "side". Raises on unreadable files."""

    def __init__(self, min_side: int = 16) -> None:
        self.min_side = min_side

    def setup(self) -> None:
        pass

    def process(self, items):
        decisions = []
        for item in items:
            path = os.path.join(item.root, item.record["image"])
            with Image.open(path) as image:
                side = min(image.size)
            kept = side >= self.min_side
            decisions.append(Decision(item.id, self.name, kept, None if kept else f"small: {side}", {"side": side}))
        return decisions


@register_stage("t_raises")
class Raises:
    """Raises on every batch holding an item whose answer says "boom"."""

    def setup(self) -> None:
        pass

    def process(self, items):
        if any("boom" in item.record["conversations"][-1]["value"] for item in items):
            raise ValueError("boom")
        return [Decision(item.id, self.name, True) for item in items]


@register_stage("t_answer_dedup")
class AnswerDedup:
    """Global: drops a record whose answer an earlier record already had; scores the answer's length."""

    def process_all(self, items):
        seen = set()
        for item in items:
            answer = item.record["conversations"][-1]["value"]
            duplicate = answer in seen
            seen.add(answer)
            yield Decision(item.id, self.name, not duplicate, f"duplicate: {answer}" if duplicate else None,
                           {"length": len(answer)})


@register_stage("t_setup_log")
class SetupLog:
    """Writes one file per setup() call (named by process id) into ``folder``."""

    def __init__(self, folder: str = "") -> None:
        self.folder = folder

    def setup(self) -> None:
        Path(self.folder, f"setup-{os.getpid()}-{time.monotonic_ns()}").touch()

    def process(self, items):
        return [Decision(item.id, self.name, True) for item in items]


@register_stage("t_twin")
class Twin:
    """Generates ``copies`` records after each item, its record answering "<answer> again <k>"; drops the
    originals rN with N divisible by ``drop_every`` (0: none), which still get their copies."""

    def __init__(self, copies: int = 1, drop_every: int = 0) -> None:
        self.copies, self.drop_every = copies, drop_every

    def setup(self) -> None:
        pass

    def process(self, items):
        decisions = []
        for item in items:
            human, gpt = item.record["conversations"]
            copies = tuple({**item.record, "conversations": [human, {**gpt, "value": f"{gpt['value']} again {k}"}]}
                           for k in range(self.copies))
            dropped = self.drop_every and int(item.id[1:]) % self.drop_every == 0
            decisions.append(Decision(item.id, self.name, not dropped, "twin: replaced" if dropped else None,
                                      generated=copies))
        return decisions


@register_stage("t_global_twin")
class GlobalTwin:
    """A global stage that (wrongly) generates a record."""

    def process_all(self, items):
        for item in items:
            yield Decision(item.id, self.name, True, generated=({"conversations": []},))


@register_stage("t_bad_generated")
class BadGenerated:
    """Generates ``what`` (a list of records) after each item."""

    def __init__(self, what: str = "set") -> None:
        self.what = what

    def setup(self) -> None:
        pass

    def process(self, items):
        records = ({"tags": {1, 2}},) if self.what == "set" else ("not a record",)
        return [Decision(item.id, self.name, True, generated=records) for item in items]


def _record(record_id, image, answer):
    return {"id": record_id, "image": image,
            "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": answer}]}


def _dataset(root: Path, count: int = 12) -> Path:
    """``count`` records; record i has an image of width 10 + 2 i (height 40) and answer "answer {i % 5}"."""
    (root / "imgs").mkdir(parents=True)
    with open(root / "data.jsonl", "w", encoding="utf-8") as handle:
        for i in range(count):
            Image.new("RGB", (10 + 2 * i, 40), (20 * i % 255, 90, 0)).save(root / "imgs" / f"{i}.png")
            handle.write(json.dumps(_record(f"r{i}", f"imgs/{i}.png", f"answer {i % 5}")) + "\n")
    return root / "data.jsonl"


def _pipeline(root: Path, stages, **options) -> PipelineConfig:
    specs = tuple(StageSpec(name, settings) for name, settings in stages)
    return PipelineConfig(inputs=(InputSpec(str(root / "data.jsonl")),), stages=specs,
                          **{"output": str(root / "out"), "shard_size": 4, **options})


def _output(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((out / "data").glob("*.jsonl")) for line in path.open()]


def _decisions(out: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((out / "decisions").glob("*.jsonl"))}


# --------------------------------------------------------------------------------------------- inputs


def test_inputs_read_every_format_into_training_records(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (7, 5), "red").save(png, "PNG")
    with open(tmp_path / "a.jsonl", "w") as handle:
        handle.write(json.dumps({"id": "x", "image": "p.png", "extra": 3, "conversations": [
            {"role": "user", "content": "<image>\nHi"}, {"role": "assistant", "content": "Yo"}]}) + "\n")
        handle.write("{broken\n\n")
        handle.write(json.dumps({"id": "x", "conversations": [{"from": "human", "value": "again"},
                                                              {"from": "gpt", "value": "same id"}]}) + "\n")
    with tarfile.open(tmp_path / "s.tar", "w") as archive:
        for name, data in (("k1.json", json.dumps({"conversations": [{"from": "human", "value": "<image>"},
                                                                       {"from": "gpt", "value": "tar"}]}).encode()),
                           ("k1.png", png.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    folder = tmp_path / "folder" / "sub"
    folder.mkdir(parents=True)
    for stem in ("a", "b", "c"):
        Image.new("RGB", (4, 4)).save(folder / f"{stem}.jpg")
    (folder / "a.txt").write_text(" a caption \n")
    (folder / "b.json").write_text(json.dumps({"caption": "json caption"}))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["q"], "image": [{"bytes": png.getvalue(), "path": "q.png"}],
                             "conversations": [json.dumps([{"from": "human", "value": "<image>"},
                                                           {"from": "gpt", "value": "pq"}])]}), tmp_path / "t.parquet")
    specs = [InputSpec(str(tmp_path / "a.jsonl")), InputSpec(str(tmp_path / "s.tar")),
             InputSpec(str(tmp_path / "folder"), format="folder"), InputSpec(str(tmp_path / "t.parquet"))]
    entries = list(iter_inputs(specs, tmp_path / "cache"))
    ids = [e.id for e in entries]
    assert ids == ["x", "a:1", "x@2", "k1", "sub/a", "sub/b", "sub/c", "q"]
    first = entries[0]
    assert first.record == {"id": "x", "image": "p.png", "extra": 3, "conversations": [
        {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Yo"}]}
    assert first.root == str(tmp_path)
    assert isinstance(entries[1], Decision) and entries[1].reason.startswith("bad JSON")
    assert entries[2].record["id"] == "x@2"
    for entry in (entries[3], entries[7]):  # image bytes are written once to a file, byte for byte
        assert os.path.isabs(entry.record["image"])
        assert Path(entry.record["image"]).read_bytes() == png.getvalue()
    assert entries[7].record["conversations"][-1] == {"from": "gpt", "value": "pq"}
    assert entries[4].record == {"id": "sub/a", "image": os.path.join("sub", "a.jpg"), "conversations": [
        {"from": "human", "value": CAPTION_PROMPT}, {"from": "gpt", "value": "a caption"}]}
    assert entries[4].root == str(tmp_path / "folder")
    assert entries[5].record["conversations"][-1]["value"] == "json caption"
    assert isinstance(entries[6], Decision) and "no caption" in entries[6].reason


# --------------------------------------------------------------------------------------------- the engine


def test_map_then_global_stages_with_hand_computed_decisions(tmp_path):
    _dataset(tmp_path)
    # Widths 10, 12, ..., 32: min_side 20 drops r0..r4 (sides 10..18). Answers "answer i % 5": among the
    # survivors r5..r11, r10 repeats r5's and r11 repeats r6's answer.
    config = _pipeline(tmp_path, [("t_min_side", {"min_side": 20}), ("t_answer_dedup", {})])
    result = run_pipeline(config, workers=0)
    records = _output(tmp_path / "out")
    assert [r["id"] for r in records] == ["r5", "r6", "r7", "r8", "r9"]
    assert [r["curation"]["scores"] for r in records] == [{"side": 10 + 2 * i, "length": 8} for i in range(5, 10)]
    assert result.inputs == 12 and result.kept == 5
    stages = {s["name"]: s for s in result.report["stages"]}
    assert (stages["t_min_side"]["in"], stages["t_min_side"]["dropped"]) == (12, 5)
    assert stages["t_min_side"]["reasons"] == {"small": 5}
    assert (stages["t_answer_dedup"]["in"], stages["t_answer_dedup"]["dropped"]) == (7, 2)
    assert len(list((tmp_path / "out" / "decisions").glob("phase0-shard*.jsonl"))) == 3  # 12 items / 4
    # Ready for training: the training engine's reader parses every curated record, images resolve.
    data = sorted((tmp_path / "out" / "data").glob("*.jsonl"))
    parsed = [r for path in data for r in iter_records(str(path))]
    assert all(isinstance(r, Record) and validate_record(r, check_images=True) is None for r in parsed)
    assert [r.id for r in parsed] == ["r5", "r6", "r7", "r8", "r9"]


def test_a_map_stage_after_a_global_one_sees_only_its_survivors(tmp_path):
    _dataset(tmp_path, count=8)
    lines = (tmp_path / "data.jsonl").read_text().splitlines()
    lines[6] = json.dumps(_record("r6", "imgs/6.png", "answer 1"))  # a duplicate of r1's answer...
    lines[7] = json.dumps(_record("r7", "imgs/7.png", "boom"))      # ...and a record t_raises fails on
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    config = _pipeline(tmp_path, [("t_min_side", {"min_side": 12}), ("t_answer_dedup", {}), ("t_raises", {})])
    result = run_pipeline(config, workers=0)
    # t_min_side drops r0 (width 10); dedup drops r6 (answer of r1); t_raises, a third phase, drops r7.
    assert [r["id"] for r in _output(tmp_path / "out")] == ["r1", "r2", "r3", "r4", "r5"]
    stages = {s["name"]: s for s in result.report["stages"]}
    assert [stages[n]["in"] for n in ("t_min_side", "t_answer_dedup", "t_raises")] == [8, 7, 6]
    assert sorted(p.name for p in (tmp_path / "out" / "decisions").glob("phase2-*")) == [
        "phase2-shard00000.jsonl", "phase2-shard00001.jsonl"]  # 6 survivors re-sharded by 4


def test_a_stage_that_raises_drops_only_the_failing_items(tmp_path):
    _dataset(tmp_path, count=6)
    lines = (tmp_path / "data.jsonl").read_text().splitlines()
    lines[2] = json.dumps(_record("bad", "imgs/2.png", "boom"))
    lines.append(json.dumps(_record("zero", "imgs/empty.png", "fine")))
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")  # zero-byte image: t_min_side raises on it
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    config = _pipeline(tmp_path, [("t_raises", {}), ("t_min_side", {"min_side": 1})])
    run_pipeline(config, workers=0)
    assert [r["id"] for r in _output(tmp_path / "out")] == ["r0", "r1", "r3", "r4", "r5"]
    rows = [json.loads(line) for text in _decisions(tmp_path / "out").values() for line in text.splitlines()]
    dropped = {row["id"]: row["reason"] for row in rows if not row["kept"]}
    assert dropped["bad"] == "error: t_raises: ValueError: boom"
    assert dropped["zero"].startswith("error: t_min_side: UnidentifiedImageError")
    assert len(dropped) == 2
    assert [row["id"] for row in rows if row["stage"] == "t_min_side"] == ["r0", "r1", "r3", "r4", "r5", "zero"]


def test_generated_records_follow_their_parent_through_later_stages(tmp_path):
    _dataset(tmp_path, count=8)
    stages = [("t_twin", {"copies": 2, "drop_every": 3}), ("t_min_side", {"min_side": 12}), ("t_answer_dedup", {})]
    result = run_pipeline(_pipeline(tmp_path, stages), workers=0)
    # By hand. t_twin drops r0, r3, r6 and adds rN:t_twin.0 / .1 ("answer N%5 again 0 / 1") after every rN.
    # t_min_side drops r0's copies (they share r0's 10-px-wide image). t_answer_dedup drops r6's copies
    # (r1's answers again), r7 and its copies (r2's).
    twins = lambda n: [f"r{n}:t_twin.0", f"r{n}:t_twin.1"]  # noqa: E731
    expected = ["r1", *twins(1), "r2", *twins(2), *twins(3), "r4", *twins(4), "r5", *twins(5)]
    records = _output(tmp_path / "out")
    assert [r["id"] for r in records] == expected
    by_id = {r["id"]: r for r in records}
    assert by_id["r3:t_twin.1"]["conversations"][1]["value"] == "answer 3 again 1"
    assert by_id["r3:t_twin.1"]["image"] == str(tmp_path / "imgs" / "3.png")  # the parent's image, resolved
    assert by_id["r3:t_twin.1"]["curation"]["scores"] == {"side": 16, "length": len("answer 3 again 1")}
    rows = [json.loads(line) for text in _decisions(tmp_path / "out").values() for line in text.splitlines()]
    assert [r["generated"] for r in rows if r["stage"] == "t_twin" and r["id"] == "r0"] == [twins(0)]
    assert {r["id"] for r in rows if r["stage"] == "t_min_side" and not r["kept"]} == set(twins(0))
    assert {r["id"] for r in rows if r["stage"] == "t_answer_dedup" and not r["kept"]} == {
        *twins(6), "r7", *twins(7)}
    counts = {s["name"]: s for s in result.report["stages"]}
    assert [counts["t_twin"][k] for k in ("in", "kept", "dropped", "generated")] == [8, 5, 3, 16]
    assert [counts["t_min_side"][k] for k in ("in", "kept", "dropped", "generated")] == [5 + 16, 19, 2, 0]
    assert [counts["t_answer_dedup"][k] for k in ("in", "kept", "dropped")] == [19, 14, 5]
    assert (result.inputs, result.report["generated"], result.kept, result.report["dropped"]) == (8, 16, 14, 10)
    assert "8 records read, 16 generated, **14 kept**" in (tmp_path / "out" / "report.md").read_text()
    # Ready for training, and the same on a rerun from scratch.
    parsed = [r for path in result.data_files for r in iter_records(str(path))]
    assert [r.id for r in parsed] == expected and all(validate_record(r, check_images=True) is None for r in parsed)
    decisions = _decisions(tmp_path / "out")
    run_pipeline(_pipeline(tmp_path, stages), workers=0, resume=False)
    assert _output(tmp_path / "out") == records and _decisions(tmp_path / "out") == decisions


def test_generated_records_are_refused_from_global_stages_and_id_clashes(tmp_path):
    _dataset(tmp_path, count=2)
    with pytest.raises(CurationError, match="global stage 't_global_twin' generated records for 'r0'"):
        run_pipeline(_pipeline(tmp_path, [("t_global_twin", {})]), workers=0)
    with pytest.raises(CurationError, match="record 0 generated from 'r0' is not JSON"):
        run_pipeline(_pipeline(tmp_path, [("t_bad_generated", {})], output=str(tmp_path / "set")), workers=0)
    with pytest.raises(CurationError, match="Decision.generated of 'r0' must be a tuple of records"):
        run_pipeline(_pipeline(tmp_path, [("t_bad_generated", {"what": "str"})], output=str(tmp_path / "str")),
                     workers=0)
    with open(tmp_path / "data.jsonl", "a") as handle:  # an input already named like r0's first copy
        handle.write(json.dumps(_record("r0:t_twin.0", "imgs/1.png", "other")) + "\n")
    with pytest.raises(CurationError, match="two curated records share the id 'r0:t_twin.0'"):
        run_pipeline(_pipeline(tmp_path, [("t_twin", {})], output=str(tmp_path / "clash")), workers=0)


@pytest.mark.slow  # two spawned workers (each imports sailvl2's curation modules, not torch)
def test_two_workers_give_the_same_output_and_set_up_once_per_process(tmp_path):
    _dataset(tmp_path, count=20)
    log = tmp_path / "setup"
    log.mkdir()
    stages = [("t_setup_log", {"folder": str(log)}), ("t_min_side", {"min_side": 20}), ("t_twin", {}),
              ("t_answer_dedup", {})]
    parallel = run_pipeline(_pipeline(tmp_path, stages, output=str(tmp_path / "p")), workers=2)
    serial = run_pipeline(_pipeline(tmp_path, stages, output=str(tmp_path / "s")), workers=0)
    assert _output(tmp_path / "p") == _output(tmp_path / "s")
    assert _decisions(tmp_path / "p") == _decisions(tmp_path / "s")
    # r5..r9 and their copies; r10..r19 and their copies repeat their answers.
    assert [r["id"] for r in _output(tmp_path / "p")] == [i for n in range(5, 10) for i in (f"r{n}", f"r{n}:t_twin.0")]
    assert parallel.kept == serial.kept == 10
    pids = [name.split("-")[1] for name in os.listdir(log)]
    worker_pids = [p for p in pids if p != str(os.getpid())]
    assert len(worker_pids) == len(set(worker_pids)) <= 2 and worker_pids  # 5 shards, one setup per worker
    assert pids.count(str(os.getpid())) == 1  # the serial run set up once in this process


_SLOW_PLUGIN = textwrap.dedent('''
    import time
    from sailvl2.curation import Decision, register_stage

    @register_stage("t_slow")
    class Slow:
        def setup(self):
            pass

        def process(self, items):
            time.sleep(0.4)
            return [Decision(i.id, self.name, int(i.id[1:]) % 3 != 0, None if int(i.id[1:]) % 3 else "third: x",
                             {"n": int(i.id[1:])}) for i in items]
''')


@pytest.mark.slow  # a subprocess and its worker each import sailvl2
def test_killed_run_resumes_with_every_record_exactly_once(tmp_path):
    _dataset(tmp_path, count=24)
    (tmp_path / "slow_stage.py").write_text(_SLOW_PLUGIN)
    yaml_text = ("inputs: [data.jsonl]\noutput: {out}\nshard_size: 2\n"
                 "plugins: [slow_stage, tests.test_curation_pipeline]\n"  # t_slow, and t_answer_dedup from here
                 "stages: [{{stage: t_slow}}, {{stage: t_answer_dedup}}]\n")
    (tmp_path / "killed.yaml").write_text(yaml_text.format(out="killed"))
    (tmp_path / "clean.yaml").write_text(yaml_text.format(out="clean"))
    decisions = tmp_path / "killed" / "decisions"
    done_before = run_and_kill(tmp_path / "killed.yaml", 1, decisions, "*.jsonl", 4, tmp_path / "stderr.txt")
    assert done_before < 12 and not (tmp_path / "killed" / "data").exists()
    sys.path.insert(0, str(tmp_path))
    try:
        resumed = run_pipeline(load_pipeline(tmp_path / "killed.yaml"), workers=0)
        clean = run_pipeline(load_pipeline(tmp_path / "clean.yaml"), workers=0)
    finally:
        sys.path.remove(str(tmp_path))
    assert resumed.report["throughput"]["resumed_shards"] >= 4  # finished shards were not recomputed
    assert clean.report["throughput"]["resumed_shards"] == 0 and resumed.kept == clean.kept
    killed_ids = [r["id"] for r in _output(tmp_path / "killed")]
    assert killed_ids == [r["id"] for r in _output(tmp_path / "clean")]
    assert len(killed_ids) == len(set(killed_ids))
    # By hand: t_slow drops r0, r3, ..., r21; t_answer_dedup keeps the first of each "answer i % 5".
    assert killed_ids == ["r1", "r2", "r4", "r5", "r8"]
    assert _output(tmp_path / "killed") == _output(tmp_path / "clean")
    assert _decisions(tmp_path / "killed") == _decisions(tmp_path / "clean")


# --------------------------------------------------------------------------------------------- config, resume


def test_resume_refuses_a_different_pipeline_and_no_resume_starts_over(tmp_path):
    _dataset(tmp_path, count=4)
    run_pipeline(_pipeline(tmp_path, [("t_min_side", {"min_side": 12})]), workers=0)
    changed = _pipeline(tmp_path, [("t_min_side", {"min_side": 14})])
    with pytest.raises(CurationError, match="different pipeline"):
        run_pipeline(changed, workers=0)
    result = run_pipeline(changed, workers=0, resume=False)
    assert [r["id"] for r in _output(tmp_path / "out")] == ["r2", "r3"]  # widths 14, 16
    assert result.report["throughput"]["resumed_shards"] == 0


def test_copy_mode_puts_images_beside_the_data(tmp_path):
    _dataset(tmp_path, count=3)
    run_pipeline(_pipeline(tmp_path, [], images="copy"), workers=0)
    records = _output(tmp_path / "out")
    data = tmp_path / "out" / "data"
    for i, record in enumerate(records):
        assert not os.path.isabs(record["image"])
        assert (data / record["image"]).read_bytes() == (tmp_path / "imgs" / f"{i}.png").read_bytes()
    parsed = list(iter_records(str(data / "curated-00000.jsonl")))
    assert all(validate_record(r, check_images=True) is None for r in parsed) and len(parsed) == 3


@pytest.mark.parametrize("text, message", [
    ("inputs: [a.jsonl]\noutput: o\nstagez: []\n", r"unknown pipeline key\(s\) \['stagez'\]"),
    ("inputs: [a.jsonl]\noutput: o\nstages: [{stage: nope}]\n", r"stages\[0\]: unknown stage 'nope'"),
    ("inputs: [a.jsonl]\noutput: o\nstages: [{stage: t_min_side, min_sid: 3}]\n",
     r"unknown setting\(s\) \['min_sid'\]"),
    ("inputs: [{path: a.jsonl, fmt: x}]\noutput: o\n", r"inputs\[0\]: unknown key\(s\) \['fmt'\]"),
    ("output: o\n", "needs 'inputs'"),
    ("inputs: [a.jsonl]\noutput: o\nshard_size: 0\n", "'shard_size' must be an integer >= 1"),
])
def test_bad_pipelines_name_the_problem(tmp_path, text, message):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(CurationError, match=message):
        load_pipeline(tmp_path / "p.yaml")


def test_cli_curate_runs_and_reports_errors(tmp_path, capsys, monkeypatch):
    from sailvl2.cli import main

    _dataset(tmp_path, count=3)
    (tmp_path / "p.yaml").write_text("inputs: [data.jsonl]\noutput: out\nstages: [{stage: t_min_side, "
                                     "min_side: 12}]\n")
    assert main(["curate", str(tmp_path / "p.yaml"), "--workers", "0", "--quiet"]) == 0
    assert "**2 kept**" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["curate", str(tmp_path / "p.yaml"), "--engine", "ray", "--quiet", "--no-resume"]) == 2
    assert "--engine ray needs Ray" in capsys.readouterr().err


def test_real_stages_drop_bad_images_and_duplicates_without_crashing(tmp_path):
    from sailvl2.curation import available_stages

    assert {"validate", "exact_dedup"} <= set(available_stages())
    images = tmp_path / "imgs"
    images.mkdir()
    noise = Image.effect_noise((64, 64), 60).convert("RGB")
    noise.save(images / "good.png")
    (images / "copy.png").write_bytes((images / "good.png").read_bytes())
    Image.linear_gradient("L").convert("RGB").resize((64, 64)).save(images / "other.png")
    (images / "zero.png").write_bytes(b"")
    (images / "cut.png").write_bytes((images / "good.png").read_bytes()[:200])
    (images / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    big = Image.new("1", (12000, 12000))  # 144 M pixels > PIL's 89 M default: a decompression bomb
    big.save(images / "bomb.png")
    names = ["good", "zero", "cut", "junk", "bomb", "copy", "other"]
    with open(tmp_path / "data.jsonl", "w") as handle:
        for name in names:
            handle.write(json.dumps(_record(name, f"imgs/{name}.png", "a picture of something")) + "\n")
    config = _pipeline(tmp_path, [("validate", {"min_side": 8}), ("exact_dedup", {})], shard_size=3)
    result = run_pipeline(config, workers=0)
    assert [r["id"] for r in _output(tmp_path / "out")] == ["good", "other"]
    rows = [json.loads(line) for text in _decisions(tmp_path / "out").values() for line in text.splitlines()]
    dropped = {row["id"]: (row["stage"], row["reason"]) for row in rows if not row["kept"]}
    assert set(dropped) == {"zero", "cut", "junk", "bomb", "copy"}
    assert all(stage == "validate" and reason.startswith("image: ") for key, (stage, reason) in dropped.items()
               if key != "copy")
    assert dropped["copy"] == ("exact_dedup", "duplicate: of good")
    stages = {s["name"]: s for s in result.report["stages"]}
    assert stages["validate"]["dropped"] == 4 and stages["exact_dedup"]["dropped"] == 1


@pytest.mark.slow  # starts a local Ray instance (about 10 s) whose actors import sailvl2
def test_ray_engine_gives_the_local_engines_output(tmp_path):
    pytest.importorskip("ray.data")
    _dataset(tmp_path, count=14)
    lines = (tmp_path / "data.jsonl").read_text().splitlines()
    lines[9] = json.dumps(_record("r9", "imgs/9.png", "boom"))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    stages = [("t_min_side", {"min_side": 14}), ("t_raises", {}), ("t_twin", {}), ("t_answer_dedup", {}),
              ("t_min_side2", {"min_side": 16})]
    local = run_pipeline(_pipeline(tmp_path, stages, output=str(tmp_path / "local")), workers=0)
    ray = run_pipeline(_pipeline(tmp_path, stages, output=str(tmp_path / "ray")), workers=2, engine="ray")
    assert ray.report["throughput"]["engine"] == "ray"
    # By hand: r0, r1 too small (widths 10, 12); r9 raises; every survivor rN gets a copy rN:t_twin.0
    # ("answer N%5 again 0"); answers i % 5 repeat from r7 on, so r7, r8 and r10..r13 and their copies are
    # duplicates; t_min_side2 (a map phase after the global one) drops r2 and its copy (width 14 < 16).
    assert [r["id"] for r in _output(tmp_path / "ray")] == [i for n in range(3, 7) for i in (f"r{n}", f"r{n}:t_twin.0")]
    assert _output(tmp_path / "ray") == _output(tmp_path / "local")
    assert _decisions(tmp_path / "ray") == _decisions(tmp_path / "local")
    assert ray.kept == local.kept == 8 and ray.report["generated"] == local.report["generated"] == 11


@register_stage("t_min_side2")
class MinSideAgain(MinSide):
    """The same check under another name, to have a map stage after a global one."""
