"""Data curation (issue 6): YAML pipelines of stages over training records, run in parallel and resumable.

Public API:
    load_pipeline(path) -> PipelineConfig            the pipeline YAML, checked (sailvl2.curation.config)
    run_pipeline(config, workers=, resume=, engine=) -> RunResult   (sailvl2.curation.runner)
    Item, Decision, MapStage, GlobalStage             what stages take and return (sailvl2.curation.types)
    generated_id(parent_id, stage, k)                 the id of a record a map stage generated
    register_stage(name), get_stage(name, settings)  the stage registry (sailvl2.curation.stages)
    CurationError                                     every pipeline problem

CLI: ``sailvl2 curate PIPELINE.yaml [--engine local|ray] [--workers N] [--no-resume]``; docs/curation.md.
"""

from __future__ import annotations

from .config import InputSpec, PipelineConfig, StageSpec, load_pipeline
from .runner import RunResult, run_pipeline
from .stages import available_stages, get_stage, register_stage
from .types import CurationError, Decision, GlobalStage, Item, MapStage, generated_id

__all__ = [
    "CurationError", "Decision", "GlobalStage", "InputSpec", "Item", "MapStage", "PipelineConfig", "RunResult",
    "StageSpec", "available_stages", "generated_id", "get_stage", "load_pipeline", "register_stage", "run_pipeline",
]
