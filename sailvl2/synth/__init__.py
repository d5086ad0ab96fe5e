"""Procedurally generated, checkable vision-language data for training a nano SAIL-VL2 from scratch.

Families: shapes (count, colour, kind, size, position, existence, spatial relations), ocr (words, numbers,
phrases), charts (bar / line / pie read-outs and comparisons, small tables), reasoning (multi-step, as
``cot`` with ``<think>`` + ``\\boxed{}`` and as ``direct``), grounding (``<ref>``/``<box>`` in 0-1000),
multi_image (two scenes compared) and captions (detailed and brief).

    from sailvl2.synth import generate_suite, check_suite
    manifest = generate_suite("data/synth", seed=0, sizes={"train": 20000, "val": 1000, "test": 1000})
    report = check_suite("data/synth")        # recomputes every answer independently

Everything is deterministic by seed (byte-identical files for any worker count), drawn with PIL only,
and the splits are disjoint by construction (see ``writer``).
"""

from .checker import CheckReport, check_record, check_suite, scene_signature
from .scene import ShapeScene, TextScene, sample_shape_scene, sample_text_scene, scene_from_dict
from .charts import ChartScene, TableScene, sample_chart_scene, sample_table_scene
from .tasks import QA
from .writer import (CHART_READ_VERSION, FAMILIES, FOCUS_VERSION, GENERATOR_VERSION, SPLIT_BUCKETS, generate_suite,
                     plan_item, split_of)

__all__ = [
    "CHART_READ_VERSION", "FAMILIES", "FOCUS_VERSION", "GENERATOR_VERSION", "QA", "SPLIT_BUCKETS", "ChartScene",
    "CheckReport", "ShapeScene",
    "TableScene", "TextScene", "check_record", "check_suite", "generate_suite", "plan_item",
    "sample_chart_scene", "sample_shape_scene", "sample_table_scene", "sample_text_scene", "scene_from_dict",
    "scene_signature", "split_of",
]
