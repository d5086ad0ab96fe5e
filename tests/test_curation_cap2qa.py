"""Caption -> QA (sailvl2.curation.cap2qa and the ``cap2qa`` stage) against a local `http.server` stub on
127.0.0.1 (port 0) that returns canned chat completions, well-formed and malformed, chosen by a tag word in
the caption. Expected pairs, attempts, request counts and the generated records' ids and places in the
curated output follow from the canned replies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from sailvl2.curation.cap2qa import (Cap2QASettings, CaptionToQA, QAPair, caption_of, captions_to_qa,
                                     parse_qa_reply)
from sailvl2.curation import Decision, load_pipeline, register_stage
from sailvl2.curation.config import InputSpec, PipelineConfig, StageSpec
from sailvl2.curation.runner import run_pipeline
from sailvl2.curation.stages import get_stage
from sailvl2.curation.types import CurationError, Item
from sailvl2.data.readers import iter_records
from sailvl2.data.records import Record, parse_record, validate_record
from sailvl2.errors import InputError
from sailvl2.evaluation.endpoint import EndpointClient, EndpointSettings

from .curate_kill import run_and_kill
from .http_stub import JSONStub, serve


CAPTION = ("A red bicycle leans against a white fence. Three children play football on the grass behind it, "
           "and a sign on the gate reads OPEN.")
GOOD = {"qa": [{"question": "What colour is the bicycle?", "answer": "red"},
               {"question": "How many children are playing?", "answer": "Three"},
               {"question": "What does the sign say?", "answer": "OPEN"}]}
PARTIAL = {"qa": [{"question": "", "answer": "red"},                              # empty question
                  {"question": "What colour is the fence?", "answer": ""},        # no answer
                  {"question": "What colour is the car?", "answer": "purple"},    # not in the caption
                  {"question": "Is there a fence?", "answer": "Yes"},             # yes/no
                  {"question": "What game do the children play?", "answer": "football"},
                  {"question": "What game do the children play?", "answer": "football"},  # repeat
                  "not an object"]}
REPLIES = {  # tag -> replies of successive requests (the last one repeats)
    "GOOD": [json.dumps(GOOD)],
    "RETRY": ["Sure! Here are three questions about the picture.", json.dumps(GOOD)],
    "FENCE": ["```json\n" + json.dumps(GOOD) + "\n```"],
    "SHAPE": [json.dumps({"questions": ["What colour is the bicycle?"]}), json.dumps(GOOD)],
    "NEVER": ['{"qa": [{"question": "What colour', "no json here"],
    "PARTIAL": [json.dumps(PARTIAL)],
    "MANY": [json.dumps({"qa": GOOD["qa"] + [{"question": "Where do they play?", "answer": "on the grass"},
                                              {"question": "What leans against the fence?", "answer": "bicycle"}]})],
    "NUMBER": [json.dumps({"qa": [{"question": "How many children are there?", "answer": 3}]})],
}


class _Stub(JSONStub):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "".join(part["text"] for part in body["messages"][-1]["content"] if part["type"] == "text")
        tag = next((t for t in [*REPLIES, "HTTP400"] if f"[{t}]" in text), "GOOD")
        time.sleep(getattr(self.server, "delay", 0.0))  # a slow endpoint, for the kill-and-resume test
        with self.server.lock:
            self.server.prompts.setdefault(tag, []).append(text)
            count = len(self.server.prompts[tag])
        if tag == "HTTP400":
            return self._send(400, b'{"error": "bad request"}')
        replies = REPLIES[tag]
        content = replies[min(count, len(replies)) - 1]
        self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode())


@pytest.fixture()
def server():
    with serve(_Stub, prompts={}) as httpd:
        yield httpd


def _base(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def _client(httpd) -> EndpointClient:
    return EndpointClient(EndpointSettings(api_base=_base(httpd), model="stub", timeout=5, retries=0))


def _record(tag: str, image: str = "img.png", record_id: str | None = None) -> dict:
    return {"id": record_id or f"cap-{tag}", "image": image,
            "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                              {"from": "gpt", "value": f"[{tag}] {CAPTION}"}]}


def test_good_reply_gives_training_records(server, tmp_path):
    Image.new("RGB", (64, 48), "red").save(tmp_path / "img.png")
    result = CaptionToQA(_client(server)).generate(_record("GOOD"))
    assert result.ok and result.attempts == 1 and result.problems == ()
    assert result.pairs == tuple(QAPair(p["question"], p["answer"]) for p in GOOD["qa"])
    assert [r["id"] for r in result.records] == ["cap-GOOD:qa0", "cap-GOOD:qa1", "cap-GOOD:qa2"]
    for row, pair in zip(result.records, GOOD["qa"]):
        assert row["image"] == "img.png" and row["source_caption"] == "cap-GOOD"
        assert row["conversations"] == [{"from": "human", "value": "<image>\n" + pair["question"]},
                                        {"from": "gpt", "value": pair["answer"]}]
        record = parse_record(row, source="test", fallback_id="x", image_root=tmp_path)
        assert validate_record(record) is None
    prompt = server.prompts["GOOD"][0]
    assert CAPTION in prompt and "Write 3 diverse questions" in prompt and '{"qa": [{"question"' in prompt


@pytest.mark.parametrize("tag", ["RETRY", "SHAPE"])
def test_malformed_reply_is_retried_with_a_note(server, tag):
    result = CaptionToQA(_client(server)).generate(_record(tag))
    assert result.ok and result.attempts == 2 and len(result.pairs) == 3
    first, second = server.prompts[tag]
    assert "rejected" not in first and "Your previous reply was rejected (malformed" in second
    assert result.problems[0].startswith("attempt 1: malformed")


def test_fenced_json_is_accepted(server):
    result = CaptionToQA(_client(server)).generate(_record("FENCE"))
    assert result.attempts == 1 and len(result.pairs) == 3


def test_retries_are_bounded(server):
    result = CaptionToQA(_client(server), Cap2QASettings(max_attempts=3)).generate(_record("NEVER"))
    assert not result.ok and result.records == () and result.attempts == 3
    assert len(server.prompts["NEVER"]) == 3
    assert [p.split(":")[0] for p in result.problems] == ["attempt 1", "attempt 2", "attempt 3"]


def test_invalid_pairs_are_dropped_and_counted(server):
    result = CaptionToQA(_client(server)).generate(_record("PARTIAL"))
    assert result.attempts == 1 and result.pairs == (QAPair("What game do the children play?", "football"),)
    problems = " | ".join(result.problems)
    for expected in ("pair 0: empty question", "pair 1: no answer", "pair 2: answer 'purple' not found",
                     "pair 3: yes/no answer", "pair 5: repeated question", "pair 6: not an object"):
        assert expected in problems
    # Needing two valid pairs, the same reply is never good enough: every attempt is used.
    strict = CaptionToQA(_client(server), Cap2QASettings(min_pairs=2, max_attempts=2)).generate(_record("PARTIAL"))
    assert not strict.ok and strict.attempts == 2


def test_pairs_are_capped_and_numbers_accepted(server):
    many = CaptionToQA(_client(server), Cap2QASettings(num_pairs=3)).generate(_record("MANY"))
    assert len(many.pairs) == 3
    number = CaptionToQA(_client(server)).generate({**_record("NUMBER"), "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "[NUMBER] 3 children play."}]})
    assert number.pairs == (QAPair("How many children are there?", "3"),)


def test_endpoint_failure_ends_the_caption(server):
    result = CaptionToQA(_client(server)).generate(_record("HTTP400"))
    assert not result.ok and result.attempts == 1 and len(server.prompts["HTTP400"]) == 1
    assert result.problems[0].startswith("endpoint:") and "HTTP 400" in result.problems[0]


def test_prompt_template_placeholders(server):
    template = 'Make {num_pairs} pairs as {"qa": [...]} from: {caption}'
    CaptionToQA(_client(server), Cap2QASettings(num_pairs=2, prompt=template)).generate(_record("GOOD"))
    assert server.prompts["GOOD"][0] == f'Make 2 pairs as {{"qa": [...]}} from: [GOOD] {CAPTION}'
    with pytest.raises(InputError, match="caption"):
        Cap2QASettings(prompt="no placeholder")
    with pytest.raises(InputError, match="min_pairs"):
        Cap2QASettings(num_pairs=2, min_pairs=3)


def test_parse_and_caption_rules():
    pairs, problems = parse_qa_reply('[{"question": "Where is the bicycle?", "answer": "against the fence"}]', CAPTION)
    assert pairs == [QAPair("Where is the bicycle?", "against the fence")] and problems == []
    pairs, problems = parse_qa_reply('{"qa": [{"question": "Q?", "answer": "a blue fence"}]}', CAPTION)
    assert pairs == [] and "not found in the caption" in problems[0]
    lenient = Cap2QASettings(verify="none", allow_yes_no=True)
    assert len(parse_qa_reply('{"qa": [{"question": "Q?", "answer": "yes"}, {"question": "R?", "answer": "blue"}]}',
                              CAPTION, lenient)[0]) == 2
    assert caption_of(_record("GOOD")) == f"[GOOD] {CAPTION}"
    two_rounds = _record("GOOD")["conversations"] * 2
    assert caption_of({"conversations": two_rounds}) is None


def test_captions_to_qa_over_a_file(server, tmp_path):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 48), "blue").save(tmp_path / "in" / "img.png")
    rows = [_record("GOOD", record_id="a"), _record("NEVER", record_id="b"),
            {"id": "c", "conversations": _record("GOOD")["conversations"] * 2}]  # not a caption record
    (tmp_path / "in" / "caps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "qa.jsonl"
    counts = captions_to_qa(tmp_path / "in" / "caps.jsonl", out, _client(server),
                            Cap2QASettings(max_attempts=2), concurrency=2)
    assert counts == {"captions": 2, "with_qa": 1, "qa_records": 3, "requests": 1 + 2}
    records = list(iter_records(str(out)))
    assert len(records) == 3 and all(isinstance(r, Record) and validate_record(r) is None for r in records)


def _item(tag: str, root: Path) -> Item:
    record = _record(tag, record_id=f"cap-{tag}")
    return Item(record["id"], record, str(root))


def test_stage_returns_the_qa_records_with_the_captions_decision(server, tmp_path):
    settings = {"api_base": _base(server), "model": "stub", "retries": 0, "timeout": 5, "max_attempts": 2}
    stage = get_stage("cap2qa", settings)
    other = Item("multi", {"conversations": _record("GOOD")["conversations"] * 2}, str(tmp_path))
    video = Item("vid", {"video": ["f0.png", "f1.png"], "conversations": _record("GOOD")["conversations"]},
                 str(tmp_path))
    items = [_item("GOOD", tmp_path), other, _item("NEVER", tmp_path), video]
    decisions = stage.process(items)
    assert [d.kept for d in decisions] == [True, True, True, True]
    assert decisions[0].scores == {"cap2qa_pairs": 3.0, "cap2qa_attempts": 1.0} and decisions[1].scores == {}
    assert decisions[0].generated == tuple(
        {"image": "img.png", "conversations": [{"from": "human", "value": "<image>\n" + pair["question"]},
                                               {"from": "gpt", "value": pair["answer"]}],
         "kind": "direct", "task": "caption_qa", "source_caption": "cap-GOOD"} for pair in GOOD["qa"])
    assert decisions[1].generated == () and decisions[2].generated == ()  # not a caption; no valid reply
    assert decisions[2].scores == {"cap2qa_pairs": 0.0, "cap2qa_attempts": 2.0}
    assert [row["video"] for row in decisions[3].generated] == [["f0.png", "f1.png"]] * 3
    assert all("image" not in row for row in decisions[3].generated)
    assert all("generated_qa" not in item.record for item in items)  # nothing attached to the caption

    dropping = get_stage("cap2qa", {**settings, "drop_failed": True})
    decision = dropping.process([_item("NEVER", tmp_path)])[0]
    assert not decision.kept and decision.reason.startswith("cap2qa: no valid QA after 2 attempt(s): attempt 2:")
    with pytest.raises(CurationError, match="api_base"):
        get_stage("cap2qa", {"model": "stub"})


@register_stage("t_no_three")
class NoThree:
    """Drops records answering "Three"; scores the answer's word count."""

    def setup(self) -> None:
        pass

    def process(self, items):
        decisions = []
        for item in items:
            answer = item.record["conversations"][-1]["value"]
            kept = answer != "Three"
            decisions.append(Decision(item.id, self.name, kept, None if kept else "text: three",
                                      {"answer_words": len(answer.split())}))
        return decisions


