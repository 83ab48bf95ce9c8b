"""The comparison within groups of users (by their held-out item's popularity): what it computes."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.cli import main
from eager.data.split import eval_cases, train_sequences
from eager.eval.records import Evaluation, read_evaluation
from eager.lab.breakdown import (
    compare_by_group,
    grouped_table,
    history_length_groups,
    quantile_groups,
    target_popularity_groups,
)
from eager.lab.compare import compare_evaluations
from tests.conftest import make_cyclic_data

RESAMPLES = 499


def _train_counts(data) -> np.ndarray:
    return np.bincount(np.concatenate(train_sequences(data)), minlength=data.num_items)


@given(st.integers(0, 10_000), st.integers(2, 5), st.integers(5, 40))
@settings(max_examples=30, deadline=None)
def test_groups_partition_the_users_by_ascending_target_popularity(seed, groups, num_items):
    data = make_cyclic_data(num_items=num_items, num_users=40, length=6, seed=seed)
    rng = np.random.default_rng(seed)
    # Skewed targets, so counts differ across users: any catalogue item, Zipf-like.
    weights = 1 / np.arange(1, num_items + 1)
    targets = {u: data.item_keys[int(rng.choice(num_items, p=weights / weights.sum()))] for u in data.user_keys}
    group_of, order = target_popularity_groups(data, targets, groups)
    assert set(group_of) == set(targets) and set(group_of.values()) == set(order) and 1 <= len(order) <= groups
    counts, index = _train_counts(data), data.key_to_index()
    spans = []
    for name in order:
        held = [counts[index[targets[u]]] for u in targets if group_of[u] == name]
        assert name == f"train count {min(held)}–{max(held)}"
        spans.append((min(held), max(held)))
    assert all(high < next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))  # disjoint, ascending


@given(st.integers(2, 200), st.integers(2, 6), st.integers(0, 10_000))
@settings(max_examples=50, deadline=None)
def test_distinct_values_make_every_group_asked_for_within_one_user_in_size(n, groups, seed):
    values = np.random.default_rng(seed).permutation(n) * 3  # all distinct
    users = [f"u{i}" for i in range(n)]
    group_of, order = quantile_groups(users, values, groups, "v")
    sizes = [sum(1 for u in users if group_of[u] == g) for g in order]
    assert len(order) == min(groups, n) and max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    with pytest.raises(ValueError, match="at least 2"):
        quantile_groups(users, values, 1, "v")


def test_a_gain_in_one_group_shows_there_and_nowhere_else():
    users = [f"u{i}" for i in range(300)]
    group_of = {u: ("rare", "mid", "popular")[i % 3] for i, u in enumerate(users)}
    targets = {u: "t" for u in users}
    a = Evaluation("a", targets, {u: (2 if i % 7 == 0 else None) for i, u in enumerate(users)})
    gained = {u for i, u in enumerate(users) if group_of[u] == "popular" and i % 7 != 0 and i % 2 == 0}
    b = Evaluation("b", targets, {u: (1 if u in gained else a.ranks[u]) for u in users})
    result = compare_by_group(a, b, group_of, ["rare", "mid", "popular"], ["recall@10"], resamples=RESAMPLES)
    overall = compare_evaluations(a, b, ["recall@10"], resamples=RESAMPLES)
    assert result["metrics"] == overall["metrics"] and result["users"] == 300
    assert [g["group"] for g in result["groups"]] == ["rare", "mid", "popular"]
    rows = {g["group"]: g["metrics"][0] for g in result["groups"]}
    assert all(g["users"] == 100 for g in result["groups"])
    for name in ("rare", "mid"):
        assert rows[name]["difference"] == 0 and rows[name]["p_value"] == 1.0
    assert rows["popular"]["difference"] == pytest.approx(len(gained) / 100)
    assert rows["popular"]["b_better_users"] == len(gained) and rows["popular"]["ci_low"] > 0
    with pytest.raises(ValueError, match="have no group"):
        compare_by_group(a, b, {u: "x" for u in users[:-1]}, metrics=["recall@10"], resamples=RESAMPLES)
    # Two runs a side: every group also gets the interval that resamples the runs, and the table shows it.
    runs = compare_by_group([a, a], [b, b], group_of, ["rare", "mid", "popular"], ["recall@10"], resamples=RESAMPLES)
    popular = runs["groups"][2]["metrics"][0]
    assert popular["runs_ci_low"] > 0 and popular["runs_ci_high"] >= popular["difference"]
    table = grouped_table(runs)
    assert table.splitlines()[0].endswith("interval, runs resampled too |")
    assert f"[{popular['runs_ci_low']:+.4f}, {popular['runs_ci_high']:+.4f}] |" in table.splitlines()[-1]
    assert "runs resampled" not in grouped_table(result)


def test_the_command_breaks_a_real_comparison_down(shared_data, tmp_path, capsys):
    from eager.baselines.popularity import run_popularity
    from eager.data import load_dataset

    data = load_dataset("scientific", shared_data)
    run_popularity(data, tmp_path / "pop")
    test_dir = tmp_path / "pop" / "test"
    out = tmp_path / "by.json"
    assert main(["lab", "compare", str(test_dir), str(test_dir), "--by", "target-popularity", "--groups", "4",
                 "--metrics", "recall@10", "--resamples", str(RESAMPLES), "--data-root", str(shared_data),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["by"] == "target-popularity" and len(result["groups"]) == 4
    assert sum(g["users"] for g in result["groups"]) == result["users"] == len(eval_cases(data, "test"))
    assert all(g["metrics"][0]["difference"] == 0 for g in result["groups"])  # a system against itself
    # Popularity recommends the most popular items, so it can only hit in the most popular group.
    recalls = [g["metrics"][0]["a"] for g in result["groups"]]
    assert recalls[0] == 0 and recalls[-1] == max(recalls) > 0
    assert "Within groups of users" in printed and result["groups"][-1]["group"] in printed
    bare = tmp_path / "bare.jsonl"
    bare.write_text((test_dir / "predictions.jsonl").read_text())
    assert main(["lab", "compare", str(bare), str(bare), "--by", "target-popularity", "--data-root", str(shared_data)]) == 2
    assert "neither side's metrics.json names" in capsys.readouterr().err
    assert read_evaluation(test_dir).dataset == "scientific"

    assert main(["lab", "compare", str(test_dir), str(test_dir), "--by", "history-length", "--metrics", "recall@10",
                 "--resamples", str(RESAMPLES), "--data-root", str(shared_data), "--json"]) == 0
    by_history = json.loads(capsys.readouterr().out)
    assert by_history["by"] == "history-length" and by_history["groups"][0]["group"].startswith("history length ")


def test_history_groups_count_the_items_before_the_held_out_one():
    data = make_cyclic_data(num_users=30, length=6)
    data.sequences = [seq[: 3 + u % 4] for u, seq in enumerate(data.sequences)]  # lengths 3..6
    users = data.user_keys
    for split, offset in (("test", 1), ("valid", 2)):
        group_of, order = history_length_groups(data, split, users, groups=4)
        assert order == [f"history length {n}–{n}" for n in range(3 - offset, 7 - offset)]
        assert all(group_of[u] == f"history length {n}–{n}" for u, n in
                   ((u, len(data.sequences[i]) - offset) for i, u in enumerate(users)))
    with pytest.raises(ValueError, match="not in cyclic"):
        history_length_groups(data, "test", ["nobody"])
    with pytest.raises(ValueError, match="split must be"):
        history_length_groups(data, "train", users)
