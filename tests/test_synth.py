"""The synthetic suite (sailvl2.synth): determinism, disjoint splits, answers re-derived independently,
pixels that agree with the scenes, and records the training engine accepts."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sailvl2.data.mixture import MixtureConfig
from sailvl2.data.readers import iter_records
from sailvl2.data.records import Record, validate_record
from sailvl2.synth import FAMILIES, check_record, check_suite, generate_suite, scene_from_dict, split_of
from sailvl2.synth.checker import scene_signature
from sailvl2.synth.scene import COLOURS, KINDS, SIZES, sample_shape_scene

SMALL = {"train": 300, "val": 60, "test": 60}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every family at equal weight, so each gets a few hundred records across the splits."""
    out = tmp_path_factory.mktemp("synth") / "suite"
    generate_suite(out, seed=7, sizes={"train": 2400, "val": 600, "test": 600},
                   families={f: 1 for f in FAMILIES}, workers=2)
    return out


def test_same_seed_same_bytes_any_workers_and_other_seed_differs(tmp_path: Path) -> None:
    generate_suite(tmp_path / "a", seed=3, sizes=SMALL, workers=2)
    generate_suite(tmp_path / "b", seed=3, sizes=SMALL, workers=1)
    generate_suite(tmp_path / "c", seed=4, sizes=SMALL, workers=2)
    a, b, c = (_digests(tmp_path / name) for name in "abc")
    assert len(a) > 100 and a == b
    assert a["train.jsonl"] != c["train.jsonl"]
    assert set(a.values()) != set(c.values())
    with pytest.raises(FileExistsError):
        generate_suite(tmp_path / "a", seed=3, sizes=SMALL)
    generate_suite(tmp_path / "a", seed=3, sizes=SMALL, overwrite=True)
    assert _digests(tmp_path / "a") == a


def test_manifest_counts(suite: Path) -> None:
    manifest = json.loads((suite / "manifest.json").read_text())
    for split, info in manifest["splits"].items():
        rows = _records(suite / f"{split}.jsonl")
        assert len(rows) == info["records"] == sum(info["tasks"].values()) == sum(info["streams"].values())
        images = {p for r in rows for p in ([r["image"]] if isinstance(r["image"], str) else r["image"])}
        assert len(images) == info["images"] == len(list((suite / "images" / split).iterdir()))
        assert all(r["task"].split("/")[0] in FAMILIES for r in rows)
    assert manifest["seed"] == 7 and manifest["version"]


def test_splits_disjoint(suite: Path) -> None:
    signatures, images = {}, {}
    for split in ("train", "val", "test"):
        rows = _records(suite / f"{split}.jsonl")
        signatures[split] = {sig for r in rows for sig in scene_signature(r["scene"])}
        # by construction: every scene belongs to its split's hash buckets
        assert all(split_of(sig) == split for sig in signatures[split])
        images[split] = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (suite / "images" / split).iterdir()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not signatures[a] & signatures[b]
        assert not images[a] & images[b]


def test_independent_checker_agrees_on_every_record(suite: Path) -> None:
    report = check_suite(suite)
    assert report.failures == []
    assert report.ok
    families = {}
    for task, n in report.tasks.items():
        families[task.split("/")[0]] = families.get(task.split("/")[0], 0) + n
    assert set(families) == set(FAMILIES)
    assert min(families.values()) >= 200, families
    assert len(report.tasks) >= 35