@register_stage("t_position")
class Position:
    """Global: keeps every record, scoring its position in the stream."""

    def process_all(self, items):
        for k, item in enumerate(items):
            yield Decision(item.id, self.name, True, scores={"position": k})


def _cap2qa_pipeline(root: Path, httpd, output: str, **cap2qa) -> PipelineConfig:
    settings = {"api_base": _base(httpd), "model": "stub", "retries": 0, "timeout": 5, "max_attempts": 1, **cap2qa}
    return PipelineConfig(inputs=(InputSpec(str(root / "data.jsonl")),), output=str(root / output), shard_size=2,
                          stages=(StageSpec("cap2qa", settings), StageSpec("t_no_three"), StageSpec("t_position")))


def _curated(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((out / "data").glob("*.jsonl")) for line in path.open()]


def _decision_files(out: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((out / "decisions").glob("*.jsonl"))}


def test_qa_records_go_through_the_rest_of_the_pipeline(server, tmp_path):
    Image.new("RGB", (64, 48), "green").save(tmp_path / "img.png")
    two_rounds = [{"from": "human", "value": "Hi."}, {"from": "gpt", "value": "Hello."}] * 2  # no caption
    rows = [_record("GOOD", record_id="c0"), {"id": "m", "conversations": two_rounds},
            _record("NEVER", record_id="c1"), _record("MANY", record_id="c2"), _record("FENCE", record_id="c3"),
            _record("GOOD", record_id="c4")]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_pipeline(_cap2qa_pipeline(tmp_path, server, "out"), workers=0)
    # By hand: c0, c2 (the first 3 of 5 pairs), c3, c4 get GOOD's 3 pairs as <id>:cap2qa.0..2 right after
    # them; m is no caption, c1 never replies validly (kept, 0 pairs). t_no_three drops every .1 ("Three").
    expected = []
    for row in rows:
        expected.append(row["id"])
        if row["id"] in ("c0", "c2", "c3", "c4"):
            expected += [f"{row['id']}:cap2qa.0", f"{row['id']}:cap2qa.2"]
    records = _curated(tmp_path / "out")
    assert [r["id"] for r in records] == expected
    assert [r["curation"]["scores"]["position"] for r in records] == list(range(len(expected)))
    assert records[1] == {"id": "c0:cap2qa.0", "image": str(tmp_path / "img.png"),
                          "conversations": [{"from": "human", "value": "<image>\nWhat colour is the bicycle?"},
                                            {"from": "gpt", "value": "red"}],
                          "kind": "direct", "task": "caption_qa", "source_caption": "c0",
                          "curation": {"scores": {"answer_words": 1, "position": 1}}}
    assert records[0]["curation"]["scores"] == {"cap2qa_pairs": 3, "cap2qa_attempts": 1, "position": 0,
                                                "answer_words": len(f"[GOOD] {CAPTION}".split())}
    decisions = [json.loads(line) for text in _decision_files(tmp_path / "out").values() for line in text.splitlines()]
    assert sorted(d["id"] for d in decisions if d["stage"] == "t_no_three" and not d["kept"]) == [
        f"c{k}:cap2qa.1" for k in (0, 2, 3, 4)]
    assert [d["generated"] for d in decisions if d["stage"] == "cap2qa" and d["id"] == "c3"] == [
        ["c3:cap2qa.0", "c3:cap2qa.1", "c3:cap2qa.2"]]
    counts = {s["name"]: s for s in result.report["stages"]}
    assert [counts["cap2qa"][k] for k in ("in", "kept", "generated")] == [6, 6, 12]
    assert [counts["t_no_three"][k] for k in ("in", "kept", "dropped")] == [18, 14, 4]
    assert (result.inputs, result.report["generated"], result.kept) == (6, 12, 14)
    parsed = [r for path in result.data_files for r in iter_records(str(path))]
    assert [r.id for r in parsed] == expected
    assert all(isinstance(r, Record) and validate_record(r, check_images=True) is None for r in parsed)
    # A second run from scratch: the same ids, records and decisions.
    run_pipeline(_cap2qa_pipeline(tmp_path, server, "again"), workers=0)
    assert _curated(tmp_path / "again") == records
    assert _decision_files(tmp_path / "again") == _decision_files(tmp_path / "out")


