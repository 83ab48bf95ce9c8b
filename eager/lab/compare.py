"""Paired comparison of two evaluations of the same users.

Two systems scored on one split answer for the same users, so whether one beats the other is a
question about the per-user differences, not about two means each with its own standard error:
most users are missed by both, and those cancel. For each metric this gives the difference of the
means (B − A), a bootstrap confidence interval of it over users, a two-sided sign-flip permutation
p-value (under "no difference" each user's pair is exchangeable), and how many users each system
serves better. The resampling is scipy's; both are seeded, so a comparison repeats exactly.

Either side may be several runs of one system (training seeds, say): each user's metric is then
the mean over that side's runs before the pairing, so what is tested is the seed-averaged
difference, and each run's own mean is reported beside it. That interval is one over users, for
these runs: it treats each trained model as fixed. A second interval then resamples the runs too
(a two-level bootstrap: each side's runs drawn with replacement, then the users), so a training
run's own luck widens it. With two or three runs a side it is a rough floor on that variance, not
a measure of it: a bootstrap of n draws shrinks their spread by √((n−1)/n) and has few distinct
outcomes. It is the interval to quote when the question is about a recipe, not two checkpoints.

An evaluation is what the harness writes: a folder with ``predictions.jsonl`` (user, target,
ranked keys) and usually ``metrics.json`` (dataset, split, model), or the jsonl file itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence, Union

import numpy as np
from scipy import stats

from eager.eval.metrics import parse_metric, user_metric
from eager.eval.records import Evaluation

DEFAULT_METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
# Resampled statistics are computed this many resamples at a time: 1,000 × 22k users of float64
# is ~180 MB, which keeps a Beauty-sized comparison inside a small machine's memory.
RESAMPLE_BATCH = 1000


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    a: float
    b: float
    difference: float  # b - a
    ci_low: float
    ci_high: float
    p_value: float
    b_better_users: int
    a_better_users: int
    a_runs: tuple[float, ...] = ()  # each run's own mean when a side is several runs
    b_runs: tuple[float, ...] = ()
    runs_ci_low: float | None = None  # the interval with runs resampled too (only when a side has several)
    runs_ci_high: float | None = None

    @property
    def relative(self) -> float | None:
        return self.difference / self.a if self.a else None


def _check_comparable(a: Evaluation, b: Evaluation) -> list[str]:
    """The users both evaluated, in A's order; anything that makes them incomparable raises."""
    for field in ("dataset", "split"):
        va, vb = getattr(a, field), getattr(b, field)
        if va and vb and va != vb:
            raise ValueError(f"not the same {field}: {a.source} is {va!r}, {b.source} is {vb!r}; "
                             f"compare two evaluations of one {field}")
    only_a, only_b = a.targets.keys() - b.targets.keys(), b.targets.keys() - a.targets.keys()
    if only_a or only_b:
        raise ValueError(
            f"not the same users: {len(only_a)} only in {a.source} (e.g. {sorted(only_a)[:1]}), {len(only_b)} only in "
            f"{b.source} (e.g. {sorted(only_b)[:1]}); a paired comparison needs both evaluated on the whole split "
            "(an `eager eval --limit N` run covers only N users)")
    users = list(a.targets)  # A's file order is the harness's user order, so the sums repeat its means
    for user in users:
        if a.targets[user] != b.targets[user]:
            raise ValueError(f"user {user!r} has target {a.targets[user]!r} in {a.source} but {b.targets[user]!r} in "
                             f"{b.source}: these are different splits or datasets")
    return users


Runs = Union[Evaluation, Sequence[Evaluation]]


def _as_runs(side: Runs, label: str) -> list[Evaluation]:
    """One side's runs; several must be of the same users and targets, or their mean means nothing."""
    runs = [side] if isinstance(side, Evaluation) else list(side)
    if not runs:
        raise ValueError(f"side {label} has no evaluations to compare")
    for other in runs[1:]:
        _check_comparable(runs[0], other)
    return runs