def _mutate(record: dict, rng: random.Random) -> dict:
    """A copy with a wrong answer that still looks plausible (the checker must notice)."""
    r = json.loads(json.dumps(record))
    reply, answer = r["conversations"][-1]["value"], r["answer"]

    def set_both(new_reply: str, new_answer) -> None:
        r["conversations"][-1]["value"], r["answer"] = new_reply, new_answer

    if r["kind"] == "cot":
        n = int(re.search(r"\\boxed\{(-?\d+)\}", reply)[1])
        set_both(reply.replace(f"\\boxed{{{n}}}", f"\\boxed{{{n + 1}}}"), answer)
    elif isinstance(answer, list):
        moved = [answer[0] + 12, answer[1], min(1000, answer[2] + 12), answer[3]]
        set_both(reply.replace(", ".join(map(str, answer)), ", ".join(map(str, moved))), moved)
    elif r["task"].startswith("captions/"):
        words = [w for w in re.findall(r"[A-Za-z]+|\d+", reply)]
        target = rng.choice([w for w in words if w.isdigit() or w in COLOURS or w in KINDS or w in SIZES] or words)
        new = str(int(target) + 1) if target.isdigit() else (
            next(c for c in (*COLOURS, *KINDS, *SIZES) if c != target and
                 ((c in COLOURS) == (target in COLOURS) and (c in KINDS) == (target in KINDS)))
            if target in (*COLOURS, *KINDS, *SIZES) else target + "x")
        mutated = re.sub(rf"\b{re.escape(target)}\b", new, reply, count=1)
        set_both(mutated, mutated)
    elif answer.isdigit():
        set_both(str(int(answer) + 1), str(int(answer) + 1))
    elif answer in ("yes", "no"):
        flipped = "no" if answer == "yes" else "yes"
        set_both(flipped, flipped)
    elif answer in ("first", "second", "same"):
        other = {"first": "second", "second": "same", "same": "first"}[answer]
        set_both({"first": "The first image.", "second": "The second image.",
                  "same": "They have the same number."}[other], other)
    elif answer in COLOURS:
        other = next(c for c in COLOURS if c != answer)
        set_both(other, other)
    elif " " in answer and answer.split(" ")[0] in COLOURS:  # "red star" -> "red circle"
        colour, kind = answer.split(" ", 1)
        other = f"{colour} {next(k for k in KINDS if k != kind)}"
        set_both(other, other)
    else:
        set_both(answer + "s", answer + "s")
    return r


def test_checker_rejects_wrong_answers(suite: Path) -> None:
    rng = random.Random(0)
    per_task: dict[str, int] = {}
    for record in _records(suite / "val.jsonl"):
        key = f"{record['task']}:{record['kind']}"
        if per_task.get(key, 0) >= 8:
            continue
        per_task[key] = per_task.get(key, 0) + 1
        assert check_record(record, suite) == []
        assert check_record(_mutate(record, rng), suite), (record["task"], record["conversations"][-1])
    assert len(per_task) >= 30
    # A scene that disagrees with its pixels is caught too.
    record = next(r for r in _records(suite / "test.jsonl") if r["task"] == "shapes/count_all")
    shape = record["scene"]["shapes"][0]
    shape["rgb"] = list(COLOURS["black" if shape["colour"] != "black" else "red"])
    assert check_record(record, suite)


def test_pixels_agree_with_scene(suite: Path) -> None:
    checked = 0
    for record in _records(suite / "train.jsonl")[:600]:
        scenes = record["scene"]["images"] if record["scene"]["type"] == "multi" else [record["scene"]]
        paths = record["image"] if isinstance(record["image"], list) else [record["image"]]
        for scene, path in zip(scenes, paths):
            if scene["type"] != "shapes":
                continue
            pixels = np.asarray(Image.open(suite / path).convert("RGB"))
            assert pixels.shape == (scene["height"], scene["width"], 3)
            for shape in scene["shapes"]:
                assert tuple(pixels[shape["cy"], shape["cx"]]) == COLOURS[shape["colour"]]
            assert tuple(pixels[0, 0]) in {(255, 255, 255), (232, 232, 232), (250, 244, 225), (228, 238, 252)}
            checked += 1
    assert checked > 100


def test_shape_bbox_is_the_drawn_bbox() -> None:
    """Each shape's geometric box equals PIL's drawn pixels exactly (what grounding answers use)."""
    for seed in range(60):
        scene = sample_shape_scene(random.Random(seed))
        for shape in scene.shapes:
            alone = type(scene)(scene.width, scene.height, "white", (shape,))
            ink = Image.fromarray((np.asarray(alone.render()) != 255).any(axis=2).astype(np.uint8) * 255)
            assert ink.getbbox() == shape.bbox(), shape
        assert scene_from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_records_load_and_validate(suite: Path) -> None:
    files = [suite / f"{s}.jsonl" for s in ("train", "val", "test")] + sorted((suite / "families").glob("*.jsonl"))
    for path in files:
        n = 0
        for record in iter_records(str(path)):
            assert isinstance(record, Record), record
            assert validate_record(record) is None
            placeholders = sum(t.value.count("<image>") for t in record.conversations)
            assert placeholders == len(record.images) >= 1
            n += 1
        assert n == len(path.read_text().splitlines())
    names = {p.stem for p in (suite / "mixtures").glob("*.yaml")}
    assert {"captions", "multitask", "sft", "cot", "all"} <= names
    for path in (suite / "mixtures").glob("*.yaml"):
        config = MixtureConfig.from_yaml(path)
        assert all(d.max_num == 1 for d in config.datasets)
    cot = MixtureConfig.from_yaml(suite / "mixtures" / "cot.yaml")
    assert {d.kind for d in cot.datasets} == {"cot", "direct"}


