"""Tests of sailvl2.evaluation.extract. Every expected value is written by hand (the corpus in
tests/data/eval_extraction_corpus.jsonl too: each expected answer was typed from reading the response)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from sailvl2.errors import InputError, SailVL2Error
from sailvl2.evaluation.extract import (
    ExtractedAnswer,
    JudgeError,
    extract_answer,
    extract_box,
    extract_choice,
    extract_number,
    extract_yes_no,
    numbers_match,
    parse_number,
)
from sailvl2.evaluation.judge import OpenAIJudge

CORPUS = Path(__file__).parent / "data" / "eval_extraction_corpus.jsonl"
ROWS = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
COLORS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}

# ----------------------------------------------------------------------------------------------- corpus


def test_corpus_is_large_and_varied() -> None:
    assert len(ROWS) >= 100
    kinds = {row["kind"] for row in ROWS}
    assert kinds == {"multiple_choice", "yes_no", "short_answer", "open", "grounding"}
    assert sum(row["kind"] == "multiple_choice" for row in ROWS) >= 100
    assert any("<think>" in row["response"] for row in ROWS)
    assert any("</think>" in row["response"] and "<think>" not in row["response"] for row in ROWS)
    assert any("\\boxed{\\boxed" in row["response"] for row in ROWS)
    assert any("答案" in row["response"] for row in ROWS)
    assert len({row["id"] for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row["id"] for row in ROWS])
def test_corpus(row: dict) -> None:
    got = extract_answer(row["response"], row["kind"], options=row["options"])
    assert (got.answer, got.format_ok, got.source) == (row["expected"], row["format_ok"], row["source"]), row["note"]
    if row["kind"] == "grounding":
        expected_box = None if row["expected"] is None else tuple(json.loads(row["expected"]))
        assert got.box == (pytest.approx(expected_box) if expected_box else None)


# ----------------------------------------------------------------------------------------------- choices


def test_extract_choice_accepts_lower_case_keys_and_answers_upper_case() -> None:
    assert extract_choice("The answer is (b).", {"a": "red", "b": "blue"}) == "B"


@pytest.mark.parametrize(
    "options",
    [{}, None, ["A", "B"], {"AB": "red"}, {"1": "red"}, {"A": 3}, {"A": "red", "a": "blue"}],
)
def test_extract_choice_rejects_bad_options(options: object) -> None:
    with pytest.raises(InputError):
        extract_choice("A", options)  # type: ignore[arg-type]


def test_extract_choice_rejects_non_text_response() -> None:
    with pytest.raises(InputError, match="response"):
        extract_choice(None, COLORS)  # type: ignore[arg-type]
    assert issubclass(InputError, SailVL2Error)


def test_extract_choice_ignores_letters_beyond_the_options() -> None:
    # "E" is not an option, so the only candidate is B.
    assert extract_choice("E is wrong; the answer is B.", COLORS) == "B"
    assert extract_choice("The answer is E.", COLORS) is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Yes", "yes"), ("NO!", "no"), ("yes or no?", None), ("Yes there is", "yes"), ("對", None), ("对", "yes"),
        ("不对", "no"), ("nope", None),
    ],
)
def test_extract_yes_no(response: str, expected: str | None) -> None:
    assert extract_yes_no(response) == expected


# ----------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 12 cm", 12.0),
        ("1,234.5", 1234.5),
        ("It costs $1,200.", 1200.0),
        ("3/4", 0.75),
        ("\\frac{3}{4}", 0.75),
        ("\\dfrac{1}{8}", 0.125),
        ("25%", 25.0),
        ("50\\%", 50.0),
        ("-3.5", -3.5),
        ("\u22127", -7.0),  # unicode minus
        ("１２", 12.0),  # full-width digits
        ("x^2 = 16", 16.0),
        ("x² = 16", 16.0),
        ("The area is 12 cm².", 12.0),
        ("There are 3 apples and 2 oranges, so 5 fruits.", 5.0),
        ("H2O has 3 atoms", 3.0),
        ("three", 3.0),
        ("There are twelve eggs.", 12.0),
        ("约3.14", 3.14),
        ("1{,}000", 1000.0),
        (".5", 0.5),
        ("1/0", None),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_number(text: str, expected: float | None) -> None:
    assert extract_number(text) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 cm", 12.0),
        ("$1,200", 1200.0),
        ("25%", 25.0),
        ("3/4", 0.75),
        ("12 cm²", 12.0),
        ("-0.5", -0.5),
        ("12.", 12.0),
        ("5 million dollars", 5.0),
        (" 7 ", 7.0),
        ("twelve", None),
        ("The answer is 12", None),
        ("12 or 13", None),
        ("", None),
    ],
)
def test_parse_number(text: str, expected: float | None) -> None:
    assert parse_number(text) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("pred", "gold", "kwargs", "expected"),
    [
        ("25%", "0.25", {}, True),
        ("25%", "25", {}, True),
        ("0.25", "25%", {}, True),
        ("0.25", "25", {}, False),
        ("The answer is 1,000 km", "1000", {}, True),
        ("3.14", "3.14159", {"rel_tol": 0.01}, True),
        ("3.14", "3.14159", {}, False),
        ("0", "0", {}, True),
        ("0.0001", "0", {}, False),
        ("0.0001", "0", {"abs_tol": 1e-3}, True),
        (12, "12", {}, True),
        ("1/3", 0.3333333, {}, True),
        ("abc", "1", {}, False),
        ("1", "abc", {}, False),
        ("5", "about 5 or 6", {}, False),  # the gold must be one number
    ],
)
def test_numbers_match(pred: object, gold: object, kwargs: dict, expected: bool) -> None:
    assert numbers_match(pred, gold, **kwargs) is expected  # type: ignore[arg-type]


def test_numbers_match_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        numbers_match(True, "1")
    with pytest.raises(InputError):
        numbers_match("1", "1", rel_tol=-0.1)


# ----------------------------------------------------------------------------------------------- boxes


def test_extract_box_conventions() -> None:
    assert extract_box("[0, 0, 1, 1]") == (0.0, 0.0, 1000.0, 1000.0)  # all in [0, 1]: read as normalised
    assert extract_box("<box>[[-5, 10, 1005, 990]]</box>") == (-5.0, 10.0, 1005.0, 990.0)  # raw, not clamped
    assert extract_box("[1, 2, 3]") is None


# ----------------------------------------------------------------------------------------------- extract_answer


def test_extract_answer_validates_kind_and_options() -> None:
    with pytest.raises(InputError, match="kind"):
        extract_answer("A", "essay")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="options"):
        extract_answer("A", "multiple_choice")


class FakeJudge:
    def __init__(self, reply: str | None) -> None:
        self.reply = reply
        self.calls: list[tuple[str, str, object]] = []

    def __call__(self, question: str, response: str, options: object) -> str | None:
        self.calls.append((question, response, options))
        return self.reply


def test_judge_is_asked_only_when_rules_fail() -> None:
    judge = FakeJudge("B")
    assert extract_answer("The answer is C.", "multiple_choice", COLORS, judge=judge) == ExtractedAnswer(
        "C", True, "choice"
    )
    assert judge.calls == []
    got = extract_answer("Hmm, hard to say, perhaps A or B.", "multiple_choice", COLORS, judge=judge, question="Q?")
    assert got == ExtractedAnswer("B", True, "judge")
    assert judge.calls == [("Q?", "Hmm, hard to say, perhaps A or B.", COLORS)]


def test_judge_sees_only_the_answer_part() -> None:
    judge = FakeJudge("A")
    got = extract_answer("<think>A seems right, the answer is A.</think>Maybe A or B.", "multiple_choice", COLORS,
                         judge=judge)
    assert got == ExtractedAnswer("A", True, "judge")
    assert judge.calls == [("", "Maybe A or B.", COLORS)]


def test_short_answer_judge_is_asked_for_an_empty_answer() -> None:
    judge = FakeJudge(" 42 ")
    assert extract_answer("<think>6 times 7</think>", "short_answer", judge=judge) == ExtractedAnswer(
        "42", True, "judge"
    )
    assert judge.calls == [("", "", None)]


def test_judge_reply_is_mapped_to_the_kind() -> None:
    # A judge answering with option text gets mapped to the letter; yes/no replies are normalised.
    assert extract_answer("???", "multiple_choice", COLORS, judge=FakeJudge("green")).answer == "C"
    assert extract_answer("???", "yes_no", judge=FakeJudge("Yes.")) == ExtractedAnswer("yes", True, "judge")
    assert extract_answer("???", "multiple_choice", COLORS, judge=FakeJudge(None)) == ExtractedAnswer(
        None, True, None
    )


def test_judge_is_not_asked_after_a_format_failure() -> None:
    judge = FakeJudge("A")
    assert extract_answer("<think>cut off", "multiple_choice", COLORS, judge=judge) == ExtractedAnswer(
        None, False, None
    )
    assert judge.calls == []


# ----------------------------------------------------------------------------------------------- OpenAIJudge


class _Stub(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint; `plan` lists what to do per request (a status, or "garbage")."""

    plan: list[object] = []
    seen: list[dict] = []
    reply = "B"

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        action = type(self).plan.pop(0) if type(self).plan else 200
        if action == "garbage":
            payload, status = b"not json", 200
        elif action == 200:
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": type(self).reply}}]})
            payload, status = payload.encode(), 200
        else:
            payload, status = b'{"error": "busy"}', int(action)  # type: ignore[call-overload]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub():
    _Stub.plan, _Stub.seen, _Stub.reply = [], [], "B"
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Stub
    server.shutdown()
    server.server_close()


