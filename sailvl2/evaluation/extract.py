"""Answer extraction: turn a model's free-text response into the answer a benchmark scores.

One module shared by the evaluation and the RL rewards, so that both read outputs by the same rules. Order of
the rules for every kind of answer (PAPER.md section 9.1: VLMEvalKit-style rule matching, then an LLM judge):

1. thinking is split off (:func:`sailvl2.answers.split_thinking`); an unterminated block is a format failure
   and yields no answer at all, so a truncated generation never earns credit;
2. the last ``\\boxed{...}`` of the answer part, when present, is the answer;
3. kind-specific rules on the answer text (option letters, yes/no, numbers, boxes);
4. only when the rules find nothing, an optional judge (any :class:`Judge`; ``judge.py`` has one backed by an
   OpenAI-compatible chat endpoint).

Only the standard library is used. ``JudgeError`` (raised by judges) stays importable from here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from sailvl2.answers import extract_boxed, split_thinking
from sailvl2.errors import InputError, JudgeError  # noqa: F401 (JudgeError: raised by judges, re-exported here)

AnswerKind = Literal["multiple_choice", "yes_no", "short_answer", "open", "grounding"]
AnswerSource = Literal["boxed", "choice", "text", "judge"]
ANSWER_KINDS: tuple[str, ...] = ("multiple_choice", "yes_no", "short_answer", "open", "grounding")


@dataclass(frozen=True)
class ExtractedAnswer:
    """The answer read from one response.

    ``answer`` is None when nothing could be extracted (or the format failed). ``source`` says which rule found
    it. ``box`` is set for grounding answers: (x1, y1, x2, y2) on the 0-1000 grid, as written (not reordered).
    """

    answer: str | None
    format_ok: bool
    source: AnswerSource | None
    box: tuple[float, float, float, float] | None = None


def _clean(text: str) -> str:
    """NFKC (full-width letters, digits and brackets fold to ASCII), no markdown emphasis, no LaTeX text wrappers."""
    text = unicodedata.normalize("NFKC", text.replace("²", "^2").replace("³", "^3")).replace("−", "-")
    text = re.sub(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", text)
    return text.replace("**", "").replace("__", "")


# ----------------------------------------------------------------------------------------------- choices

# One option letter as written in an answer statement: "(B)", "[B]", "B" as a word, or a lower-case "b" only when
# bracketed or followed by punctuation / the end (so "the answer is a cat" is not option a).
_LETTER = r"(?:[(\[【]\s*([A-Za-z])\s*[)\]】]|([A-Z])(?![A-Za-z0-9])|([a-z])(?=\s*(?:[.,;!?。，]|$)))"
# Statements naming the answer; the letter follows the phrase. Phrases are case-insensitive, the letter is not.
_STATEMENT_RES = [
    re.compile(p + r"\s*[:：]?\s*" + _LETTER)
    for p in (
        r"(?i:answer(?:\s+(?:is|should\s+be|would\s+be|will\s+be|must\s+be))?"
        r"(?:\s*[:：]\s*)?(?:\s*(?:option|choice))?)",
        r"(?i:(?:correct|right|best)\s+(?:option|choice)(?:\s+(?:is|would\s+be|should\s+be))?)",
        r"(?i:(?:I\s+)?(?:choose|select|pick|go\s+with)(?:\s+(?:option|choice|answer))?)",
        r"(?:答案|正确答案|正确选项)(?:应该|应)?(?:是|为|选)?",
        r"选(?:择)?(?:选项)?",
    )
]
# The letter first: "B is correct", "(B) is the right answer", "B选项正确", "B正确".
_LETTER_FIRST_RE = re.compile(
    r"(?<![A-Za-z0-9])[(\[]?([A-Z])[)\]]?"
    r"(?:\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))|\s*(?:选项)?\s*(?:是)?正确)"
)
# "A or B", "A and C", "A/B", "A, B": a statement naming several options is no answer ("B, C is wrong" is one).
_MORE_LETTERS_RE = re.compile(
    r"\s*(?:(?:or|and|/|或|和|、)\s*[(\[]?[A-Z](?![A-Za-z0-9])|,\s*[(\[]?[A-Z](?![A-Za-z0-9])(?![)\]]?\s+[a-z]))"
)
_LEADING_RE = re.compile(r"\s*[(\[【]?\s*([A-Za-z])\s*(?:[)\]】.:：,，]|$)")
# A bare capital letter as a token; "-", "'" and "\" neighbours exclude "T-shirt", "B's" and "\angle".
_TOKEN_RE = re.compile(r"(?<![A-Za-z0-9\-'\\^_])([A-Z])(?![A-Za-z0-9\-'])")
# After "A" these words read as the option being discussed ("A is correct"), any other lower-case word as the article.
_A_VERBS = frozenset(
    "is was seems appears matches fits best correctly describes represents would should could because since and or "
    "but as".split()
)


def _check_options(options: object) -> dict[str, str]:
    if not isinstance(options, Mapping) or not options:
        raise InputError(f"options must be a non-empty mapping of letter -> option text, got {options!r}")
    checked: dict[str, str] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z]", key) or not isinstance(value, str):
            raise InputError(f"options must map single letters to str, got {key!r}: {value!r}")
        if key.upper() in checked:
            raise InputError(f"option letter {key.upper()!r} appears twice")
        checked[key.upper()] = value
    return checked


def _statement_letter(text: str, letters: dict[str, str]) -> str | None | Literal[False]:
    """The letter of the last answer statement; None for an ambiguous one; False when there is no statement."""
    found: list[tuple[int, str | None]] = []
    for regex in _STATEMENT_RES:
        for match in regex.finditer(text):
            letter = next(g for g in match.groups() if g).upper()
            if letter not in letters or _is_article(text, match):
                continue
            ambiguous = _MORE_LETTERS_RE.match(text, match.end()) is not None
            found.append((match.start(), None if ambiguous else letter))
    for match in _LETTER_FIRST_RE.finditer(text):
        if match.group(1) in letters:
            found.append((match.start(), match.group(1)))
    return max(found, key=lambda item: item[0])[1] if found else False


def _is_article(text: str, match: re.Match[str]) -> bool:
    """True when a match ends in a bare (unbracketed) "A" followed by a lower-case word other than _A_VERBS."""
    if text[match.end() - 1] != "A":
        return False
    nxt = re.match(r"\s+([a-z]+)", text[match.end() :])
    return nxt is not None and nxt.group(1) not in _A_VERBS


def _token_letters(text: str, letters: dict[str, str]) -> set[str]:
    found = set()
    for match in _TOKEN_RE.finditer(text):
        letter = match.group(1)
        if letter not in letters or _is_article(text, match):
            continue
        if letter == "I" and text[match.end() : match.end() + 1] not in (".", ")", ":"):
            continue  # the pronoun
        found.add(letter)
    return found


def _norm_text(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _option_text_letter(text: str, letters: dict[str, str]) -> str | None:
    """The one option whose text the response quotes; an option quoted only inside a longer quoted one is dropped."""
    said = f" {_norm_text(text)} "
    hits = {}
    for letter, option in letters.items():
        norm = _norm_text(_clean(option))
        if norm and re.search(r"(?<![a-z0-9])" + re.escape(norm) + r"(?![a-z0-9])", said):
            hits[letter] = norm
    kept = [k for k, v in hits.items() if not any(v != w and v in w for w in hits.values())]
    return kept[0] if len(kept) == 1 else None


def extract_choice(response: str, options: Mapping[str, str]) -> str | None:
    """The option letter a response chose, or None when it chose none or several.

    Rules, first that applies wins: the last answer statement ("the answer is (B)", "Answer: B", "I choose B",
    "B is correct", "答案是B", "选B"; "A or B" is ambiguous); the response starts with a letter ("B", "(B)",
    "B. cat", "B: ...", or "B cat" with B's text; not when several lines start with letters, which is a listing
    of the options); the option letters standing alone in the text (exactly one distinct letter, else
    ambiguous; the article "A" and the pronoun "I" are not letters); the option text quoted back (an option
    whose text only occurs inside a longer quoted option does not count).
    """
    if not isinstance(response, str):
        raise InputError(f"response must be a str, got {type(response).__name__}")
    letters = _check_options(options)
    text = _clean(response).strip()
    if not text:
        return None
    stated = _statement_letter(text, letters)
    if stated is not False:
        return stated
    # Several lines starting with option letters are a listing of the options, not a leading answer.
    leads = {m.group(1).upper() for line in text.splitlines() if (m := _LEADING_RE.match(line))} & letters.keys()
    lead = _LEADING_RE.match(text)
    if lead and lead.group(1).upper() in letters and len(leads) < 2:
        return lead.group(1).upper()
    first = re.match(r"([A-Z])\s+(.+)", text, re.DOTALL)
    if first and first.group(1) in letters and len(leads) < 2:
        option = _norm_text(_clean(letters[first.group(1)]))
        if option and _norm_text(first.group(2)).startswith(option):
            return first.group(1)
    tokens = _token_letters(text, letters)
    if tokens:
        return tokens.pop() if len(tokens) == 1 else None
    return _option_text_letter(text, letters)


# ----------------------------------------------------------------------------------------------- yes / no

_ZH_YES_WHOLE = frozenset({"是", "是的", "对", "对的", "有", "正确", "会", "能", "可以"})
_ZH_NO_WHOLE = frozenset({"否", "不", "不是", "不对", "没有", "无", "错误", "不会", "不能", "不可以"})


def extract_yes_no(response: str) -> Literal["yes", "no"] | None:
    """"yes" / "no" from a response: its first word when punctuation or the end follows it ("Yes, ..."), else
    the only one of the two words it uses.

    Chinese answers count when the whole answer (without punctuation) is a yes/no word, or starts with
    是的 / 对的 (yes) or 不是 / 不对 / 没有 / 否 (no); a bare 是 inside a sentence says nothing.
    """
    if not isinstance(response, str):
        raise InputError(f"response must be a str, got {type(response).__name__}")
    text = _clean(response).lower()
    words = re.findall(r"[a-z]+", text)
    first = re.match(r"\W*(yes|no)\s*(?:[^\w\s]|$)", text)  # "Yes, ...", "No." but not "yes or no"
    if first:
        return first.group(1)  # type: ignore[return-value]
    bare = re.sub(r"[\W_]+", "", text)
    if bare in _ZH_YES_WHOLE or bare.startswith(("是的", "对的")):
        return "yes"
    if bare in _ZH_NO_WHOLE or bare.startswith(("不是", "不对", "没有", "否")):
        return "no"
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes != has_no:
        return "yes" if has_yes else "no"
    return None


# ----------------------------------------------------------------------------------------------- numbers

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
# A number, an optional "/ denominator" (a fraction) and an optional percent sign. Not glued to a preceding
# letter, digit, "." or "^" so "H2O", "cm^2" and version strings do not yield numbers.
_NUMBER_RE = re.compile(
    rf"(?<![A-Za-z0-9.^_])(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?(?P<pct>\s*(?:%|percent\b))?"
)
_UNIT = r"[A-Za-z°µΩ$€£¥][A-Za-z°µΩ/.]*(?:\^[23])?"
_WHOLE_RE = re.compile(rf"[$€£¥]?\s*(?P<n>(?:{_NUMBER_RE.pattern}))\s*(?:{_UNIT}(?:\s+{_UNIT}){{0,2}})?\.?")
_WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def _value(match: re.Match[str] | None) -> tuple[float, bool] | None:
    """(value, is_percent) of a _NUMBER_RE / _WHOLE_RE match; None for no match or a zero denominator."""
    if match is None or float((match.group("den") or "1").replace(",", "")) == 0:
        return None
    value = float(match.group("num").replace(",", "")) / float((match.group("den") or "1").replace(",", ""))
    return value, match.group("pct") is not None


def _read_number(text: str, whole: bool) -> tuple[float, bool] | None:
    """(value, is_percent): of the whole text as one number (currency, percent and units allowed) if ``whole``,
    else of the last number in free text, or of the last number word (zero..twenty) if it has no digits."""
    text = _clean(text).replace("\\%", "%").replace("{,}", ",").replace("\\!", "")
    text = re.sub(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}", r"\1/\2", text)
    if whole:
        return _value(_WHOLE_RE.fullmatch(text.strip()))
    values = [v for m in _NUMBER_RE.finditer(text) if (v := _value(m)) is not None]
    words = [_WORD_NUMBERS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _WORD_NUMBERS]
    return values[-1] if values else (float(words[-1]), False) if words else None


def parse_number(text: str) -> float | None:
    """The value of ``text`` when it is one number: "1,234.5", "-3", "3/4", "\\frac{3}{4}", "25%", "$12", "12 cm".

    A percent sign is dropped (``"25%"`` -> 25.0); :func:`numbers_match` knows it was there.
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a str, got {type(text).__name__}")
    parsed = _read_number(text, whole=True)
    return parsed[0] if parsed else None


