"""Caption / video judges: reply parsing, rubric prompts, the filter rules worked by hand, the endpoint backend
against a local `http.server` stub (which looks at the image it receives), the local backend against direct
`chat` calls, judge data checked with the suite's independent caption checker, class resampling counts, the
judge stage inside a curation pipeline, and a smoke run of the judge training driver."""

from __future__ import annotations

import base64
import io
import json
import re
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

import sailvl2
from sailvl2.curation import Item, PipelineConfig, run_pipeline
from sailvl2.curation.judge_data import (
    JudgePair, balance, build_judge_data, caption_pairs, corrupt_scene, pairs_from_records,
)
from sailvl2.curation.judges import (
    EndpointJudge, JudgeRequest, LocalJudge, caption_filter_reason, judge_prompt, parse_score, parse_yes_no,
    video_filter_reason,
)
from sailvl2.curation.stages import get_stage
from sailvl2.errors import CurationError
from sailvl2.synth import generate_suite
from sailvl2.synth.checker_captions import CaptionMismatch, check_caption
from sailvl2.synth.scene import scene_from_dict
from sailvl2.tiny import build_random_checkpoint

COLOURS = {"red": (220, 30, 30), "blue": (30, 80, 225)}


# ----------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("reply, expected", [
    ("4", 4), ("Score: 4/5", 4), ("4 out of 5", 4), ("On a scale of 1 to 5: 2", 2), ("I would give it a 3.", 3),
    ("**5**", 5), ("five", 5), ("<think>maybe 1</think>3", 3), ("3.5", None), ("6", None), ("0", None),
    ("between 3 and 4", None), ("Rating: 1 to 5", None), ("I cannot tell.", None), ("", None),
])
def test_parse_score(reply, expected):
    assert parse_score(reply) == expected


def test_parse_score_video_range():
    assert parse_score("-1", -1, 10) == -1 and parse_score("10", -1, 10) == 10 and parse_score("Score: 7", -1, 7) == 7
    assert parse_score("9", -1, 8) is None and parse_score("-2", -1, 10) is None


@pytest.mark.parametrize("reply, expected", [
    ("Yes", True), ("No.", False), ("yes, it matches", True), ("The answer is no.", False), ("NO", False),
    ("No, although yes for the colour", False), ("Not sure", None), ("I think yes or no", None), ("Y", None),
])
def test_parse_yes_no(reply, expected):
    assert parse_yes_no(reply) is expected


# ----------------------------------------------------------------------------------------------- prompts


def test_rubric_prompts_carry_the_paper_items():
    ita = judge_prompt("ita_score", "A red  square.\n", "rubric")
    for item in ("specificity", "completeness", "accuracy", "hallucinated", "1 to 5"):
        assert item in ita
    assert "Caption: A red square." in ita  # whitespace normalised
    vir = judge_prompt("vir_score", "A red square.", "rubric")
    for item in ("instances and entities", "visual complexity", "fine-grained details", "texture"):
        assert item in vir
    assert "red square" not in vir  # VIR rates the image alone
    assert judge_prompt("ita_yesno", "x", "rubric").endswith("Reply Yes or No.")
    assert judge_prompt("ita_yesno", "A cat.", "compact") == \
        "<image>\nCaption: A cat.\nDoes the caption match the image? Answer Yes or No."
    assert ita.startswith("<image>\nJudge how well")
    assert judge_prompt("vir_yesno", "", "rubric", 2).startswith("<image>\n<image>\nJudge")
    with pytest.raises(CurationError, match="unknown judge"):
        judge_prompt("ita_stars", "x")
    with pytest.raises(CurationError, match="prompt style"):
        judge_prompt("ita_score", "x", "long")


# ----------------------------------------------------------------------------------------------- rules


def test_caption_filter_rule_by_hand():
    assert caption_filter_reason({"vir": 3, "ita": 3, "vir_yes": 1, "ita_yes": 1}) is None
    assert caption_filter_reason({"vir": 5, "ita": 2, "vir_yes": 1, "ita_yes": 1}) == "judge: ita 2 < 3"
    assert caption_filter_reason({"vir": 4, "ita": 4, "vir_yes": 0, "ita_yes": 1}) == "judge: vir yes/no said No"
    assert caption_filter_reason({"vir": 1, "ita": 2, "ita_yes": 0}) == \
        "judge: vir 1 < 3; ita 2 < 3; ita yes/no said No"
    assert caption_filter_reason({"ita": 4}, ita_min=5) == "judge: ita 4 < 5"
    assert caption_filter_reason({"ita": 4, "ita_yes": 0}, require_yes=False) is None
    assert caption_filter_reason({}) is None  # no judge asked: nothing votes


