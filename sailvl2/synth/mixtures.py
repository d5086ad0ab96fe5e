"""The suite's training mixtures (``mixtures/*.yaml``): which train streams each nano ladder stage draws, at what
rate. The writer (writer.py) calls :func:`write_mixtures` with the streams a suite holds; a mixture entry whose
stream the suite lacks is left out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SPATIAL_TASKS", "write_mixtures"]

# The question-answer streams of multi-task training and SFT. No captions: training on caption texts, before
# or mixed into multi-task training, broke the nano model's read-out of one shape's attributes (docs/nano-sessions.md,
# session 6); the `captions` mixture stays available.
_QA_STREAMS = ["shapes-dialogues", "ocr-dialogues", "charts-dialogues", "grounding-dialogues",
               "multi_image-dialogues", "reasoning"]
# Mixtures for the ladder: (mixture name, [stream or (stream, repeat)]); cot streams get kind: cot.
_MIXTURES: dict[str, list[str | tuple[str, float]]] = {
    "captions": ["captions"],
    # Grounding's and the charts' single-turn records besides their dialogues: a dialogue opens with locate
    # (charts: with the value questions), so describe, chart type and table rows were never asked first in
    # training, as every held-out question is. At 500 Muon steps, describe 38 % -> 78 % and boxes 25 % -> 43 %
    # (docs/nano-sessions.md, session 10).
    # `ocr-numbers`, `ocr-letters`: the extra reading images (generate_suite(number_images=...,
    # letter_images=...)); absent when there are none. Grounding is drawn twice and the numbers at half their
    # count: the reading streams took draws from grounding, and its boxes fell (run 21, 60.5 %;
    # docs/nano-sessions.md, sessions 11-12). The letter strings at 1.5, with 2100 multi-task steps:
    # at 1800 steps they cost boxes and position (run 25); at 2100, words 86 % after the stage (run 27, session 14).
    # `shapes-more-dialogues` (generate_suite(shape_images=...)): fresh shape scenes asked the counts and the
    # spatial questions; the suite's ~1900 shape dialogues hold ~460 relation and ~240 which questions. At half,
    # the multi-task stage counts all shapes at 100 % (84 %), by colour 87 % (81), by kind 88 % (76) and answers
    # which at 62 % (10 %), perception 89.7 -> 91.6 % on the 5000 questions (run 55, docs/nano-sessions.md,
    # session 21); relation stays at chance.
    "multitask": ["shapes-dialogues", "ocr-dialogues", "charts-dialogues", ("grounding-dialogues", 2),
                  "multi_image-dialogues", "reasoning", ("grounding", 2), "charts", ("ocr-numbers", 0.5),
                  ("ocr-letters", 1.5), ("charts-read", 0.5), ("shapes-more-dialogues", 0.5)],
    # The multitask mixture with the spatial questions drawn 3x more often (the `spatial` stream) and
    # grounding's single-turn records besides its dialogues. On shapes alone it lifts position from 6 % to
    # 74 %; in the full ladder (run 13) it trades other shape tasks for place, so the ladder does not use it
    # (docs/nano-sessions.md, session 8).
    "multitask-spatial": [*_QA_STREAMS, ("spatial", 3), "grounding", "charts"],
    # A quarter of the number and chart read-out images per epoch keeps reading trained through SFT; the letter
    # strings whole, with the SFT and LongCoT recipes' steps raised by a quarter so the other streams keep their
    # draws: held-out words 46-50 % -> 63 % over two seeds, boxes and counts kept (runs 45-48, session 19).
    # Grounding's single-turn records too, as in the multi-task stage: without them boxes fell from 95 % to
    # 87 % through SFT and LongCoT (run 24, docs/nano-sessions.md, session 14).
    # The extra shape dialogues at a quarter likewise.
    "sft": [*_QA_STREAMS, "grounding", ("ocr-numbers", 0.25), "ocr-letters", ("charts-read", 0.25),
            ("shapes-more-dialogues", 0.25)],
    # LongCoT SFT replays the direct perception dialogues: without them the run-8 LongCoT stage lost 4 points
    # of held-out perception that SFT had reached (docs/nano-sessions.md). It replays the reading streams too
    # (the letter strings whole, as in SFT): without them run 22's LongCoT stage read 38 % of the held-out
    # words, SFT 57 % (session 12).
    "cot": ["reasoning-cot", "reasoning", "shapes-dialogues", "ocr-dialogues", "charts-dialogues",
            "grounding-dialogues", "multi_image-dialogues", "grounding", ("ocr-numbers", 0.25),
            "ocr-letters", ("charts-read", 0.25), ("shapes-more-dialogues", 0.25)],
    "focus": ["focus"],
}
# Questions whose answer names or uses a place in the image: the `spatial` stream holds their single-turn
# training records (a subset of the shapes stream), for the mixtures to draw more often.
SPATIAL_TASKS = ("shapes/position", "shapes/which", "shapes/relation")


def write_mixtures(out: Path, streams: Mapping[str, int]) -> dict[str, list[str]]:
    """``mixtures/*.yaml`` over the train streams that exist (JSON-quoted strings are valid YAML)."""
    written: dict[str, list[str]] = {}
    if not streams:
        return written
    folder = out / "mixtures"
    folder.mkdir(parents=True, exist_ok=True)
    every = {"all": ["*"]}
    for name, wanted in {**_MIXTURES, **every}.items():
        lines = ["# Generated by sailvl2.synth; paths are relative to this file.", "datasets:"]
        if wanted == ["*"]:
            lines.append('  - {name: all, path: "../train.jsonl", max_num: 1}')
            used = ["all"]
        else:
            entries = [(entry, 1) if isinstance(entry, str) else entry for entry in wanted]
            entries = [(stream, repeat) for stream, repeat in entries if streams.get(stream)]
            used = [stream for stream, _ in entries]
            for stream, repeat in entries:
                kind = ", kind: cot" if stream.endswith("-cot") else ""
                times = f", repeat: {repeat}" if repeat != 1 else ""
                lines.append(f'  - {{name: {json.dumps(stream)}, path: "../families/train-{stream}.jsonl", '
                             f"max_num: 1{kind}{times}}}")
        if used:
            (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
            written[name] = used
    return written
