"""Metrics on hand-computed cases and the harness's files."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.data.split import eval_cases, train_sequences
from eager.eval import (
    evaluate_rankings,
    metrics_from_ranks,
    rankings_from_scores,
    read_rankings,
    target_rank,
)


def test_hand_computed_metrics():
    # Ranks 1, 3, 7, miss: R@5 = 2/4, NDCG@5 = (1 + 1/log2(4)) / 4 = 0.375, R@10 = 3/4.
    m = metrics_from_ranks([1, 3, 7, None], ks=(5, 10))
    assert m["recall@5"] == 0.5
    assert m["ndcg@5"] == pytest.approx((1 + 0.5) / 4)
    assert m["recall@10"] == 0.75
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / 3) / 4)
    assert target_rank(["a", "b", "c"], "c") == 3 and target_rank(["a"], "z") is None


@given(st.lists(st.one_of(st.none(), st.integers(1, 30)), min_size=1, max_size=50))
def test_metric_bounds_and_monotonicity(ranks):
    m = metrics_from_ranks(ranks, ks=(5, 10, 20))
    assert 0 <= m["ndcg@5"] <= m["recall@5"] <= m["recall@10"] <= m["recall@20"] <= 1
    assert m["ndcg@5"] <= m["ndcg@10"] <= m["ndcg@20"]


def test_split_is_leave_one_out_with_history_cap(cyclic_data):
    seq = np.arange(30)
    cyclic_data.sequences[0] = seq
    assert train_sequences(cyclic_data)[0].tolist() == list(range(28))
    valid, test = eval_cases(cyclic_data, "valid")[0], eval_cases(cyclic_data, "test")[0]
    assert valid.target == 28 and valid.history.tolist() == list(range(8, 28))
    assert test.target == 29 and test.history.tolist() == list(range(9, 29))
    assert len(eval_cases(cyclic_data, "test", max_history=3)[0].history) == 3


@given(st.lists(st.integers(3, 40), min_size=1, max_size=10), st.integers(1, 25))
@settings(max_examples=40, deadline=None)
def test_split_never_leaks_the_target(lengths, max_history):
    from tests.conftest import make_cyclic_data

    data = make_cyclic_data(num_users=len(lengths))
    data.sequences = [np.arange(n) for n in lengths]
    for split, offset in (("valid", 2), ("test", 1)):
        for case in eval_cases(data, split, max_history):
            seq = data.sequences[case.user]
            assert case.target == seq[len(seq) - offset]
            assert len(case.history) == min(max_history, len(seq) - offset)
            assert case.history.tolist() == seq[len(seq) - offset - len(case.history): len(seq) - offset].tolist()


def test_harness_writes_predictions_and_metrics(cyclic_data, tmp_path):
    cases = eval_cases(cyclic_data, "test")
    keys = cyclic_data.item_keys
    rankings = {}
    for n, case in enumerate(cases):
        user = cyclic_data.user_keys[case.user]
        if n == 0:
            rankings[user] = [keys[case.target]]  # rank 1
        elif n == 1:
            rankings[user] = ["not-an-item", keys[case.target], keys[case.target]]  # invalid + dup
        elif n == 2:
            continue  # missing user
        else:
            rankings[user] = [keys[(case.target + 1) % len(keys)]]  # miss
    report = evaluate_rankings(cyclic_data, "test", rankings, model="hand", config={"x": 1}, out_dir=tmp_path, ks=(5,))
    n = len(cases)
    assert report["recall@5"] == pytest.approx(2 / n)
    assert report["ndcg@5"] == pytest.approx((1 + 1) / n)  # invalid entry dropped, so rank 1 twice
    assert report["missing_users"] == 1
    returned = 1 + 3 + (n - 3)
    assert report["invalid_rate"] == pytest.approx(2 / returned)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["dataset"] == "cyclic" and saved["split"] == "test" and saved["k"] == [5] and saved["config"] == {"x": 1}
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n and rows[0]["ranked"] == [rows[0]["target"]]
    # The predictions file alone reproduces the metrics.
    recomputed = metrics_from_ranks([target_rank(r["ranked"], r["target"]) for r in rows], (5,))
    assert recomputed["recall@5"] == report["recall@5"]


def test_rankings_from_scores_and_cli(cyclic_data, tmp_path, capsys):
    cases = eval_cases(cyclic_data, "test")
    scores = np.zeros((len(cases), cyclic_data.num_items))
    for row, case in enumerate(cases):
        scores[row, case.target] = 2.0
        scores[row, (case.target + 1) % cyclic_data.num_items] = 1.0
    rankings = rankings_from_scores(cyclic_data, [c.user for c in cases], scores, k=10)
    path = tmp_path / "rank.jsonl"
    path.write_text("".join(json.dumps({"user": u, "ranked": r}) + "\n" for u, r in rankings.items()))
    assert read_rankings(path) == rankings
    report = evaluate_rankings(cyclic_data, "test", read_rankings(path), model="m")
    assert report["recall@5"] == 1.0 and report["ndcg@10"] == 1.0
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="rank.jsonl:1"):
        read_rankings(path)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=12, unique=True), min_size=1, max_size=20),
       st.integers(1, 10))
def test_ranking_agreement_counts_shared_top_k_items(lists, k):
    from eager.eval.metrics import ranking_agreement

    same = ranking_agreement(lists, lists, k)
    assert same["same_top1"] == 1 and same["overlap@10" if k == 10 else f"overlap@{k}"] == pytest.approx(
        sum(min(len(x), k) for x in lists) / (k * len(lists)))
    shifted = [[i + 100 for i in x] for x in lists]  # no item in common
    assert ranking_agreement(lists, shifted, k) == {f"overlap@{k}": 0, "same_top1": 0, "users": len(lists)}
    reversed_ = [x[::-1] for x in lists]
    assert ranking_agreement(lists, reversed_, k) == ranking_agreement(reversed_, lists, k)  # symmetric
    with pytest.raises(ValueError):
        ranking_agreement(lists, lists[:-1] if len(lists) > 1 else [], k)


def test_coverage_and_popularity_of_the_lists(cyclic_data):
    from eager.data.split import train_item_counts

    counts, keys = train_item_counts(cyclic_data), cyclic_data.item_keys
    cases = eval_cases(cyclic_data, "test")
    users = [cyclic_data.user_keys[c.user] for c in cases]
    popular = [keys[i] for i in np.argsort(-counts, kind="stable")[:10]]
    same = evaluate_rankings(cyclic_data, "test", {u: popular for u in users}, model="pop", ks=(5, 10))
    assert same["coverage@5"] == 5 / cyclic_data.num_items and same["coverage@10"] == 10 / cyclic_data.num_items
    assert same["median_popularity@10"] == np.median(np.sort(counts)[::-1][:10])
    # Each user's own next item: as many distinct items as the targets, at the targets' popularity.
    own = evaluate_rankings(cyclic_data, "test", {u: [keys[c.target]] for u, c in zip(users, cases)}, model="own", ks=(5,))
    assert own["coverage@5"] == len({c.target for c in cases}) / cyclic_data.num_items
    assert own["median_popularity@5"] == np.median(counts[[c.target for c in cases]])
    empty = evaluate_rankings(cyclic_data, "test", {}, model="none", ks=(5,))
    assert empty["coverage@5"] == 0 and np.isnan(empty["median_popularity@5"])


def test_history_items_count_repeats_and_can_be_dropped(cyclic_data, tmp_path, capsys):
    """Repeats of a user's earlier items are counted over its whole history, and only dropped on request."""
    from eager.cli import main

    keys = cyclic_data.item_keys
    cases = eval_cases(cyclic_data, "test", max_history=100)
    assert min(len(c.history) for c in cases) > 3  # the first earlier item lies outside a 3-item prompt
    lists = {cyclic_data.user_keys[c.user]: [keys[c.history[0]], keys[c.history[-1]], keys[c.target]] for c in cases}
    kept = evaluate_rankings(cyclic_data, "test", lists, model="m", ks=(1, 5), max_history=3, out_dir=tmp_path / "kept")
    assert kept["history_items@1"] == 1 and kept["history_items@5"] == 2 and "exclude_history" not in kept
    assert kept["recall@1"] == 0 and kept["recall@5"] == 1 and kept["ndcg@5"] == pytest.approx(1 / np.log2(4))
    dropped = evaluate_rankings(cyclic_data, "test", lists, model="m", ks=(1, 5), max_history=3, exclude_history=True)
    assert dropped["recall@1"] == 1 and dropped["history_items@5"] == 0 and dropped["exclude_history"] is True
    fresh = {u: ranked[2:] for u, ranked in lists.items()}  # nothing earlier: dropping changes nothing
    assert evaluate_rankings(cyclic_data, "test", fresh, model="m", ks=(5,), exclude_history=True)["ndcg@5"] == 1
    # The command line re-scores a saved evaluation the same way.
    cyclic_data.save(tmp_path / "data" / "ml-100k")
    common = ["eval", "--dataset", "ml-100k", "--data-root", str(tmp_path / "data"), "--split", "test",
              "--rankings", str(tmp_path / "kept" / "predictions.jsonl"), "--json"]
    assert main(common) == 0
    assert json.loads(capsys.readouterr().out)["recall@5"] == 1
    assert main([*common, "--exclude-history"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recall@5"] == out["ndcg@5"] == 1 and out["history_items@10"] == 0 and out["exclude_history"] is True