def test_video_rule_by_hand():
    assert video_filter_reason({"alignment": 5, "richness": 5, "difficulty": 3}) is None
    assert video_filter_reason({"alignment": 4, "richness": 7, "difficulty": 8}) == "video_judge: alignment 4 < 5"
    assert video_filter_reason({"alignment": 10, "richness": -1, "difficulty": 2}) == \
        "video_judge: richness -1 < 5; difficulty 2 < 3"
    assert video_filter_reason({"alignment": 6, "richness": 6}) == "video_judge: difficulty missing"
    assert video_filter_reason({"alignment": 3, "richness": 3, "difficulty": 1}, 3, 3, 1) is None


def test_video_judge_stage_with_stored_scores(tmp_path):
    stage = get_stage("video_judge", {})
    frames = ["f1.png", "f2.png"]

    def scored(alignment, richness, difficulty):
        scores = {"alignment": alignment, "richness": richness, "difficulty": difficulty}
        return {"video": frames, "video_scores": scores}

    items = [Item("a", scored(8, 5, 3), str(tmp_path)),
             Item("b", scored(8, 4, 6), str(tmp_path)),
             Item("c", {"video": frames}, str(tmp_path)),
             Item("d", {"image": "x.png"}, str(tmp_path))]
    decisions = stage.process(items)
    assert [d.kept for d in decisions] == [True, False, False, True]
    assert decisions[0].scores == {"video_alignment": 8, "video_richness": 5, "video_difficulty": 3}
    assert decisions[1].reason == "video_judge: richness 4 < 5"
    assert decisions[2].reason == "video_judge: alignment missing; richness missing; difficulty missing"
    looser = get_stage("video_judge", {"richness_min": 4})
    assert looser.process(items[1:2])[0].kept
    with pytest.raises(CurationError, match="unknown setting"):
        get_stage("video_judge", {"alignment_minimum": 4})


# ----------------------------------------------------------------------------------------------- endpoint


