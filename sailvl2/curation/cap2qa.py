"""Caption -> QA through an LLM endpoint (PAPER.md 4.2, "Synthetic VQA"): questions about an image written
and answered from its caption alone, emitted as training records tied to the caption's image.

One caption -> one prompt (:data:`DEFAULT_PROMPT`, or any template with the ``{caption}`` and optional
``{num_pairs}`` placeholders; other braces are left alone, so the template may show JSON) -> one reply that
must be strict JSON, ``{"qa": [{"question": "...", "answer": "..."}, ...]}`` (a bare list of pairs, or the
document inside one Markdown code fence, is accepted too; nothing else). Each pair is validated:

* the question is a non-empty string, not a repeat of an earlier question of the caption;
* the answer is a non-empty string or a number, and verifiable (``verify: tokens``): every word and number
  of the answer, apart from a few function words, occurs in the caption. PAPER.md 4.2 has the answers come
  from the caption text; this is the check that they did. Yes/no answers cannot be checked that way and are
  refused unless ``allow_yes_no``.

A reply that is not JSON of that shape, or that leaves fewer than ``min_pairs`` valid pairs, is retried (at
most ``max_attempts`` requests per caption), the retry prompt naming what was wrong, since a greedy model
would otherwise repeat itself. Endpoint failures (after the client's own retries) end the caption at once.
PAPER.md 4.2 gives neither the prompt nor the pairs per caption (both [NOT FOUND]), hence the settings.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import EndpointError, InputError

if TYPE_CHECKING:  # imported where used: sailvl2.evaluation.prompts loads torch (its image helpers)
    from ..evaluation.prompts import PreparedInput

__all__ = ["DEFAULT_PROMPT", "CaptionToQA", "Cap2QAResult", "Cap2QASettings", "CompletionClient", "QAPair",
           "caption_of", "captions_to_qa", "parse_qa_reply", "qa_records"]

DEFAULT_PROMPT = """You write training questions for a vision-language model.
Below is a detailed caption of an image. Write {num_pairs} diverse questions that a person looking at the \
image could ask, and answer each one using only facts stated in the caption. Ask about different things \
(objects, counts, colours, positions, text, values). Keep each answer short: a word, a number or a short \
phrase taken from the caption. Do not ask yes/no questions.

Reply with JSON only, exactly in this form:
{"qa": [{"question": "...", "answer": "..."}]}

