"""Full-ranking metrics for one held-out item per user.

With a single relevant item, Recall@K is the hit rate and NDCG@K = 1/log2(rank + 1) when the
item is ranked within the top K (rank is 1-based), else 0.
"""

from __future__ import annotations

import math
from typing import Sequence

DEFAULT_KS = (5, 10, 20)


def target_rank(ranked: Sequence, target) -> int | None:
    """1-based position of ``target`` in ``ranked`` or None if absent."""
    for position, item in enumerate(ranked, start=1):
        if item == target:
            return position
    return None


def metrics_from_ranks(ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean Recall@K and NDCG@K over users given each user's target rank (None = not ranked)."""
    n = len(ranks)
    if n == 0:
        raise ValueError("no users to evaluate")
    out: dict[str, float] = {}
    for k in ks:
        hits = [r for r in ranks if r is not None and r <= k]
        out[f"recall@{k}"] = len(hits) / n
        out[f"ndcg@{k}"] = sum(1.0 / math.log2(r + 1) for r in hits) / n
    return out
