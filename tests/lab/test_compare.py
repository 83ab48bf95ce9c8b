"""Paired comparison of two evaluations: what it computes, and what it refuses."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.cli import main
from eager.data.split import eval_cases
from eager.eval import evaluate_rankings
from eager.eval.metrics import user_metric
from eager.eval.records import Evaluation, read_evaluation
from eager.lab.compare import (
    RESAMPLE_BATCH,
    compare_evaluations,
    runs_and_users_interval,
)

RESAMPLES = 499


def _write(data, tmp_path, name: str, rank_of: dict, split: str = "test"):
    """An evaluation written by the harness: user i's target at rank ``rank_of(i)`` (None: missed)."""
    keys = data.item_keys
    rankings = {}
    for n, case in enumerate(eval_cases(data, split)):
        target, rank = case.target, rank_of(n)
        others = [keys[(target + j) % len(keys)] for j in range(1, 11)]
        ranked = others[:10] if rank is None else others[: rank - 1] + [keys[target]] + others[rank - 1: 9]
        rankings[data.user_keys[case.user]] = ranked
    out = tmp_path / name
    report = evaluate_rankings(data, split, rankings, model=name, out_dir=out, ks=(5, 10))
    return out, report


def _evaluation(ranks_a, ranks_b):
    users = [f"u{i}" for i in range(len(ranks_a))]
    targets = {u: "t" for u in users}
    return (Evaluation("a", targets, dict(zip(users, ranks_a))), Evaluation("b", targets, dict(zip(users, ranks_b))))


def test_the_means_repeat_the_harness_and_a_better_system_is_found(cyclic_data, tmp_path):
    a_dir, a_report = _write(cyclic_data, tmp_path, "weak", lambda n: 3 if n % 4 == 0 else None)
    b_dir, b_report = _write(cyclic_data, tmp_path, "strong", lambda n: 1 if n % 4 != 3 else None)
    result = compare_evaluations(read_evaluation(a_dir), read_evaluation(b_dir), resamples=RESAMPLES)
    assert result["users"] == len(eval_cases(cyclic_data, "test"))
    assert (result["dataset"], result["split"]) == ("cyclic", "test")
    assert (result["a"]["name"], result["b"]["name"]) == ("weak", "strong")
    for row in result["metrics"]:
        assert row["a"] == a_report[row["metric"]] and row["b"] == b_report[row["metric"]]  # exactly
        assert row["difference"] > 0 and row["ci_low"] > 0 and row["p_value"] < 0.01
    r5 = next(r for r in result["metrics"] if r["metric"] == "recall@5")
    # Users 4k: A hits at 3, B at 1 (same recall); 4k+1, 4k+2: only B hits; 4k+3: both miss.
    n = result["users"]
    assert r5["b_better_users"] == sum(1 for i in range(n) if i % 4 in (1, 2)) and r5["a_better_users"] == 0
    n5 = next(r for r in result["metrics"] if r["metric"] == "ndcg@5")
    assert n5["b_better_users"] == sum(1 for i in range(n) if i % 4 != 3)  # rank 1 beats rank 3 too


def test_a_system_against_itself_differs_by_nothing(cyclic_data, tmp_path):
    a_dir, _ = _write(cyclic_data, tmp_path, "same", lambda n: (n % 12) + 1 if n % 3 else None)
    result = compare_evaluations(read_evaluation(a_dir), read_evaluation(a_dir), resamples=RESAMPLES)
    for row in result["metrics"]:
        assert row["difference"] == 0 and (row["ci_low"], row["ci_high"]) == (0, 0) and row["p_value"] == 1
        assert row["b_better_users"] == row["a_better_users"] == 0


@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 15)), st.one_of(st.none(), st.integers(1, 15))),
                min_size=2, max_size=60), st.sampled_from(["recall@5", "ndcg@10"]))
@settings(max_examples=25, deadline=None)
def test_swapping_a_and_b_mirrors_the_comparison(pairs, metric):
    ranks_a, ranks_b = [p[0] for p in pairs], [p[1] for p in pairs]
    forward = compare_evaluations(*_evaluation(ranks_a, ranks_b), metrics=[metric], resamples=RESAMPLES)["metrics"][0]
    backward = compare_evaluations(*_evaluation(ranks_b, ranks_a), metrics=[metric], resamples=RESAMPLES)["metrics"][0]
    assert backward["difference"] == pytest.approx(-forward["difference"], abs=1e-12)
    assert backward["ci_low"] == pytest.approx(-forward["ci_high"], abs=1e-9)
    assert backward["p_value"] == pytest.approx(forward["p_value"])
    assert (backward["b_better_users"], backward["a_better_users"]) == (forward["a_better_users"], forward["b_better_users"])
    assert forward["ci_low"] <= forward["difference"] <= forward["ci_high"] or forward["ci_low"] == forward["ci_high"]
    va, vb = np.array(user_metric(ranks_a, metric)), np.array(user_metric(ranks_b, metric))
    assert forward["b_better_users"] == int((vb > va).sum()) and 0 < forward["p_value"] <= 1