def compare_evaluations(
    a: Runs,
    b: Runs,
    metrics: Sequence[str] = DEFAULT_METRICS,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> dict:
    """B against A on every user both evaluated: per metric, B − A with its CI and p-value.

    A and B are each one evaluation or several runs of one system (averaged per user first).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    runs_a, runs_b = _as_runs(a, "A"), _as_runs(b, "B")
    users = _check_comparable(runs_a[0], runs_b[0])
    rows = []
    for metric in metrics:
        _, k = parse_metric(metric)
        for e in runs_a + runs_b:
            if e.depth is not None and k > e.depth:
                raise ValueError(f"{metric} needs {k} ranked items per user, but {e.source} ranks at most {e.depth}: "
                                 f"choose K ≤ {e.depth} or evaluate deeper")
        per_run_a = [np.array(user_metric([e.ranks[u] for u in users], metric)) for e in runs_a]
        per_run_b = [np.array(user_metric([e.ranks[u] for u in users], metric)) for e in runs_b]
        row = _compare_metric(metric, np.mean(per_run_a, axis=0), np.mean(per_run_b, axis=0), confidence,
                              resamples, seed)
        if len(runs_a) > 1 or len(runs_b) > 1:
            low, high = runs_and_users_interval(np.stack(per_run_a), np.stack(per_run_b), confidence, resamples, seed)
            row = replace(row, a_runs=tuple(_harness_mean(v) for v in per_run_a),
                          b_runs=tuple(_harness_mean(v) for v in per_run_b), runs_ci_low=low, runs_ci_high=high)
        rows.append(row)
    return {"a": _side(runs_a), "b": _side(runs_b),
            "dataset": runs_a[0].dataset or runs_b[0].dataset, "split": runs_a[0].split or runs_b[0].split,
            "users": len(users), "confidence": confidence, "resamples": resamples, "seed": seed,
            "metrics": [_row_dict(r) for r in rows]}


def runs_and_users_interval(per_run_a: np.ndarray, per_run_b: np.ndarray, confidence: float, resamples: int,
                            seed: int) -> tuple[float, float]:
    """Percentile interval of B − A when both the runs of each side and the users are resampled.

    ``per_run_a`` is (runs of A × users), ``per_run_b`` likewise, users in the same order. Each
    resample draws every side's runs with replacement (a side of one run keeps it) and one draw of
    users shared by both sides (the pairing), and takes the difference of the two sides' means.
    """
    rng = np.random.default_rng(seed)
    n_users = per_run_a.shape[1]
    differences = []
    for start in range(0, resamples, RESAMPLE_BATCH):
        batch = min(RESAMPLE_BATCH, resamples - start)
        # Each resample's users as counts (how often each user is drawn): the means are then matrix products.
        drawn = rng.integers(0, n_users, size=(batch, n_users)) + n_users * np.arange(batch)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=batch * n_users).reshape(batch, n_users).astype(np.float64)
        side_means = []
        for per_run in (per_run_a, per_run_b):
            run_means = counts @ per_run.T / n_users  # (batch, runs): each run's mean over the drawn users
            picks = rng.integers(0, len(per_run), size=(batch, len(per_run)))
            side_means.append(np.take_along_axis(run_means, picks, axis=1).mean(axis=1))
        differences.append(side_means[1] - side_means[0])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.concatenate(differences), [tail, 100 - tail])
    return float(low), float(high)


def _row_dict(row: MetricComparison) -> dict:
    fields = asdict(row) | {"relative": row.relative}
    for runs in ("a_runs", "b_runs"):  # only a pooled comparison has them; lists, as JSON gives them back
        fields[runs] = list(fields[runs])
        if not fields[runs]:
            del fields[runs]
    if row.runs_ci_low is None:
        del fields["runs_ci_low"], fields["runs_ci_high"]
    return fields


def _side(runs: list[Evaluation]) -> dict:
    side = {"name": runs[0].name, "source": runs[0].source}
    if len(runs) > 1:
        side |= {"runs": len(runs), "sources": [e.source for e in runs]}
    return side


def _harness_mean(values: np.ndarray) -> float:
    # A plain sum over users, as the harness computes its means, so one run repeats metrics.json exactly.
    return float(sum(values.tolist()) / len(values))


def _compare_metric(metric: str, va: np.ndarray, vb: np.ndarray, confidence: float, resamples: int,
                    seed: int) -> MetricComparison:
    diff = vb - va
    mean_a, mean_b = _harness_mean(va), _harness_mean(vb)
    if not diff.any():  # identical on every user: nothing to resample
        low = high = 0.0
        p_value = 1.0
    else:
        interval = stats.bootstrap((diff,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                   method="percentile", vectorized=True, batch=RESAMPLE_BATCH,
                                   random_state=np.random.default_rng(seed)).confidence_interval
        low, high = float(interval.low), float(interval.high)
        # One sample with permutation_type="samples" is scipy's sign-flip test for paired data.
        p_value = float(stats.permutation_test((diff,), np.mean, permutation_type="samples", n_resamples=resamples,
                                               vectorized=True, batch=RESAMPLE_BATCH, alternative="two-sided",
                                               random_state=np.random.default_rng(seed)).pvalue)
    return MetricComparison(metric=metric, a=mean_a, b=mean_b, difference=mean_b - mean_a, ci_low=low, ci_high=high,
                            p_value=p_value, b_better_users=int((diff > 0).sum()), a_better_users=int((diff < 0).sum()))


def comparison_table(result: dict) -> str:
    """The comparison as a Markdown table, A and B named above it (with each run's mean when pooled)."""
    pct = round(result["confidence"] * 100)
    with_runs = pooled(result)
    lines = [_side_line("A", result["a"]), _side_line("B", result["b"]),
             f"{result['dataset'] or '?'} {result['split'] or '?'}, {result['users']} users in both; "
             f"{pct} % bootstrap interval and sign-flip p-value from {result['resamples']} resamples, seed {result['seed']}",
             "",
             f"| metric | A | B | B − A | {pct} % interval | relative | p | users B better / A better |"
             + runs_interval_header(result),
             "|---|---|---|---|---|---|---|---|" + ("---|" if with_runs else "")]
    for m in result["metrics"]:
        p = format_p_value(m["p_value"], result["resamples"])
        relative = f"{m['relative']:+.1%}" if m["relative"] is not None else "—"
        lines.append(f"| {m['metric']} | {_mean_cell(m['a'], m.get('a_runs'))} | {_mean_cell(m['b'], m.get('b_runs'))} | "
                     f"{m['difference']:+.4f} | [{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] | {relative} | {p} | "
                     f"{m['b_better_users']} / {m['a_better_users']} |" + runs_interval_cell(m))
    if with_runs:
        lines += ["", "The last interval resamples each side's runs as well as the users: a training run's own luck "
                  "widens it. With few runs a side it is a floor on that variance, not a measure of it."]
    return "\n".join(lines)


def pooled(result: dict) -> bool:
    """Whether a comparison pooled several runs on a side (and so has the runs-resampled interval)."""
    return any("runs_ci_low" in m for m in result["metrics"])


def runs_interval_header(result: dict) -> str:
    # The extra last column of a pooled comparison's tables (nothing for one run a side).
    return f" {round(result['confidence'] * 100)} % interval, runs resampled too |" if pooled(result) else ""


def runs_interval_cell(row: dict) -> str:
    return f" [{row['runs_ci_low']:+.4f}, {row['runs_ci_high']:+.4f}] |" if "runs_ci_low" in row else ""


def format_p_value(p_value: float, resamples: int) -> str:
    # A permutation p-value cannot go below 2/(resamples + 1) (two-sided): at that floor it is a bound.
    floor = 2 / (resamples + 1)
    return f"≤ {floor:.2g}" if p_value <= floor * (1 + 1e-9) else f"{p_value:.3g}"


def _side_line(label: str, side: dict) -> str:
    if side.get("runs", 1) == 1:
        return f"{label}: {side['name']} ({side['source']})"
    return f"{label}: {side['name']}, mean of {side['runs']} runs ({'; '.join(side['sources'])})"


def _mean_cell(mean: float, runs: Sequence[float] | None) -> str:
    if not runs or len(runs) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ({', '.join(f'{r:.4f}' for r in runs)})"