Caption:
{caption}"""
_RETRY_NOTE = "\n\nYour previous reply was rejected ({problem}). Reply with the JSON object only."
_VERIFY_MODES = ("tokens", "none")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n\s*```$", re.S)
_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
_FUNCTION_WORDS = frozenset("a an the of in on at to and or is are was were it its by for with from as".split())
_YES_NO = frozenset({"yes", "no"})


class CompletionClient(Protocol):
    """What generates the reply: :class:`sailvl2.evaluation.endpoint.EndpointClient` or anything with the
    same ``complete`` (a local model wrapper, a test double)."""

    def complete(self, prepared: PreparedInput) -> str: ...


@dataclass(frozen=True)
class Cap2QASettings:
    """``num_pairs`` asked per caption (at most that many kept), ``min_pairs`` valid ones needed to accept a
    reply, ``max_attempts`` requests per caption, ``question_template`` the human turn of a QA record
    (``{question}`` placeholder; one ``<image>`` per image is put before it), ``max_new_tokens`` the reply
    budget."""

    num_pairs: int = 3
    min_pairs: int = 1
    max_attempts: int = 3
    prompt: str = DEFAULT_PROMPT
    verify: str = "tokens"
    allow_yes_no: bool = False
    question_template: str = "{question}"
    max_new_tokens: int = 1024

    def __post_init__(self) -> None:
        if not 1 <= self.min_pairs <= self.num_pairs:
            raise InputError(f"need 1 <= min_pairs <= num_pairs, got {self.min_pairs} and {self.num_pairs}")
        if self.max_attempts < 1:
            raise InputError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if "{caption}" not in self.prompt:
            raise InputError("the prompt template needs a '{caption}' placeholder")
        if "{question}" not in self.question_template:
            raise InputError("question_template needs a '{question}' placeholder")
        if self.verify not in _VERIFY_MODES:
            raise InputError(f"verify must be one of {_VERIFY_MODES}, got {self.verify!r}")
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass(frozen=True)
class Cap2QAResult:
    """What one caption gave: the accepted ``pairs`` and their ``records``, the requests made, and every
    problem met on the way (rejected replies and pairs, endpoint errors)."""

    caption_id: str
    pairs: tuple[QAPair, ...]
    records: tuple[dict[str, Any], ...]
    attempts: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.pairs)


# --------------------------------------------------------------------------------------------- parsing


def _words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def _verifiable(answer: str, caption_words: set[str]) -> bool:
    words = [w for w in _words(answer) if w not in _FUNCTION_WORDS]
    return bool(words) and all(w in caption_words for w in words)


def parse_qa_reply(reply: str, caption: str, settings: Cap2QASettings = Cap2QASettings()
                   ) -> tuple[list[QAPair], list[str]]:
    """The valid pairs of one reply (at most ``num_pairs``, in reply order) and the problems found. A reply
    that is not the required JSON gives no pairs and one problem starting with ``"malformed"``."""
    text = reply.strip()
    fenced = _FENCE.match(text)
    try:
        data = json.loads(fenced.group(1) if fenced else text)
    except ValueError as exc:
        return [], [f"malformed: not JSON ({exc.msg} at char {exc.pos})"]
    entries = data.get("qa") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return [], ['malformed: expected {"qa": [...]} or a list of pairs']
    caption_words = set(_words(caption))
    pairs, problems, seen = [], [], set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            problems.append(f"pair {index}: not an object")
            continue
        question, answer = entry.get("question"), entry.get("answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(question, str) or not question.strip():
            problems.append(f"pair {index}: empty question")
        elif not isinstance(answer, str) or not answer.strip():
            problems.append(f"pair {index}: no answer")
        elif " ".join(_words(question)) in seen:
            problems.append(f"pair {index}: repeated question")
        elif answer.strip().casefold().rstrip(".") in _YES_NO and not settings.allow_yes_no:
            problems.append(f"pair {index}: yes/no answer")
        elif settings.verify == "tokens" and answer.strip().casefold().rstrip(".") not in _YES_NO \
                and not _verifiable(answer, caption_words):
            problems.append(f"pair {index}: answer {answer.strip()[:40]!r} not found in the caption")
        else:
            seen.add(" ".join(_words(question)))
            pairs.append(QAPair(question.strip(), answer.strip()))
    return pairs[:settings.num_pairs], problems


# --------------------------------------------------------------------------------------------- records


def caption_of(record: Mapping[str, Any]) -> str | None:
    """The caption of a caption record: the reply of a record with one human and one gpt turn (either turn
    spelling); None for anything else."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        return None
    turns = [t for t in turns if isinstance(t, Mapping) and (t.get("from") or t.get("role")) != "system"]
    if len(turns) != 2:
        return None
    roles = [t.get("from") or t.get("role") for t in turns]
    reply = turns[1].get("value", turns[1].get("content"))
    if roles[0] not in ("human", "user") or roles[1] not in ("gpt", "assistant") or not isinstance(reply, str):
        return None
    return reply.strip() or None


def _image_count(record: Mapping[str, Any]) -> int:
    image = record.get("image")
    return 1 if isinstance(image, str) and image else len(image) if isinstance(image, list) else 0


def qa_records(record: Mapping[str, Any], pairs: Sequence[QAPair], caption_id: str,
               question_template: str = "{question}") -> list[dict[str, Any]]:
    """One single-turn training record per pair, on the caption record's images (same ``image`` value), with
    ids ``<caption id>:qa<k>`` and ``source_caption`` naming the caption record."""
    placeholders = "<image>\n" * _image_count(record)
    rows = []
    for k, pair in enumerate(pairs):
        row: dict[str, Any] = {"id": f"{caption_id}:qa{k}"}
        if "image" in record:
            row["image"] = record["image"]
        human = placeholders + question_template.replace("{question}", pair.question)
        row["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": pair.answer}]
        row.update({"kind": "direct", "task": "caption_qa", "source_caption": caption_id})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- generation