class _JudgeStub(BaseHTTPRequestHandler):
    """A fake vision judge: decodes the image it is sent, names its centre colour, and compares it with the
    caption. ITA score 5 / Yes when the caption names the colour, else 2 / No; "mystery" captions get an
    unreadable ITA score; VIR is always "Score: 4/5" and "Yes"."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        parts = body["messages"][-1]["content"]
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        image = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1]))).convert("RGB")
        centre = image.getpixel((image.width // 2, image.height // 2))
        colour = next(name for name, rgb in COLOURS.items() if rgb == centre)
        caption = re.search(r"Caption: (.*)", text)
        matches = caption is not None and colour in caption.group(1)
        if "(VIR)" in text:
            reply = "Score: 4/5" if "1 to 5" in text else "Yes"
        elif "1 to 5" in text:
            reply = "I cannot say." if "mystery" in text else ("5" if matches else "2")
        else:
            reply = "Yes, it does." if matches else "No, the colour is wrong."
        with self.server.lock:
            self.server.seen.append((image.size, text))
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeStub)
    server.lock, server.seen = threading.Lock(), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _colour_image(path: Path, colour: str, size=(48, 40)) -> str:
    Image.new("RGB", size, COLOURS[colour]).save(path)
    return path.name


def _caption_record(rid: str, image: str | None, caption: str) -> dict:
    record = {"id": rid, "conversations": [{"from": "human", "value": ("<image>\n" if image else "") + "Describe it."},
                                           {"from": "gpt", "value": caption}]}
    return record | ({"image": image} if image else {})


def test_endpoint_judge_sends_the_image_and_parses_replies(stub, tmp_path):
    red = tmp_path / _colour_image(tmp_path / "red.png", "red", (50, 30))
    judge = EndpointJudge(f"http://127.0.0.1:{stub.server_port}", "stub-judge", concurrency=2)
    requests = [JudgeRequest((str(red),), "A red box."), JudgeRequest((str(red),), "A blue box."),
                JudgeRequest((str(red),), "A mystery box.")]
    assert [v.value for v in judge.ask("ita_score", requests)] == [5, 2, None]
    assert [v.value for v in judge.ask("ita_yesno", requests)] == [True, False, False]
    assert judge.unparseable == Counter({"ita_score": 1}) and judge.asked["ita_score"] == 3
    assert {size for size, _ in stub.seen} == {(50, 30)}  # the stub decoded our PNG at its true size


def test_judge_stage_in_a_pipeline_filters_by_the_rule(stub, tmp_path):
    rows = [_caption_record("good", _colour_image(tmp_path / "a.png", "red"), "A red square."),
            _caption_record("wrong", _colour_image(tmp_path / "b.png", "blue"), "A red square."),
            _caption_record("mystery", _colour_image(tmp_path / "c.png", "red"), "A mystery red square."),
            _caption_record("text", None, "No image here.")]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stage = {"stage": "judge", "backend": "endpoint", "api_base": f"http://127.0.0.1:{stub.server_port}",
             "model": "stub-judge"}
    config = PipelineConfig.from_dict({"inputs": ["in.jsonl"], "output": "out", "stages": [stage]}, tmp_path)
    result = run_pipeline(config, workers=0, resume=False)
    kept = [json.loads(line)["id"] for f in result.data_files for line in f.read_text().splitlines()]
    assert sorted(kept) == ["good", "text"]
    decisions = {d["id"]: d for f in (tmp_path / "out" / "decisions").glob("*.jsonl")
                 for d in map(json.loads, f.read_text().splitlines()) if d["stage"] == "judge"}
    assert decisions["good"]["scores"] == {"vir": 4, "ita": 5, "vir_yes": 1, "ita_yes": 1}
    assert decisions["wrong"]["reason"] == "judge: ita 2 < 3; ita yes/no said No"
    assert decisions["mystery"]["reason"] == "judge: ita_score reply unparseable"
    assert decisions["mystery"]["scores"]["judge_unparseable"] == 1
    assert len(stub.seen) == 4 * 3  # four judges, three records with images
    settings = {k: v for k, v in stage.items() if k != "stage"}
    loose = get_stage("judge", {**settings, "require_yes": False, "ita_min": 2, "unparseable": "keep"})
    items = [Item(r["id"], r, str(tmp_path)) for r in rows]
    assert [d.kept for d in loose.process(items)] == [True, True, True, True]


def test_judge_stage_settings_are_checked():
    with pytest.raises(CurationError, match="unknown setting"):
        get_stage("judge", {"backend": "local", "model": "m", "ita_minimum": 2})
    with pytest.raises(CurationError, match="api_base"):
        get_stage("judge", {"backend": "endpoint", "model": "m"})
    with pytest.raises(CurationError, match="judges must be"):
        get_stage("judge", {"backend": "local", "model": "m", "judges": ["ita_stars"]})
    with pytest.raises(CurationError, match="not asked"):
        get_stage("judge", {"backend": "local", "judges": ["ita_score"], "models": {"vir_score": "m"}})


# ----------------------------------------------------------------------------------------------- local


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_random_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


def test_local_judge_matches_direct_chat(tiny_model, tmp_path):
    images = [tmp_path / _colour_image(tmp_path / "r.png", "red"), tmp_path / _colour_image(tmp_path / "b.png", "blue")]
    captions = ["A red square.", "A blue square."]
    judge = LocalJudge(str(tiny_model), batch_size=2, max_new_tokens=3)
    verdicts = judge.ask("ita_score", [JudgeRequest((str(p),), c) for p, c in zip(images, captions)])
    vlm = sailvl2.load(tiny_model, device="cpu", dtype=torch.float32)
    for path, caption, verdict in zip(images, captions, verdicts):
        direct = vlm.chat(judge_prompt("ita_score", caption, "rubric"), images=str(path), max_new_tokens=3).answer
        assert verdict.reply == direct and verdict.value == parse_score(direct)
    (tiny_model / "judge.json").write_text(json.dumps({"prompt_style": "compact"}))
    try:
        request = JudgeRequest((str(images[0]),), "A red square.")
        compact = LocalJudge(str(tiny_model), max_new_tokens=3).ask("ita_yesno", [request])
    finally:
        (tiny_model / "judge.json").unlink()
    prompt = judge_prompt("ita_yesno", "A red square.", "compact")
    direct = vlm.chat(prompt, images=str(images[0]), max_new_tokens=3).answer
    assert compact[0].reply == direct


# ----------------------------------------------------------------------------------------------- judge data


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    generate_suite(out, seed=3, sizes={"train": 120, "test": 60}, families={"captions": 1, "focus": 1}, workers=1)
    return out


def _wrong_facts(true: dict, claimed: dict) -> int:
    """Shapes present in one scene only (cells differ) plus attributes changed on shapes in both (one per
    cell, so a cell names a shape)."""
    a = {(s["row"], s["col"]): s for s in true["shapes"]}
    b = {(s["row"], s["col"]): s for s in claimed["shapes"]}
    return len(a.keys() ^ b.keys()) + sum((a[c]["colour"] != b[c]["colour"]) + (a[c]["kind"] != b[c]["kind"])
                                          + (a[c]["size"] != b[c]["size"]) for c in a.keys() & b.keys())


def test_corruptions_are_wrong_against_the_scene(suite):
    records = [json.loads(line) for line in (suite / "train.jsonl").read_text().splitlines()]
    rng, checked = random.Random(0), Counter()
    for record in records:
        if record["task"] not in ("captions/brief", "captions/detailed", "focus/captions/brief") \
                or record["scene"]["type"] != "shapes":
            continue
        task, scene = record["task"].removeprefix("focus/"), record["scene"]
        for pair in caption_pairs(record, "img.png", rng):
            checked[pair.variant] += 1
            if pair.variant == "true":
                check_caption(task, scene, pair.caption)  # the independent checker accepts it
                assert _focus_cells(pair, scene) == sorted((s["row"], s["col"]) for s in scene["shapes"])
                continue
            # The evidence is exactly the cells where the claim and the image differ.
            truth, claim = _cell_facts(scene), _cell_facts(pair.claimed)
            assert _focus_cells(pair, scene) == sorted(c for c in truth.keys() | claim.keys()
                                                       if truth.get(c) != claim.get(c))
            with pytest.raises(CaptionMismatch):
                check_caption(task, scene, pair.caption)  # wrong about the real scene ...
            check_caption(task, pair.claimed, pair.caption)  # ... and exactly the claimed one
            assert _wrong_facts(scene, pair.claimed) == pair.variant.count("+") + 1 == 3 - pair.score
    assert {"true", "colour", "kind", "count"} <= set(checked)
    assert sum(v for k, v in checked.items() if "+" in k) > 0


def _cell_facts(scene) -> dict[tuple[int, int], tuple[str, str, str]]:
    return {(s["row"], s["col"]): (s["kind"], s["colour"], s["size"]) for s in scene["shapes"]}


def _focus_cells(pair, scene) -> list[tuple[int, int]]:
    """The grid cells of a pair's focus boxes (0-1000), from each box's centre."""
    return sorted((int((y1 + y2) / 2 * 3 // 1000), int((x1 + x2) / 2 * 3 // 1000)) for x1, y1, x2, y2 in pair.focus)


def test_corrupt_scene_rejects_repeats():
    scene = scene_from_dict({"type": "shapes", "width": 224, "height": 224, "background": "white", "shapes": [
        {"kind": "circle", "colour": "red", "size": "large", "row": 1, "col": 1, "cx": 112, "cy": 112, "half": 27}]})
    assert len(corrupt_scene(scene, ["count"], random.Random(1)).shapes) == 2  # one shape: a count change adds
    with pytest.raises(CurationError, match="distinct"):
        corrupt_scene(scene, ["colour", "colour"], random.Random(1))


def test_balance_is_uniform_across_classes():
    sizes = {1: 3, 2: 10, 5: 1}
    pairs = [JudgePair(f"{s}-{i}.png", "c", s, "v", f"{s}-{i}", "t") for s, n in sizes.items() for i in range(n)]
    drawn = balance(pairs, lambda p: p.score, 4, random.Random(0))
    assert Counter(p.score for p in drawn) == {1: 4, 2: 4, 5: 4}
    assert Counter(p.image for p in drawn if p.score == 2).most_common(1)[0][1] == 1  # big class: no repeats
    exact = balance(pairs, lambda p: p.score, 4, random.Random(0), with_replacement=False)
    assert Counter(p.score for p in exact) == {1: 1, 2: 1, 5: 1}


def test_build_judge_data_counts_and_disjoint_splits(suite, tmp_path):
    manifest = build_judge_data(suite, tmp_path, per_class_train=30, per_class_heldout=5, seed=0)
    files = manifest["files"]
    assert files["train-ita_score.jsonl"]["classes"] == {"1": 30, "2": 30, "5": 30}
    assert files["heldout-ita_score.jsonl"]["classes"] == {"1": 5, "2": 5, "5": 5}
    yes_no = files["train-ita_yesno.jsonl"]["classes"]
    assert yes_no == {"Yes": 30, "No": 30}  # Yes = score 5 (30); No (scores 1 and 2, 60) cut to match
    lines = (tmp_path / "train-ita_yesno.jsonl").read_text().splitlines()
    no_scores = Counter(json.loads(x)["judge"]["score"] for x in lines)
    assert no_scores[5] == 30 and no_scores[1] + no_scores[2] == 30
    train = [json.loads(x) for x in (tmp_path / "train-ita_score.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (tmp_path / "heldout-ita_yesno.jsonl").read_text().splitlines()]
    assert held and {r["judge"]["image_id"].split("-")[0] for r in held} == {"test"}  # the suite has no val split
    assert not {r["image"] for r in train} & {r["image"] for r in held}
    for record in train[:20]:
        assert (tmp_path / record["image"]).is_file()
        assert record["conversations"][-1]["value"] == str(record["judge"]["score"])
        assert record["conversations"][0]["value"] == \
            f"<image>\nCaption: {record['judge']['caption']}\nRate the caption from 1 to 5."
    assert all(r["conversations"][-1]["value"] == ("Yes" if r["judge"]["score"] >= 3 else "No") for r in held)
    focus_only = pairs_from_records(
        [json.loads(x) for x in (suite / "train.jsonl").read_text().splitlines()], suite, random.Random(0), ("focus",))
    assert focus_only and {p.task for p in focus_only} == {"focus/captions/brief"}


# ----------------------------------------------------------------------------------------------- driver


def test_train_judge_smoke(tmp_path):
    from sailvl2.curation.train_judge import binary_metrics, train_judges

    by_hand = binary_metrics([True, True, True, False, False], [True, True, False, True, False])
    assert by_hand["keep"] == {"precision": round(2 / 3, 4), "recall": round(2 / 3, 4)}
    assert by_hand["drop"] == {"precision": 0.5, "recall": 0.5}
    report = train_judges(tmp_path / "run", preset="smoke")
    for name in ("ita_yesno", "ita_score"):
        judge = report["judges"][name]
        assert judge["steps"] == 2 and len(judge["examples"]) > 0
        held = (tmp_path / "run" / "data" / f"heldout-{name}.jsonl").read_text().splitlines()
        assert judge["n"] == len(held) and sum(judge["counts"].values()) == len(held)
        config = json.loads((tmp_path / "run" / name / "final" / "judge.json").read_text())
        assert config["prompt_style"] == "compact"
        # provenance names the default used, not this machine's path to it; no temporary file is left behind
        assert config["init"] in ("shipped nano model", "random (smoke)") and "/" not in config["init"]
        assert not [p for p in (tmp_path / "run" / name / "final").iterdir() if ".tmp-" in p.name]
    # The pipeline check agrees with the judges' own verdicts put through the rule.
    records = [json.loads(x) for x in (tmp_path / "run" / "data" / "heldout-ita_score.jsonl").read_text().splitlines()]
    requests = [JudgeRequest((str(tmp_path / "run" / "data" / r["image"]),), r["judge"]["caption"]) for r in records]
    verdicts = {name: LocalJudge(str(tmp_path / "run" / name / "final"), max_new_tokens=4).ask(name, requests)
                for name in ("ita_score", "ita_yesno")}
    kept = 0
    for score, yes in zip(verdicts["ita_score"], verdicts["ita_yesno"]):
        if score.value is not None and yes.value is not None:
            kept += caption_filter_reason({"ita": score.value, "ita_yes": float(yes.value)}) is None
    pipeline = report["pipeline"]["counts"]
    assert pipeline["good_kept"] + pipeline["bad_kept"] == kept
    assert (tmp_path / "run" / "report.md").read_text().startswith("# Caption judges (preset smoke")


# ------------------------------------------------------------------------------------ verifying judge


def _expected_checks(scene: dict, caption: str) -> list[str]:
    """The checks recomputed from the caption *text* against the true scene (not from the claimed scene)."""
    match = re.fullmatch(r"(\d+) shapes?: (.*)\.", caption)
    assert match, caption
    phrases = re.split(r", | and ", match.group(2))
    left = Counter((s["size"], s["colour"], s["kind"]) for s in scene["shapes"])
    lines = [f"{match.group(1)} {'shape' if match.group(1) == '1' else 'shapes'}: "
             f"{'yes' if int(match.group(1)) == len(scene['shapes']) else 'no'}"]
    for phrase in phrases:
        size, colour, kind = phrase.removeprefix("a ").split(" ")
        lines.append(f"{phrase}: {'yes' if left[(size, colour, kind)] > 0 else 'no'}")
        left[(size, colour, kind)] -= 1
    return lines


def test_verification_lines_follow_the_caption_text(suite):
    records = [json.loads(line) for line in (suite / "train.jsonl").read_text().splitlines()]
    rng, seen = random.Random(1), Counter()
    for record in records:
        if record["task"] not in ("captions/brief", "focus/captions/brief") or record["scene"]["type"] != "shapes":
            continue
        for pair in caption_pairs(record, "img.png", rng):
            assert list(pair.checks) == _expected_checks(record["scene"], pair.caption), pair.caption
            # A caption is right iff every check says yes.
            assert all(line.endswith(": yes") for line in pair.checks) == (pair.label == "Yes")
            seen[pair.label] += 1
    assert seen["Yes"] > 5 and seen["No"] > 5


def test_build_judge_data_verify_writes_checked_cot_replies(suite, tmp_path):
    manifest = build_judge_data(suite, tmp_path, per_class_train=20, per_class_heldout=4, seed=0, verify=True)
    assert manifest["verify"] is True
    rows = [json.loads(x) for x in (tmp_path / "train-ita_yesno.jsonl").read_text().splitlines()]
    assert rows and all(r["judge"]["task"].endswith("captions/brief") and r["kind"] == "cot" for r in rows)
    for row in rows:
        reply = row["conversations"][-1]["value"]
        thinking, answer = reply.split("</think>")
        assert thinking == "<think>\n" + "\n".join(row["judge"]["checks"]) + "\n"
        assert answer.strip() == row["judge"]["label"] and "focus" not in row
    scores = [json.loads(x) for x in (tmp_path / "train-ita_score.jsonl").read_text().splitlines()]
    assert all(r["conversations"][-1]["value"] == str(r["judge"]["score"]) for r in scores)  # plain score replies


def test_local_judge_takes_its_reply_length_from_judge_json(tmp_path):
    (tmp_path / "judge.json").write_text(json.dumps({"judge": "ita_yesno", "prompt_style": "compact",
                                                     "max_new_tokens": 160}))
    asked = []

    class Fake:
        def batch_chat(self, texts, images, max_new_tokens, **_):
            asked.append(max_new_tokens)
            return [type("R", (), {"answer": "Yes"})() for _ in texts]

    judge = LocalJudge(str(tmp_path), max_new_tokens=4)
    judge._vlm = Fake()
    verdicts = judge.ask("ita_yesno", [JudgeRequest((str(tmp_path / "x.png"),), "a caption")])
    assert asked == [160] and verdicts[0].value is True


def test_train_judge_verify_path_smoke(tmp_path, monkeypatch):
    """The `verify` preset's path at smoke size: checked cot data, a judge.json with room for the checks, the
    held-out evaluation and the pipeline check with the trained judge."""
    from sailvl2.curation import train_judge as driver

    monkeypatch.setitem(driver.PRESETS, "smoke_verify",
                        {**driver.PRESETS["smoke"], "verify": True, "judges": ("ita_yesno",)})
    report = driver.train_judges(tmp_path / "run", preset="smoke_verify")
    assert set(report["judges"]) == {"ita_yesno"} and report["judges"]["ita_yesno"]["steps"] == 2
    config = json.loads((tmp_path / "run" / "ita_yesno" / "final" / "judge.json").read_text())
    assert config["max_new_tokens"] == driver.VERIFY_REPLY_TOKENS
    rows = [json.loads(x) for x in (tmp_path / "run" / "data" / "train-ita_yesno.jsonl").read_text().splitlines()]
    assert rows and all(r["kind"] == "cot" and r["conversations"][-1]["value"].startswith("<think>") for r in rows)
    assert report["pipeline"]["stage"]["judges"] == ["ita_yesno"] and report["pipeline"]["n"] > 0
