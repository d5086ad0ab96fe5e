"""Training data: records, readers (JSONL, Parquet, HF datasets on disk, WebDataset tars) and the mixture.

Public API:
    Record, Turn, ImageRef, Skipped           one sample / one unreadable item
    validate_record(record, check_images)     why a record cannot be trained on, or None
    SourceSpec, iter_records(spec), count_items(spec)
    DatasetConfig, MixtureConfig.from_yaml(path)
    MixtureStream(config, seed, ...)          deterministic, validated, resumable (state_dict/load_state_dict)
    DataError                                 unreadable data, or more bad records than the error budget
"""

from .errors import DataError
from .mixture import DatasetConfig, MixtureConfig
from .readers import FORMATS, SourceSpec, count_items, iter_records
from .records import KINDS, ImageRef, Record, Skipped, Turn, parse_record, reason_category, validate_record
from .stream import MixtureItem, MixtureStream

__all__ = [
    "FORMATS", "KINDS", "DataError", "DatasetConfig", "ImageRef", "MixtureConfig", "MixtureItem",
    "MixtureStream", "Record", "Skipped", "SourceSpec", "Turn", "count_items", "iter_records", "parse_record",
    "reason_category", "validate_record",
]
