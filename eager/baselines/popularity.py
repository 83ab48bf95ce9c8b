"""Most-popular baseline: every user gets the items most often seen in the train split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eager.data.dataset import InteractionData
from eager.data.split import eval_cases, train_item_counts
from eager.eval.harness import evaluate_rankings


def popularity_ranking(data: InteractionData, k: int = 20) -> list[str]:
    counts = train_item_counts(data)
    # Stable sort: equal counts keep catalogue order, so the ranking is deterministic.
    order = np.argsort(-counts, kind="stable")[:k]
    keys = data.item_keys
    return [keys[i] for i in order]


def run_popularity(data: InteractionData, out_dir: str | Path, k: int = 20) -> dict[str, dict]:
    top = popularity_ranking(data, k)
    reports = {}
    for split in ("valid", "test"):
        rankings = {data.user_keys[c.user]: top for c in eval_cases(data, split)}
        reports[split] = evaluate_rankings(
            data, split, rankings, model="pop", config={"k": k, "counts_from": "train split"},
            out_dir=Path(out_dir) / split,
        )
    return reports
