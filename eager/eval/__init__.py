"""Evaluation: full-ranking metrics and the shared harness."""

from eager.eval.harness import evaluate_rankings, rankings_from_scores, read_rankings
from eager.eval.metrics import DEFAULT_KS, metrics_from_ranks, target_rank

__all__ = ["DEFAULT_KS", "evaluate_rankings", "metrics_from_ranks", "rankings_from_scores", "read_rankings", "target_rank"]
