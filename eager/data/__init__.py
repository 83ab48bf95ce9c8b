"""Data layer: canonical item tables and sequences, benchmark readers, raw preprocessing, splits."""

from eager.data.dataset import TEXT_FIELDS, InteractionData
from eager.data.registry import (
    DATASETS,
    DataNotFoundError,
    get_spec,
    load_dataset,
    resolve_data_root,
)
from eager.data.split import EvalCase, eval_cases, train_sequences

__all__ = [
    "DATASETS",
    "TEXT_FIELDS",
    "DataNotFoundError",
    "EvalCase",
    "InteractionData",
    "eval_cases",
    "get_spec",
    "load_dataset",
    "resolve_data_root",
    "train_sequences",
]