def test_noise_is_not_called_a_difference():
    rng = np.random.default_rng(3)
    ranks_a = [int(r) if r <= 10 else None for r in rng.integers(1, 40, size=2000)]
    ranks_b = list(ranks_a)
    hits = [i for i, r in enumerate(ranks_a) if r is not None]
    misses = [i for i, r in enumerate(ranks_a) if r is None]
    for i in rng.choice(hits, size=10, replace=False):  # a handful of users change, both ways: 10 lost, 13 won
        ranks_b[i] = None
    for i in rng.choice(misses, size=13, replace=False):
        ranks_b[i] = 1
    row = compare_evaluations(*_evaluation(ranks_a, ranks_b), metrics=["recall@10"], resamples=RESAMPLES)["metrics"][0]
    assert row["difference"] == pytest.approx(3 / 2000) and (row["b_better_users"], row["a_better_users"]) == (13, 10)
    assert row["ci_low"] < 0 < row["ci_high"] and row["p_value"] > 0.05


def test_incomparable_evaluations_are_refused_with_the_reason(cyclic_data, tmp_path):
    test_dir, _ = _write(cyclic_data, tmp_path, "test", lambda n: 1)
    valid_dir, _ = _write(cyclic_data, tmp_path, "valid", lambda n: 1, split="valid")
    with pytest.raises(ValueError, match="not the same split"):
        compare_evaluations(read_evaluation(test_dir), read_evaluation(valid_dir))
    # Without metrics.json the split is unknown, but the targets still differ.
    (valid_dir / "metrics.json").unlink()
    with pytest.raises(ValueError, match="different splits or datasets"):
        compare_evaluations(read_evaluation(test_dir), read_evaluation(valid_dir))
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join((test_dir / "predictions.jsonl").read_text().splitlines(keepends=True)[:5]))
    with pytest.raises(ValueError, match="not the same users.*--limit"):
        compare_evaluations(read_evaluation(test_dir), read_evaluation(partial))
    with pytest.raises(FileNotFoundError, match="eager eval"):
        read_evaluation(tmp_path / "nowhere")
    partial.write_text('{"user": "u1", "ranked": []}\n')
    with pytest.raises(ValueError, match="partial.jsonl:1.*'target'"):
        read_evaluation(partial)
    with pytest.raises(ValueError, match="recall@20 needs 20 ranked items.*ranks at most 10"):
        compare_evaluations(read_evaluation(test_dir), read_evaluation(test_dir), metrics=["recall@20"])
    with pytest.raises(ValueError, match="unknown metric 'hits@3'"):
        compare_evaluations(read_evaluation(test_dir), read_evaluation(test_dir), metrics=["hits@3"])


