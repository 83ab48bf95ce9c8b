"""Leave-one-out: last item = test, second-to-last = validation, the rest = train."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eager.data.dataset import InteractionData

SPLITS = ("train", "valid", "test")
DEFAULT_MAX_HISTORY = 20


@dataclass(frozen=True)
class EvalCase:
    """One user's prediction task: the last ``max_history`` items before ``target``."""

    user: int
    history: np.ndarray
    target: int


def train_sequences(data: InteractionData) -> list[np.ndarray]:
    """Per user, everything but the last two items (what any model may train on)."""
    return [seq[:-2] for seq in data.sequences]


def train_item_counts(data: InteractionData) -> np.ndarray:
    """How often each item (by internal index) occurs in the train split."""
    return np.bincount(np.concatenate(train_sequences(data)), minlength=data.num_items)


def eval_cases(data: InteractionData, split: str, max_history: int | None = DEFAULT_MAX_HISTORY) -> list[EvalCase]:
    """Validation targets the second-to-last item, test the last; users too short are skipped.

    ``max_history=None``: every item before the target (what the user has, not what a model reads).
    The users and their order do not depend on it, so capped and uncapped cases line up."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', not {split!r}")
    offset = 2 if split == "valid" else 1
    cases = []
    for user, seq in enumerate(data.sequences):
        if len(seq) < offset + 1:
            continue
        pos = len(seq) - offset
        start = 0 if max_history is None else max(0, pos - max_history)
        cases.append(EvalCase(user, seq[start:pos], int(seq[pos])))
    return cases
