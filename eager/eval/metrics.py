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


def parse_metric(metric: str) -> tuple[str, int]:
    """("recall", 10) from "recall@10"; anything else raises, naming the forms that work."""
    name, _, cutoff = metric.partition("@")
    if name not in ("recall", "ndcg") or not cutoff.isdigit() or int(cutoff) < 1:
        raise ValueError(f"unknown metric {metric!r}: use recall@K or ndcg@K with K ≥ 1, e.g. ndcg@10")
    return name, int(cutoff)


def user_metric(ranks: Sequence[int | None], metric: str) -> list[float]:
    """Each user's own value of ``metric`` ("recall@10", "ndcg@5", ...): what a metric averages.

    Paired comparisons (eager.lab.compare) need the per-user values, not only their mean.
    """
    name, k = parse_metric(metric)
    hit = [r is not None and r <= k for r in ranks]
    if name == "recall":
        return [1.0 if h else 0.0 for h in hit]
    return [1.0 / math.log2(r + 1) if h else 0.0 for r, h in zip(ranks, hit)]


def metrics_from_ranks(ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean Recall@K and NDCG@K over users given each user's target rank (None = not ranked)."""
    n = len(ranks)
    if n == 0:
        raise ValueError("no users to evaluate")
    out: dict[str, float] = {}
    for k in ks:
        for name in ("recall", "ndcg"):
            out[f"{name}@{k}"] = sum(user_metric(ranks, f"{name}@{k}")) / n
    return out


def ranking_agreement(a: Sequence[Sequence], b: Sequence[Sequence], k: int = 10) -> dict[str, float]:
    """How alike two systems' lists are, user by user: the mean share of top-``k`` items they
    have in common (``overlap@k``, 0 to 1) and the share of users with the same first item."""
    pairs = list(zip(a, b, strict=True))
    if not pairs:
        return {f"overlap@{k}": float("nan"), "same_top1": float("nan"), "users": 0}
    overlap = sum(len(set(x[:k]) & set(y[:k])) / k for x, y in pairs) / len(pairs)
    same = sum(bool(x) and bool(y) and x[0] == y[0] for x, y in pairs) / len(pairs)
    return {f"overlap@{k}": overlap, "same_top1": same, "users": len(pairs)}