class CaptionToQA:
    """Turns caption records into QA records through ``client`` (see the module docstring)."""

    def __init__(self, client: CompletionClient, settings: Cap2QASettings = Cap2QASettings()) -> None:
        self.client, self.settings = client, settings

    def prompt_for(self, caption: str) -> str:
        caption = caption.replace("<image>", "image")  # a placeholder in the text would ask the endpoint for images
        return self.settings.prompt.replace("{num_pairs}", str(self.settings.num_pairs)).replace("{caption}", caption)

    def generate(self, record: Mapping[str, Any], caption_id: str | None = None) -> Cap2QAResult:
        caption_id = caption_id or str(record.get("id", ""))
        caption = caption_of(record)
        if caption is None:
            return Cap2QAResult(caption_id, (), (), 0, ("not a caption record (one human and one gpt turn)",))
        from ..evaluation.prompts import PreparedInput

        base = self.prompt_for(caption)
        problems: list[str] = []
        prompt = base
        for attempt in range(1, self.settings.max_attempts + 1):
            prepared = PreparedInput(index=f"{caption_id}#{attempt}", text=prompt, images=[], max_num=1,
                                     use_msac=False, max_new_tokens=self.settings.max_new_tokens)
            try:
                reply = self.client.complete(prepared)
            except EndpointError as exc:
                problems.append(f"endpoint: {exc}")
                return Cap2QAResult(caption_id, (), (), attempt, tuple(problems))
            pairs, found = parse_qa_reply(reply, caption, self.settings)
            problems += [f"attempt {attempt}: {p}" for p in found]
            if len(pairs) >= self.settings.min_pairs:
                records = qa_records(record, pairs, caption_id, self.settings.question_template)
                return Cap2QAResult(caption_id, tuple(pairs), tuple(records), attempt, tuple(problems))
            problem = found[0] if len(found) == 1 else f"{len(pairs)} valid pairs, need {self.settings.min_pairs}; " \
                                                       f"{'; '.join(found[:3])}"
            prompt = base + _RETRY_NOTE.format(problem=problem)
        return Cap2QAResult(caption_id, (), (), self.settings.max_attempts, tuple(problems))

    def generate_many(self, records: Sequence[Mapping[str, Any]], ids: Sequence[str] | None = None,
                      concurrency: int = 1) -> list[Cap2QAResult]:
        """:meth:`generate` for many records, ``concurrency`` at a time, results in input order."""
        ids = list(ids) if ids is not None else [str(r.get("id", k)) for k, r in enumerate(records)]
        if concurrency <= 1 or len(records) <= 1:
            return [self.generate(r, i) for r, i in zip(records, ids)]
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sailvl2-cap2qa") as pool:
            return list(pool.map(self.generate, records, ids))


def _rebase_images(record: dict[str, Any], source_dir: Path, target_dir: Path) -> dict[str, Any]:
    """Relative image paths of ``record`` (relative to ``source_dir``) rewritten relative to ``target_dir``."""
    def rebase(path: Any) -> Any:
        if not isinstance(path, str) or os.path.isabs(path):
            return path
        return os.path.relpath(os.path.join(source_dir, path), target_dir)

    image = record.get("image")
    if image is not None:
        record = {**record, "image": [rebase(p) for p in image] if isinstance(image, list) else rebase(image)}
    return record


def captions_to_qa(input_path: str | os.PathLike, output_path: str | os.PathLike, client: CompletionClient,
                   settings: Cap2QASettings = Cap2QASettings(), concurrency: int = 4,
                   only_tasks: Iterable[str] | None = None) -> dict[str, int]:
    """Read caption records from a JSONL file, write their QA records to ``output_path`` (JSONL, written
    atomically; relative image paths rewritten for the output's folder). ``only_tasks`` limits the input to
    records whose ``task`` field is one of them (e.g. ``["caption"]`` for :func:`synthesize_charts` output).
    Returns counts: ``captions``, ``with_qa``, ``qa_records``, ``requests``."""
    source, target = Path(input_path), Path(output_path)
    wanted = set(only_tasks) if only_tasks is not None else None
    records, ids = [], []
    with open(source, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{source}:{line_no + 1}: not JSON: {exc}") from exc
            if not isinstance(record, dict) or caption_of(record) is None:
                continue
            if wanted is not None and record.get("task") not in wanted:
                continue
            records.append(_rebase_images(record, source.parent.resolve(), target.parent.resolve()))
            ids.append(str(record.get("id") or f"{source.stem}:{line_no}"))
    results = CaptionToQA(client, settings).generate_many(records, ids, concurrency)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    with open(temp, "w", encoding="utf-8") as handle:
        for result in results:
            for row in result.records:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temp, target)
    return {"captions": len(records), "with_qa": sum(r.ok for r in results),
            "qa_records": sum(len(r.records) for r in results), "requests": sum(r.attempts for r in results)}
