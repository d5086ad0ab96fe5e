"""Caption -> QA (sailvl2.curation.cap2qa and the ``cap2qa`` stage) against a local `http.server` stub on
127.0.0.1 (port 0) that returns canned chat completions, well-formed and malformed, chosen by a tag word in
the caption. Expected pairs, attempts and request counts follow from the canned replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from sailvl2.curation.cap2qa import (Cap2QASettings, CaptionToQA, QAPair, caption_of, captions_to_qa,
                                     parse_qa_reply)
from sailvl2.curation.config import InputSpec, PipelineConfig, StageSpec
from sailvl2.curation.runner import run_pipeline
from sailvl2.curation.stages import get_stage
from sailvl2.curation.stages.synthesis import expand_generated_file, expand_generated_qa
from sailvl2.curation.types import CurationError, Item
from sailvl2.data.readers import iter_records
from sailvl2.data.records import Record, parse_record, validate_record
from sailvl2.errors import InputError
from sailvl2.evaluation.endpoint import EndpointClient, EndpointSettings

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


def test_stage_attaches_qa_and_expands(server, tmp_path):
    import sailvl2.curation.stages.synthesis  # noqa: F401 - registers "cap2qa"

    settings = {"api_base": _base(server), "model": "stub", "retries": 0, "timeout": 5, "max_attempts": 2}
    stage = get_stage("cap2qa", settings)
    other = Item("multi", {"conversations": _record("GOOD")["conversations"] * 2}, str(tmp_path))
    items = [_item("GOOD", tmp_path), other, _item("NEVER", tmp_path)]
    decisions = stage.process(items)
    assert [d.kept for d in decisions] == [True, True, True]
    assert decisions[0].scores == {"cap2qa_pairs": 3.0, "cap2qa_attempts": 1.0} and decisions[1].scores == {}
    attached = items[0].record["generated_qa"]
    assert len(attached) == 3 and all("image" not in row for row in attached)
    assert items[2].record["generated_qa"] == [] and "generated_qa" not in other.record
    expanded = list(expand_generated_qa([{**items[0].record, "image": "/abs/img.png"}]))
    assert [r["id"] for r in expanded] == ["cap-GOOD", "cap-GOOD:qa0", "cap-GOOD:qa1", "cap-GOOD:qa2"]
    assert all(r["image"] == "/abs/img.png" for r in expanded) and "generated_qa" not in expanded[0]

    dropping = get_stage("cap2qa", {**settings, "drop_failed": True})
    decision = dropping.process([_item("NEVER", tmp_path)])[0]
    assert not decision.kept and decision.reason.startswith("cap2qa: no valid QA after 2 attempt(s): attempt 2:")
    with pytest.raises(CurationError, match="api_base"):
        get_stage("cap2qa", {"model": "stub"})


def test_stage_in_a_pipeline(server, tmp_path):
    Image.new("RGB", (64, 48), "green").save(tmp_path / "img.png")
    rows = [_record("GOOD", record_id="g1"), _record("FENCE", record_id="g2")]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {"api_base": _base(server), "model": "stub", "retries": 0, "timeout": 5}
    config = PipelineConfig(inputs=(InputSpec(str(tmp_path / "data.jsonl")),), output=str(tmp_path / "out"),
                            stages=(StageSpec("cap2qa", settings),), plugins=("sailvl2.curation.stages.synthesis",))
    result = run_pipeline(config, workers=0)
    assert result.kept == 2
    expanded = tmp_path / "out" / "data" / "expanded.jsonl"
    assert expand_generated_file(result.data_files[0], expanded) == 2 + 6
    records = list(iter_records(str(expanded)))
    assert [r.id for r in records][:2] == ["g1", "g1:qa0"]
    assert all(isinstance(r, Record) and validate_record(r) is None for r in records)