def test_cot_replies_and_direct_twins(suite: Path) -> None:
    rows = _records(suite / "train.jsonl")
    cot = [r for r in rows if r["kind"] == "cot"]
    assert len(cot) > 50
    direct = {(r["image"], r["task"]): r for r in rows if r["kind"] == "direct" and r["task"].startswith("reasoning/")}
    twins = 0
    for r in cot:
        m = re.fullmatch(r"<think>\n(.+)\n</think>\n\\boxed\{(\d+)\}", r["conversations"][-1]["value"], re.S)
        assert m and m[2] == r["answer"] and "<think>" not in m[1]
        twin = direct.get((r["image"], r["task"]))
        if twin:
            twins += 1
            assert twin["answer"] == r["answer"] == twin["conversations"][-1]["value"]
            assert r["conversations"][0]["value"].startswith(twin["conversations"][0]["value"])
    assert twins >= len(cot) - 1  # only the very last item of a split may lose its direct twin


def test_focus_warm_up_items_are_one_large_object(suite: Path) -> None:
    rows = [r for r in _records(suite / "train.jsonl") if r["task"].startswith("focus/")]
    assert len(rows) >= 100
    assert {r["task"] for r in rows} >= {"focus/shapes/colour", "focus/shapes/kind", "focus/captions/brief"}
    for r in rows:
        scene = r["scene"]
        if scene["type"] == "shapes":
            (shape,) = scene["shapes"]  # exactly one
            assert shape["half"] >= 0.2 * scene["width"] and (shape["row"], shape["col"]) == (1, 1)
        else:
            assert scene["type"] == "text" and scene["font_size"] >= 32  # the largest of the >=40 sizes that fits
    # the generic families never draw these scenes: their shapes stay inside a grid cell
    others = [r for r in _records(suite / "train.jsonl") if r["task"].startswith("shapes/")]
    assert others and all(s["half"] < scene_width / 6 for r in others for s in r["scene"]["shapes"]
                          for scene_width in [r["scene"]["width"]])


def test_checker_rejects_wrong_focus_boxes(suite: Path) -> None:
    """Focus boxes (training/focus.py) are checked against the question's subjects; a moved, dropped or
    added box is caught, and so is a shape count or existence question without its sink ([0], the image's start
    token) or another question with one."""
    # (The warm-up family's one large shape fills the image: a shifted box still holds its centre.)
    records = [r for r in _records(suite / "val.jsonl")
               if r.get("focus") and r["focus"][0] and not r["task"].startswith("focus/")]
    tasks = {r["task"] for r in records}
    assert {"shapes/colour", "shapes/position", "shapes/count_all", "grounding/locate", "ocr/word",
            "multi_image/count"} <= tasks, tasks
    checked = sinks = 0
    for record in records[:80]:
        assert check_record(record, suite) == []
        boxes = record["focus"][0]
        counting = record["task"] in ("shapes/count_all", "shapes/count_kind", "shapes/count_colour",
                                      "shapes/exists")
        assert ([list(box) for box in boxes if len(box) == 1] == [[0]]) == counting
        unsunk = json.loads(json.dumps(record))  # the sink removed from a count, or added to another question
        unsunk["focus"][0] = [box for box in boxes if len(box) != 1] + ([] if counting else [[0]])
        assert check_record(unsunk, suite)
        sinks += counting
        if len(boxes[0]) == 1:  # a count of zero: the sink alone
            continue
        if record["task"].startswith("ocr/"):
            moved = json.loads(json.dumps(record))
            moved["focus"][0][0][1] += 60
            assert check_record(moved, suite)
            continue
        dropped = json.loads(json.dumps(record))
        dropped["focus"][0] = boxes[1:]
        assert check_record(dropped, suite)
        shifted = json.loads(json.dumps(record))  # one cell to the side: another shape's place, or empty
        index, x1, y1, x2, y2, *tag = shifted["focus"][0][0]
        step = 333 if x2 + 333 <= 1000 else -333
        shifted["focus"][0][0] = [index, x1 + step, y1, x2 + step, y2, *tag]
        assert check_record(shifted, suite)
        tagged = json.loads(json.dumps(record))  # a subject tag where there is none, or a second one
        tagged["focus"][0][0].append(0)
        assert check_record(tagged, suite)
        checked += 1
    assert checked >= 40 and sinks >= 5
    # A spatial question's second lookup (subject 2): for a relation, B when it holds, else the start token; for
    # which, the answer shape. Pointing it at the other target, or leaving it out, is caught.
    spatial = [r for r in _records(suite / "val.jsonl") + _records(suite / "test.jsonl")
               if r["task"] in ("shapes/relation", "shapes/which")]
    answers = {r["answer"] for r in spatial if r["task"] == "shapes/relation"}
    assert answers == {"yes", "no"} and any(r["task"] == "shapes/which" for r in spatial)
    for record in spatial:
        boxes = record["focus"][0]
        assert check_record(record, suite) == [] and boxes[-1][-1] == 2
        if record["task"] == "shapes/relation":
            assert (boxes[2] == [0, 2]) == (record["answer"] == "no")
            flipped = json.loads(json.dumps(record))
            flipped["focus"][0][2] = [*boxes[1][:5], 2] if record["answer"] == "no" else [0, 2]
            assert check_record(flipped, suite)
        missing = json.loads(json.dumps(record))
        missing["focus"][0] = boxes[:-1]
        assert check_record(missing, suite)
    # Records without subjects carry no boxes.
    assert not any(r.get("focus") for r in _records(suite / "val.jsonl")
                   if r["task"].split("/")[0] in ("captions", "charts", "reasoning"))


