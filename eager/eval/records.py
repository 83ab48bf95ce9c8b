"""An evaluation read back from its files: each user's target and the target's rank."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eager.eval.harness import METRICS_FILE, PREDICTIONS_FILE, ranked_rows
from eager.eval.metrics import target_rank


@dataclass(frozen=True)
class Evaluation:
    """One system's ranked lists for every user of a split, with what the files say about them."""

    name: str
    targets: dict[str, str]  # user key -> held-out item key
    ranks: dict[str, int | None]  # user key -> 1-based rank of the target, None if not returned
    dataset: str | None = None
    split: str | None = None
    source: str = ""
    depth: int | None = None  # the longest ranked list: no metric at a deeper K can be read from it


def read_evaluation(path: str | Path, name: str | None = None) -> Evaluation:
    """An evaluation folder (``predictions.jsonl`` + ``metrics.json``) or a ``predictions.jsonl`` file."""
    path = Path(path)
    predictions = path / PREDICTIONS_FILE if path.is_dir() else path
    if not predictions.is_file():
        raise FileNotFoundError(
            f"{predictions}: no predictions to compare. Give a folder written by `eager eval` or "
            f"`eager baseline` (it holds {PREDICTIONS_FILE}), or the {PREDICTIONS_FILE} file itself")
    targets: dict[str, str] = {}
    ranks: dict[str, int | None] = {}
    depth = 0
    for number, user, target, ranked in ranked_rows(predictions, with_target=True):
        if user in targets:
            raise ValueError(f"{predictions}:{number}: user {user!r} appears twice")
        targets[user] = target
        ranks[user] = target_rank(ranked, target)
        depth = max(depth, len(ranked))
    if not targets:
        raise ValueError(f"{predictions}: no users in it")
    meta_path = predictions.parent / METRICS_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return Evaluation(name=name or meta.get("model") or predictions.parent.name, targets=targets, ranks=ranks,
                      dataset=meta.get("dataset"), split=meta.get("split"), source=str(predictions), depth=depth)