def extract_number(text: str) -> float | None:
    """The last number in free text (final answers come last after the reasoning), or None.

    Handles thousands commas, fractions (``3/4``, ``\\frac{3}{4}``), percent signs (dropped), units after the
    number, full-width digits and the unicode minus; number words zero..twenty when the text has no digits.
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a str, got {type(text).__name__}")
    parsed = _read_number(text, whole=False)
    return parsed[0] if parsed else None


def numbers_match(pred: str | float, gold: str | float, rel_tol: float = 1e-6, abs_tol: float = 0.0) -> bool:
    """True when the predicted number equals the gold number within tolerance (relative to the gold).

    ``gold`` must be one number (:func:`parse_number`); ``pred`` may be free text, whose last number is used. A
    percent on one side may also be read as a fraction: "25%" matches 0.25 as well as 25.
    """
    if rel_tol < 0 or abs_tol < 0:
        raise InputError(f"tolerances must be >= 0, got rel_tol={rel_tol}, abs_tol={abs_tol}")

    def read(value: str | float, whole: bool) -> tuple[float, bool] | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InputError(f"a number or str is needed, got {type(value).__name__}")
        if not isinstance(value, str):
            return float(value), False
        return _read_number(value, True) or (None if whole else _read_number(value, False))

    p, g = read(pred, whole=False), read(gold, whole=True)
    if p is None or g is None:
        return False
    preds = {p[0], p[0] / 100} if p[1] else {p[0]}
    golds = {g[0], g[0] / 100} if g[1] else {g[0]}
    return any(abs(a - b) <= max(rel_tol * abs(b), abs_tol) for a in preds for b in golds)


# ----------------------------------------------------------------------------------------------- boxes

_COORD = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"  # no thousands commas: the commas separate the coordinates
_BOX_RE = re.compile(rf"[\[(]\s*({_COORD})\s*,\s*({_COORD})\s*,\s*({_COORD})\s*,\s*({_COORD})\s*[\])]")


def extract_box(response: str) -> tuple[float, float, float, float] | None:
    """The first box ``[x1, y1, x2, y2]`` (inside ``<box>`` or plain) on the 0-1000 grid, or None.

    Following the RefCOCO protocol's safeguard for outputs in 0-1 (PAPER.md section 9.1), a box whose four
    coordinates all lie in [0, 1] is read as normalised and scaled by 1000.
    """
    if not isinstance(response, str):
        raise InputError(f"response must be a str, got {type(response).__name__}")
    match = _BOX_RE.search(_clean(response))
    if match is None:
        return None
    x1, y1, x2, y2 = (float(g) for g in match.groups())
    if all(0.0 <= v <= 1.0 for v in (x1, y1, x2, y2)):
        x1, y1, x2, y2 = x1 * 1000, y1 * 1000, x2 * 1000, y2 * 1000
    return x1, y1, x2, y2


# ----------------------------------------------------------------------------------------------- judge


class Judge(Protocol):
    """Reads the answer out of a response when the rules cannot: a letter (multiple choice), a text, or None."""

    def __call__(self, question: str, response: str, options: Mapping[str, str] | None) -> str | None: ...


# ----------------------------------------------------------------------------------------------- entry point

_ANSWER_IS_RE = re.compile(r"(?i:answer\s*(?:is\s*:?|[:：]))|答案\s*(?:(?:是|为)\s*[:：]?|[:：])")


def _short_answer(text: str) -> str:
    """What follows the last "answer is" / "Answer:" / "答案是" (to the end of its line, without a final full
    stop), else the whole text."""
    matches = list(_ANSWER_IS_RE.finditer(text))
    if matches:
        rest = text[matches[-1].end() :].strip().split("\n", 1)[0].strip().rstrip(".。").strip()
        if rest:
            return rest
    return text.strip()


def extract_answer(response: str, kind: AnswerKind, options: Mapping[str, str] | None = None,
                   judge: Judge | None = None, question: str = "") -> ExtractedAnswer:
    """The answer of ``response`` for a question of ``kind`` (see the module docstring for the order of rules).

    multiple_choice needs ``options`` and answers a letter; yes_no answers "yes" / "no"; short_answer answers a
    short text ("The answer is" stripped); open answers the whole answer text; grounding answers "[x1, y1, x2,
    y2]" with ``box`` set. The judge is asked only for the first three kinds, only when the rules fail, and is
    shown ``question`` and the answer part of the response (after the thinking).
    """
    if kind not in ANSWER_KINDS:
        raise InputError(f"kind must be one of {ANSWER_KINDS}, got {kind!r}")
    if kind == "multiple_choice" and options is None:
        raise InputError("multiple_choice answers need options")
    split = split_thinking(response)
    if not split.format_ok:
        return ExtractedAnswer(None, False, None)
    text, boxed = split.answer, extract_boxed(split.answer)
    if kind == "open":
        return ExtractedAnswer(text or None, True, "text" if text else None)
    if kind == "grounding":
        box, where = (extract_box(boxed), "boxed") if boxed is not None else (None, "text")
        if box is None:
            box, where = extract_box(text), "text"
        if box is None:
            return ExtractedAnswer(None, True, None)
        return ExtractedAnswer("[" + ", ".join(f"{v:g}" for v in box) + "]", True, where, box)  # type: ignore[arg-type]

    def read(answer_text: str) -> str | None:
        if kind == "multiple_choice":
            return extract_choice(answer_text, options)  # type: ignore[arg-type]
        return extract_yes_no(answer_text) if kind == "yes_no" else _clean(answer_text).strip() or None

    source: AnswerSource = "boxed"
    answer = read(boxed) if boxed is not None else None
    # A box that does not name an option / yes / no falls back to the text; a short answer's box is final.
    if answer is None and (boxed is None or kind != "short_answer"):
        answer = read(text) if kind != "short_answer" else _short_answer(text) or None
        source = "choice" if kind == "multiple_choice" else "text"
    if answer is None and judge is not None:
        judged = judge(question, text, options)  # the answer part only: reasoning alone earns no answer
        if judged is not None and (judged := read(judged)):
            return ExtractedAnswer(judged, True, "judge")
    return ExtractedAnswer(answer, True, source if answer is not None else None)
