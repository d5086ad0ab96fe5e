"""Evaluation of sailvl2 models: answer extraction (shared with the RL rewards), benchmark metrics, VLMEvalKit-style
benchmark files, prompts, generation through our model or an OpenAI-compatible server, the runner and reports
(``sailvl2 eval``; docs/evaluation.md).

The extraction, metric and registry names are imported eagerly (standard library only); the rest (images,
torch, matplotlib) is imported on first use of its name, so the RL rewards and ``sailvl2 --help`` stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import DatasetError, EndpointError, JudgeError
from .extract import (
    ANSWER_KINDS,
    AnswerKind,
    ExtractedAnswer,
    Judge,
    extract_answer,
    extract_box,
    extract_choice,
    extract_number,
    extract_yes_no,
    numbers_match,
    parse_number,
)
from .metrics import (
    OPENCOMPASS_BENCHMARKS,
    accuracy,
    anls,
    circular_accuracy,
    circular_shifts,
    grounding_hit,
    iou,
    normalise_vqa_answer,
    ocrbench_correct,
    ocrbench_score,
    opencompass_average,
    per_category,
    relaxed_accuracy,
    vqa_accuracy,
)
from .registry import BenchmarkKind, BenchmarkSpec, get_spec, known_benchmarks

# Public name -> (module, name in it), imported on first access.
_LAZY: dict[str, tuple[str, str]] = {
    "BenchmarkItem": ("datasets", "BenchmarkItem"),
    "LoadedBenchmark": ("datasets", "LoadedBenchmark"),
    "load_tsv": ("datasets", "load_tsv"),
    "write_tsv": ("datasets", "write_tsv"),
    "PreparedInput": ("prompts", "PreparedInput"),
    # prompts.build_prompt would clash with sailvl2.processing's build_prompt (the chat template).
    "build_eval_prompt": ("prompts", "build_prompt"),
    "EndpointClient": ("endpoint", "EndpointClient"),
    "EndpointSettings": ("endpoint", "EndpointSettings"),
    "OpenAIJudge": ("judge", "OpenAIJudge"),
    "BenchmarkScore": ("scoring", "BenchmarkScore"),
    "score_benchmark": ("scoring", "score_benchmark"),
    "EndpointGenerator": ("runner", "EndpointGenerator"),
    "EvalResult": ("runner", "EvalResult"),
    "ModelGenerator": ("runner", "ModelGenerator"),
    "RunSettings": ("runner", "RunSettings"),
    "run_eval": ("runner", "run_eval"),
    "compare_results": ("report", "compare_results"),
    "write_comparison": ("report", "write_comparison"),
    "PAPER_RESULTS": ("report", "PAPER_RESULTS"),
    "SUITE_BENCHMARK": ("suite", "SUITE_BENCHMARK"),
    "export_suite": ("suite", "export_suite"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ANSWER_KINDS",
    "AnswerKind",
    "BenchmarkKind",
    "BenchmarkSpec",
    "DatasetError",
    "EndpointError",
    "ExtractedAnswer",
    "Judge",
    "JudgeError",
    "OPENCOMPASS_BENCHMARKS",
    "accuracy",
    "anls",
    "circular_accuracy",
    "circular_shifts",
    "extract_answer",
    "extract_box",
    "extract_choice",
    "extract_number",
    "extract_yes_no",
    "get_spec",
    "grounding_hit",
    "iou",
    "known_benchmarks",
    "normalise_vqa_answer",
    "numbers_match",
    "ocrbench_correct",
    "ocrbench_score",
    "opencompass_average",
    "parse_number",
    "per_category",
    "relaxed_accuracy",
    "vqa_accuracy",
    *_LAZY,
]