@pytest.mark.slow  # a subprocess that imports sailvl2 with torch (it reads the inputs), killed mid-run
def test_killed_cap2qa_run_resumes_with_every_record_exactly_once(server, tmp_path):
    Image.new("RGB", (64, 48), "green").save(tmp_path / "img.png")
    captions = []
    for k in range(12):  # "#k#" tells the requests apart
        record = _record("GOOD", record_id=f"c{k}")
        record["conversations"][1]["value"] += f" #{k}#"
        captions.append(json.dumps(record) + "\n")
    (tmp_path / "data.jsonl").write_text("".join(captions))
    yaml_text = (f"inputs: [data.jsonl]\noutput: {{out}}\nshard_size: 2\nplugins: [tests.test_curation_cap2qa]\n"
                 f"stages: [{{{{stage: cap2qa, api_base: '{_base(server)}', model: stub, retries: 0, timeout: 5, "
                 f"max_attempts: 1, concurrency: 1}}}}, {{{{stage: t_no_three}}}}, {{{{stage: t_position}}}}]\n")
    (tmp_path / "killed.yaml").write_text(yaml_text.format(out="killed"))
    (tmp_path / "clean.yaml").write_text(yaml_text.format(out="clean"))
    server.delay = 0.25  # 0.5 s per shard of 2 captions: time to kill the run between shards 2 and 6
    decisions = tmp_path / "killed" / "decisions"
    done_before = run_and_kill(tmp_path / "killed.yaml", 0, decisions, "phase0-*.jsonl", 2, tmp_path / "stderr.txt")
    assert done_before < 6 and not (tmp_path / "killed" / "data").exists()
    server.delay = 0.0
    resumed = run_pipeline(load_pipeline(tmp_path / "killed.yaml"), workers=0)
    # The captions of the finished shards (the first ones: one process, shards in order) were asked about
    # once, by the killed run; the others again by the resumed run.
    asked = [sum(f"#{k}#" in prompt for prompt in server.prompts["GOOD"]) for k in range(12)]
    assert asked[:2 * done_before] == [1] * (2 * done_before) and min(asked[2 * done_before:]) >= 1
    clean = run_pipeline(load_pipeline(tmp_path / "clean.yaml"), workers=0)
    ids = [r["id"] for r in _curated(tmp_path / "killed")]
    assert ids == [i for k in range(12) for i in (f"c{k}", f"c{k}:cap2qa.0", f"c{k}:cap2qa.2")]
    assert _curated(tmp_path / "killed") == _curated(tmp_path / "clean")
    assert _decision_files(tmp_path / "killed") == _decision_files(tmp_path / "clean")
    assert resumed.report["throughput"]["resumed_shards"] == done_before
    assert (resumed.kept, resumed.report["generated"]) == (clean.kept, clean.report["generated"]) == (36, 36)