def test_compare_command(cyclic_data, tmp_path, capsys):
    a_dir, _ = _write(cyclic_data, tmp_path, "weak", lambda n: None if n % 2 else 4)
    b_dir, _ = _write(cyclic_data, tmp_path, "strong", lambda n: 1)
    out = tmp_path / "cmp" / "result.json"
    assert main(["lab", "compare", str(a_dir), str(b_dir), "--names", "old,new", "--resamples", str(RESAMPLES),
                 "--metrics", "recall@5,ndcg@10", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert [m["metric"] for m in printed["metrics"]] == ["recall@5", "ndcg@10"]
    assert (printed["a"]["name"], printed["b"]["name"]) == ("old", "new")
    assert main(["lab", "compare", str(a_dir), str(b_dir), "--resamples", str(RESAMPLES)]) == 0
    table = capsys.readouterr().out
    assert "| recall@10 |" in table and "A: weak" in table and "≤ 0.004" in table  # p at its floor, 2/500
    assert main(["lab", "compare", str(a_dir), str(tmp_path / "missing")]) == 2
    assert "no predictions to compare" in capsys.readouterr().err


@given(st.lists(st.tuples(*[st.one_of(st.none(), st.integers(1, 12))] * 4), min_size=2, max_size=40),
       st.sampled_from(["recall@10", "ndcg@5"]))
@settings(max_examples=25, deadline=None)
def test_runs_of_one_system_are_averaged_per_user_before_pairing(rows, metric):
    a1, b1 = _evaluation([r[0] for r in rows], [r[1] for r in rows])
    a2, b2 = _evaluation([r[2] for r in rows], [r[3] for r in rows])
    pooled = compare_evaluations([a1, a2], [b1, b2], metrics=[metric], resamples=RESAMPLES)
    row = pooled["metrics"][0]
    singles = [compare_evaluations(a, b, metrics=[metric], resamples=RESAMPLES)["metrics"][0] for a, b in ((a1, b1), (a2, b2))]
    assert row["a_runs"] == [s["a"] for s in singles] and row["b_runs"] == [s["b"] for s in singles]
    assert row["difference"] == pytest.approx(np.mean([s["difference"] for s in singles]), abs=1e-12)
    per_user = {name: np.mean([user_metric([r[i] for r in rows], metric) for i in idx], axis=0)
                for name, idx in (("a", (0, 2)), ("b", (1, 3)))}
    assert row["b_better_users"] == int((per_user["b"] > per_user["a"]).sum())
    assert row["a_better_users"] == int((per_user["a"] > per_user["b"]).sum())
    assert (pooled["a"]["runs"], pooled["b"]["runs"]) == (2, 2)
    # A side of one run is the plain comparison, field for field.
    assert compare_evaluations([a1], [b1], metrics=[metric], resamples=RESAMPLES) == \
        compare_evaluations(a1, b1, metrics=[metric], resamples=RESAMPLES)


def test_runs_pooled_on_one_side_must_cover_the_same_users(cyclic_data, tmp_path, capsys):
    first, first_report = _write(cyclic_data, tmp_path, "seed1", lambda n: 2 if n % 3 == 0 else None)
    second, second_report = _write(cyclic_data, tmp_path, "seed2", lambda n: 1 if n % 3 == 1 else None)
    other, _ = _write(cyclic_data, tmp_path, "other", lambda n: 1 if n % 2 else None)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join((second / "predictions.jsonl").read_text().splitlines(keepends=True)[:5]))
    with pytest.raises(ValueError, match="not the same users"):
        compare_evaluations([read_evaluation(first), read_evaluation(partial)], read_evaluation(other))
    with pytest.raises(ValueError, match="side A has no evaluations"):
        compare_evaluations([], read_evaluation(other))
    assert main(["lab", "compare", f"{first},{second}", str(other), "--names", "pooled,other",
                 "--resamples", str(RESAMPLES), "--metrics", "recall@10"]) == 0
    table = capsys.readouterr().out
    assert "A: pooled, mean of 2 runs" in table and "B: other (" in table
    assert "interval, runs resampled too |" in table and "a floor on that variance" in table
    mean = (first_report["recall@10"] + second_report["recall@10"]) / 2
    assert f"| recall@10 | {mean:.4f} ({first_report['recall@10']:.4f}, {second_report['recall@10']:.4f}) |" in table


def test_the_runs_interval_repeats_a_plain_loop_over_the_same_draws():
    rng = np.random.default_rng(3)
    per_run_a, per_run_b = rng.random((2, 37)), rng.random((3, 37))
    low, high = runs_and_users_interval(per_run_a, per_run_b, 0.9, 1500, seed=5)
    # The same draws, taken one resample at a time by plain indexing.
    draws = np.random.default_rng(5)
    differences = []
    for start in range(0, 1500, RESAMPLE_BATCH):
        batch = min(RESAMPLE_BATCH, 1500 - start)
        users = draws.integers(0, 37, size=(batch, 37))
        picks_a = draws.integers(0, 2, size=(batch, 2))
        picks_b = draws.integers(0, 3, size=(batch, 3))
        for r in range(batch):
            side_a = np.mean([per_run_a[run, users[r]].mean() for run in picks_a[r]])
            side_b = np.mean([per_run_b[run, users[r]].mean() for run in picks_b[r]])
            differences.append(side_b - side_a)
    assert (low, high) == pytest.approx(tuple(np.percentile(differences, [5, 95])), abs=1e-12)


def test_runs_that_disagree_widen_the_interval_that_resamples_them():
    # 400 users; A's two seeds find 50 % and 0 % of them, B's two seeds 30 % each: per user B − A is
    # tight around +0.05, but which seed A draws swings the difference from −0.20 to +0.30.
    users = [f"u{i}" for i in range(400)]
    targets = {u: "t" for u in users}

    def run(name, hit):
        return Evaluation(name, targets, {u: 1 if hit(i) else None for i, u in enumerate(users)})

    a = [run("a1", lambda i: i % 2 == 0), run("a2", lambda i: False)]
    b = [run("b1", lambda i: i % 10 < 3), run("b2", lambda i: i % 10 >= 7)]
    row = compare_evaluations(a, b, metrics=["recall@10"], resamples=RESAMPLES)["metrics"][0]
    assert row["difference"] == pytest.approx(0.05) and row["ci_low"] > 0  # users alone: B is better
    assert row["runs_ci_low"] < -0.1 and row["runs_ci_high"] > 0.2  # seeds too: it could be either
    # Identical runs add nothing to resample: both intervals then measure the users alone.
    same = compare_evaluations([a[0], a[0]], [b[0], b[0]], metrics=["recall@10"], resamples=1999)["metrics"][0]
    assert same["runs_ci_low"] == pytest.approx(same["ci_low"], abs=0.02)
    assert same["runs_ci_high"] == pytest.approx(same["ci_high"], abs=0.02)
    single = compare_evaluations(a[0], b[0], metrics=["recall@10"], resamples=RESAMPLES)["metrics"][0]
    assert "runs_ci_low" not in single and "a_runs" not in single


def test_a_rank_file_holds_no_keys_and_reads_back_as_its_predictions(cyclic_data, tmp_path):
    from eager.eval.rank_file import RANKS_FILE, read_rank_file
    from tests.conftest import make_cyclic_data

    folder, _ = _write(cyclic_data, tmp_path, "model", lambda n: (n % 13) + 1 if n % 4 else None)
    text = (folder / RANKS_FILE).read_text()
    assert not any(key in text for key in cyclic_data.user_keys + cyclic_data.item_keys)  # the split stays private
    from_predictions = read_evaluation(folder)
    from_ranks = read_rank_file(folder / RANKS_FILE, cyclic_data)
    assert from_ranks.targets == from_predictions.targets and list(from_ranks.targets) == list(from_predictions.targets)
    assert from_ranks.ranks == from_predictions.ranks and None in from_ranks.ranks.values()
    assert (from_ranks.dataset, from_ranks.split, from_ranks.name) == ("cyclic", "test", "model")
    assert from_ranks.depth == from_predictions.depth > 0
    assert compare_evaluations(from_ranks, from_predictions, resamples=RESAMPLES)["metrics"][0]["difference"] == 0

    other = make_cyclic_data(seed=1)  # same names and sizes, other sequences: other held-out items
    with pytest.raises(ValueError, match="other \\(user, target\\) pairs"):
        read_rank_file(folder / RANKS_FILE, other)
    renamed = make_cyclic_data()
    renamed.name = "elsewhere"
    with pytest.raises(ValueError, match="holds ranks on 'cyclic', not 'elsewhere'"):
        read_rank_file(folder / RANKS_FILE, renamed)
    record = json.loads(text)
    record["ranks"], record["users"] = record["ranks"][:5], 5
    (tmp_path / "short.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="covers a whole split"):
        read_rank_file(tmp_path / "short.json", cyclic_data)
    with pytest.raises(ValueError, match="not a rank file"):
        read_rank_file(folder / "metrics.json", cyclic_data)


def test_rank_files_pair_through_the_command_as_the_predictions_do(shared_data, tmp_path, capsys):
    from eager.baselines.popularity import run_popularity
    from eager.data import load_dataset

    data = load_dataset("scientific", shared_data)
    run_popularity(data, tmp_path / "pop")
    test_dir = tmp_path / "pop" / "test"
    written = (test_dir / "ranks.json").read_text()
    (test_dir / "ranks.json").unlink()
    assert main(["lab", "ranks", str(test_dir)]) == 0  # the same file, from the predictions
    assert json.loads(capsys.readouterr().out)["users"] == len(eval_cases(data, "test"))
    assert (test_dir / "ranks.json").read_text() == written
    shifted = tmp_path / "shifted.jsonl"  # another system: every list one place lower
    shifted.write_text("".join(json.dumps({**row, "ranked": ["none"] + row["ranked"][:-1]}) + "\n" for row in
                               map(json.loads, (test_dir / "predictions.jsonl").read_text().splitlines())))
    (tmp_path / "metrics.json").write_text((test_dir / "metrics.json").read_text())
    assert main(["lab", "ranks", str(shifted), "--out", str(tmp_path / "kept" / "shifted.json")]) == 0
    capsys.readouterr()
    common = ["--resamples", str(RESAMPLES), "--data-root", str(shared_data), "--json", "--names", "a,b"]
    assert main(["lab", "compare", str(test_dir), str(shifted), *common]) == 0
    from_predictions = json.loads(capsys.readouterr().out)
    assert main(["lab", "compare", str(test_dir / "ranks.json"), str(tmp_path / "kept" / "shifted.json"), *common]) == 0
    from_ranks = json.loads(capsys.readouterr().out)
    for result in (from_predictions, from_ranks):
        for side in ("a", "b"):
            result[side].pop("source", None)
    assert from_ranks == from_predictions and from_ranks["metrics"][1]["difference"] < 0
    # A folder holding ranks.json and no predictions reads as its rank file.
    (tmp_path / "kept" / "shifted.json").rename(tmp_path / "kept" / "ranks.json")
    assert main(["lab", "compare", str(tmp_path / "kept"), str(tmp_path / "kept"), *common]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == from_ranks["users"]