def _ink_centroids(image: np.ndarray, background: tuple[int, int, int], slot: int) -> dict[tuple[int, int], tuple]:
    ink = np.abs(image.astype(int) - np.array(background)).sum(-1) > 60
    cells = {}
    for row in range(image.shape[0] // slot):
        for col in range(image.shape[1] // slot):
            ys, xs = np.nonzero(ink[row * slot:(row + 1) * slot, col * slot:(col + 1) * slot])
            if len(xs):
                cells[(row, col)] = (xs.mean(), ys.mean(), len(xs))
    return cells


def test_slot_layout_puts_one_character_per_slot(tmp_path: Path) -> None:
    """text_slot: every character is drawn centred in its own slot (the ViT patch), words on their own rows,
    the box is the slot block; the checker accepts the suite; the default layout is unchanged (no `slot`)."""
    from sailvl2.synth.scene import BACKGROUNDS, TextScene, sample_text_scene

    rng = random.Random(0)
    for _ in range(40):
        scene = sample_text_scene(rng, 168, 168, slot=28)
        assert scene.x % 28 == 0 and scene.y % 28 == 0
        x1, y1, x2, y2 = scene.text_box()
        assert 0 <= x1 < x2 <= 168 and 0 <= y1 < y2 <= 168
        lines = scene.text.split(" ")
        assert (x2 - x1, y2 - y1) == (28 * max(map(len, lines)), 28 * len(lines))
        drawn = _ink_centroids(np.asarray(scene.render()), BACKGROUNDS[scene.background], 28)
        expected = {(scene.y // 28 + line, scene.x // 28 + k) for line, word in enumerate(lines)
                    for k in range(len(word))}
        assert set(drawn) == expected  # ink in exactly the character slots, none elsewhere
        for (row, col), (cx, cy, _) in drawn.items():  # each glyph near its slot's centre
            assert abs(cx - 13.5) < 6 and abs(cy - 13.5) < 7, (scene.text, row, col, cx, cy)
        again = scene_from_dict(scene.to_dict())
        assert again == scene and again.character_centres()[0] == (lines[0][0], x1 + 14, y1 + 14)
    free = TextScene(168, 168, "white", "dog", "black", 20, 10, 10, "word")
    assert "slot" not in free.to_dict() and scene_from_dict(free.to_dict()) == free
    manifest = generate_suite(tmp_path / "slots", seed=2, sizes={"train": 120, "test": 40}, families=["ocr"],
                              image_size=168, workers=1, text_slot=28)
    assert manifest["text_slot"] == 28
    report = check_suite(tmp_path / "slots")
    assert report.failures == [] and report.checked == 160
    scenes = [json.loads(line)["scene"] for line in (tmp_path / "slots" / "train.jsonl").read_text().splitlines()]
    assert {scene["slot"] for scene in scenes} == {28}


def test_reading_images_add_train_only_streams(tmp_path: Path) -> None:
    """number_images / letter_images: extra reading records for the train split only, as the `ocr-numbers` and
    `ocr-letters` streams the multi-task and SFT mixtures draw; answers re-derived by the checker, texts owned
    by the train split (so no letter string is a held-out word), byte-identical on regeneration, and the rest
    of the suite unchanged."""
    sizes = {"train": 120, "test": 40}
    plain = tmp_path / "plain"
    generate_suite(plain, seed=3, sizes=sizes, families=["ocr", "shapes"], image_size=168, workers=1, text_slot=28)
    manifest = generate_suite(tmp_path / "a", seed=3, sizes=sizes, families=["ocr", "shapes"], image_size=168,
                              workers=2, text_slot=28, number_images=50, letter_images=40)
    generate_suite(tmp_path / "b", seed=3, sizes=sizes, families=["ocr", "shapes"], image_size=168, workers=1,
                   text_slot=28, number_images=50, letter_images=40)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    numbers = _records(tmp_path / "a" / "families" / "train-ocr-numbers.jsonl")
    letters = _records(tmp_path / "a" / "families" / "train-ocr-letters.jsonl")
    assert manifest["number_images"] == len(numbers) == 50 and manifest["letter_images"] == len(letters) == 40
    assert len({r["id"] for r in numbers + letters}) == 90
    assert all(r["id"].startswith("train-letters-") for r in letters)
    held_out = {r["scene"]["text"].lower() for r in _records(tmp_path / "a" / "test.jsonl") if r["task"] == "ocr/word"}
    for record in numbers + letters:
        scene, text = record["scene"], record["scene"]["text"]
        assert record["answer"] == text and record["conversations"][1]["value"] == text and scene["slot"] == 28
        if record in numbers:
            assert record["task"] == "ocr/number" and text.isdigit()
        else:
            assert record["task"] == "ocr/word" and text.isalpha() and 2 <= len(text) <= 6
            assert text.lower() not in held_out
        assert split_of(("text", text.lower())) == "train"
        image = Image.open(tmp_path / "a" / "families" / record["image"])
        assert image.size == (168, 168)
    # many different texts, not one repeated; letter strings in both cases
    assert len({r["scene"]["text"] for r in numbers}) > 30 and len({r["scene"]["text"] for r in letters}) > 35
    assert any(r["answer"].isupper() for r in letters) and any(r["answer"].islower() for r in letters)
    # The checker re-derives every answer (and reads the pixels) and counts the streams in the train split.
    report = check_suite(tmp_path / "a")
    assert report.failures == [] and report.checked == 160 + 90 and report.shared_scenes["test&train"] == 0
    # The splits' own files and images are exactly those of the suite without the streams.
    with_stream, without = _digests(tmp_path / "a"), _digests(plain)
    extra = {path for path in with_stream if "numbers" in path or "letters" in path}
    assert {p: d for p, d in with_stream.items() if p not in extra and not p.startswith(("mixtures", "manifest"))} \
        == {p: d for p, d in without.items() if not p.startswith(("mixtures", "manifest"))}
    multitask = MixtureConfig.from_yaml(tmp_path / "a" / "mixtures" / "multitask.yaml")
    sft = MixtureConfig.from_yaml(tmp_path / "a" / "mixtures" / "sft.yaml")
    assert {"ocr-numbers", "ocr-letters"} <= {d.name for d in multitask.datasets}
    assert dict(zip([d.name for d in multitask.datasets], multitask.rates()))["ocr-letters"] == 1.5
    assert {d.name: d.repeat for d in sft.datasets}["ocr-numbers"] == 0.25
    assert dict(zip([d.name for d in sft.datasets], sft.rates()))["ocr-letters"] == 1  # whole (session 19)
    assert "ocr-numbers" not in (plain / "mixtures" / "multitask.yaml").read_text()
    # The free layout draws letter strings too, and they pass the checker.
    generate_suite(tmp_path / "free", seed=3, sizes={"train": 10}, families=["ocr"], image_size=168, workers=1,
                   letter_images=12)
    assert check_suite(tmp_path / "free").failures == []
    assert "slot" not in _records(tmp_path / "free" / "families" / "train-ocr-letters.jsonl")[0]["scene"]
    with pytest.raises(ValueError, match="train"):
        generate_suite(tmp_path / "c", seed=3, sizes={"test": 10}, number_images=5)
    for argument in ("number_images", "letter_images"):
        with pytest.raises(ValueError, match=argument):
            generate_suite(tmp_path / "c", seed=3, sizes=sizes, **{argument: -1})
    assert not (tmp_path / "c").exists()  # refused before anything is written


def test_synth_command_writes_the_slot_layout_and_number_images(tmp_path: Path, capsys) -> None:
    from sailvl2.synth.__main__ import main

    out = tmp_path / "cli"
    assert main([str(out), "--train", "60", "--val", "10", "--test", "20", "--families", "ocr", "--image-size",
                 "168", "--workers", "1", "--text-slot", "28", "--number-images", "12", "--letter-images", "7",
                 "--check"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["text_slot"] == 28 and manifest["number_images"] == 12 and manifest["letter_images"] == 7
    assert "checked 109 records: 0 failures" in capsys.readouterr().out
    assert {r["scene"]["slot"] for r in _records(out / "families" / "train-ocr-numbers.jsonl")} == {28}
