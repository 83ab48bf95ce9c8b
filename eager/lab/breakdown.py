"""Where a difference between two systems lives: the paired comparison within groups of users.

A paired test over all users says *whether* B beats A; a researcher's next question is *for whom*.
Here the users are grouped, into groups of about equal size, by how popular their held-out item is
in the training split (the behaviour signal is strongest for popular items and weakest in the long
tail) or by how long their history is, and `compare_evaluations` runs on each group alone. Each
group's interval is over its own users, so it is wider than the whole split's; a difference that
is clear overall may be clear in no single group.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from eager.data.dataset import InteractionData
from eager.data.split import eval_cases, train_item_counts
from eager.eval.records import Evaluation
from eager.lab.compare import (
    DEFAULT_METRICS,
    Runs,
    compare_evaluations,
    format_p_value,
    pooled,
    runs_interval_cell,
    runs_interval_header,
)


def target_popularity_groups(data: InteractionData, targets: dict[str, str],
                             groups: int = 3) -> tuple[dict[str, str], list[str]]:
    """Each user's group by the training-split count of its held-out item (see ``quantile_groups``)."""
    index = data.key_to_index()
    unknown = [t for t in targets.values() if t not in index]
    if unknown:
        raise ValueError(f"held-out item {unknown[0]!r} is not in {data.name}'s catalogue: "
                         "these predictions are of another dataset")
    counts = train_item_counts(data)
    users = list(targets)
    return quantile_groups(users, [int(counts[index[targets[u]]]) for u in users], groups, "train count")


def history_length_groups(data: InteractionData, split: str, users: Sequence[str],
                          groups: int = 3) -> tuple[dict[str, str], list[str]]:
    """Each user's group by how many items precede its held-out one (before any history cap)."""
    row = {key: u for u, key in enumerate(data.user_keys)}
    unknown = [u for u in users if u not in row]
    if unknown:
        raise ValueError(f"user {unknown[0]!r} is not in {data.name}: these predictions are of another dataset")
    # The split's own cases, uncapped, so "history" means what the split rule says precedes the target.
    length = {c.user: len(c.history) for c in eval_cases(data, split, max_history=None)}
    return quantile_groups(users, [length[row[u]] for u in users], groups, "history length")


# What each `--by` groups users by, as the command's table heading says it.
GROUPINGS = {
    "target-popularity": "how often their held-out item occurs in the train split",
    "history-length": "how many items precede their held-out one",
}


def group_users(data: InteractionData, by: str, split: str, targets: dict[str, str],
                groups: int = 3) -> tuple[dict[str, str], list[str]]:
    """The user → group map and the group names in order, for one of ``GROUPINGS``."""
    if by == "target-popularity":
        return target_popularity_groups(data, targets, groups)
    if by == "history-length":
        return history_length_groups(data, split, list(targets), groups)
    raise ValueError(f"cannot group users by {by!r}; choose one of: {', '.join(GROUPINGS)}")


def quantile_groups(users: Sequence[str], values: Sequence[int], groups: int,
                    label: str) -> tuple[dict[str, str], list[str]]:
    """Users cut into ``groups`` by their values: the user → group map and the group names from the
    lowest values up. Walking the distinct values upwards, a group closes where the running count of
    users first reaches the next k/groups share; all users of one value stay in one group, so sizes
    are only about equal (and a value held by many can leave fewer groups than asked). A group is
    named by the range it holds ("train count 0–3").
    """
    if groups < 2:
        raise ValueError(f"groups must be at least 2 to break a comparison down, not {groups}")
    values = np.asarray(values)
    distinct, running = np.unique(values, return_counts=True)
    running = np.cumsum(running)
    last_of_group, share = [], 1
    for value, count in zip(distinct, running):
        if share < groups and count >= share * len(values) / groups:
            last_of_group.append(value)
            while share < groups and count >= share * len(values) / groups:
                share += 1
    slot = np.searchsorted(last_of_group, values, side="left")
    names = {}
    for s in np.unique(slot):  # ascending, so the names come out lowest first
        held = values[slot == s]
        names[s] = f"{label} {held.min()}–{held.max()}"
    return {u: names[s] for u, s in zip(users, slot)}, list(names.values())


def compare_by_group(
    a: Runs,
    b: Runs,
    group_of: dict[str, str],
    order: Sequence[str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> dict:
    """``compare_evaluations`` on all users, then on each group's users alone, groups in ``order``
    (default: as first met in A's users)."""
    overall = compare_evaluations(a, b, metrics, confidence, resamples, seed)  # checks both sides first
    runs_a, runs_b = _runs(a), _runs(b)
    missing = runs_a[0].targets.keys() - group_of.keys()
    if missing:
        raise ValueError(f"{len(missing)} users have no group (e.g. {sorted(missing)[:1]}): "
                         "group every user the evaluations hold")
    present = list(dict.fromkeys(group_of[u] for u in runs_a[0].targets))
    names = present if order is None else [g for g in order if g in present]
    by_group = []
    for name in names:
        members = {u for u in runs_a[0].targets if group_of[u] == name}
        part = compare_evaluations([_restrict(e, members) for e in runs_a], [_restrict(e, members) for e in runs_b],
                                   metrics, confidence, resamples, seed)
        by_group.append({"group": name, "users": part["users"], "metrics": part["metrics"]})
    return overall | {"groups": by_group}


def _runs(side: Runs) -> list[Evaluation]:
    return [side] if isinstance(side, Evaluation) else list(side)


def _restrict(evaluation: Evaluation, users: set[str]) -> Evaluation:
    return replace(evaluation, targets={u: t for u, t in evaluation.targets.items() if u in users},
                   ranks={u: r for u, r in evaluation.ranks.items() if u in users})


def grouped_table(result: dict) -> str:
    """One row per group and metric: each side's mean, B − A with its interval and p-value."""
    pct = round(result["confidence"] * 100)
    lines = [f"| group | users | metric | A | B | B − A | {pct} % interval | relative | p | users B better / A better |"
             + runs_interval_header(result),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if pooled(result) else "")]
    for group in result["groups"]:
        for m in group["metrics"]:
            relative = f"{m['relative']:+.1%}" if m["relative"] is not None else "—"
            lines.append(f"| {group['group']} | {group['users']} | {m['metric']} | {m['a']:.4f} | {m['b']:.4f} | "
                         f"{m['difference']:+.4f} | [{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] | {relative} | "
                         f"{format_p_value(m['p_value'], result['resamples'])} | "
                         f"{m['b_better_users']} / {m['a_better_users']} |" + runs_interval_cell(m))
    return "\n".join(lines)