def test_openai_judge_retries_after_a_server_error(stub) -> None:
    url, state = stub
    state.plan = [500]
    judge = OpenAIJudge(url, "judge-model", api_key="k", retry_delay=0)
    assert judge("What colour?", "maybe blue or red", COLORS) == "B"
    assert len(state.seen) == 2
    request = state.seen[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer k"
    assert request["body"]["model"] == "judge-model" and request["body"]["temperature"] == 0
    prompt = request["body"]["messages"][-1]["content"]
    assert "maybe blue or red" in prompt and "B. blue" in prompt and "What colour?" in prompt


def test_openai_judge_retries_garbage_and_accepts_v1_base(stub) -> None:
    url, state = stub
    state.plan = ["garbage"]
    judge = OpenAIJudge(url + "/v1/", "m", retry_delay=0)
    assert judge("q", "r", COLORS) == "B"
    assert OpenAIJudge(url + "/v1/chat/completions", "m")("q2", "r", COLORS) == "B"
    assert [s["path"] for s in state.seen] == ["/v1/chat/completions"] * 3
    assert state.seen[0]["auth"] is None


def test_openai_judge_cache(stub, tmp_path: Path) -> None:
    url, state = stub
    cache = tmp_path / "judge" / "cache.jsonl"
    judge = OpenAIJudge(url, "m", cache_path=cache, retry_delay=0)
    assert judge("q", "r", COLORS) == "B"
    assert judge("q", "r", COLORS) == "B"
    assert len(state.seen) == 1
    lines = cache.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["content"] == "B"
    # A new judge reads the file: no request. A broken trailing line (a crash mid-write) is skipped.
    with cache.open("a", encoding="utf-8") as f:
        f.write('{"key": "trunc')
    state.reply = "C"
    assert OpenAIJudge(url, "m", cache_path=cache)("q", "r", COLORS) == "B"
    assert len(state.seen) == 1
    # A different request is asked.
    assert OpenAIJudge(url, "m", cache_path=cache)("another q", "r", COLORS) == "C"
    assert len(state.seen) == 2
    # The new entry went on a line of its own, not onto the broken one.
    assert OpenAIJudge(url, "m", cache_path=cache)("another q", "r", COLORS) == "C"
    assert len(state.seen) == 2


def test_openai_judge_gives_up_after_max_retries(stub) -> None:
    url, state = stub
    state.plan = [503, 503, 503, 503]
    with pytest.raises(JudgeError, match="3 times"):
        OpenAIJudge(url, "m", max_retries=2, retry_delay=0)("q", "r", COLORS)
    assert len(state.seen) == 3


def test_openai_judge_does_not_retry_a_client_error(stub) -> None:
    url, state = stub
    state.plan = [400]
    with pytest.raises(JudgeError, match="HTTP 400"):
        OpenAIJudge(url, "m", retry_delay=0)("q", "r", COLORS)
    assert len(state.seen) == 1


def test_openai_judge_replies_none_and_free_text(stub) -> None:
    url, state = stub
    state.reply = "NONE"
    assert OpenAIJudge(url, "m")("q", "r", COLORS) is None
    state.reply = "  Paris \n"
    assert OpenAIJudge(url, "m")("Capital?", "It is Paris, I think", None) == "Paris"


def test_openai_judge_used_by_extract_answer(stub) -> None:
    url, state = stub
    state.reply = "The response chose C."
    got = extract_answer("Could be A, could be C.", "multiple_choice", COLORS, judge=OpenAIJudge(url, "m"))
    assert got == ExtractedAnswer("C", True, "judge")


def test_openai_judge_rejects_bad_settings() -> None:
    with pytest.raises(InputError):
        OpenAIJudge("localhost:8000", "m")
    with pytest.raises(InputError):
        OpenAIJudge("http://localhost:8000", "m", max_retries=-1)
