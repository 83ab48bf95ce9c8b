"""eager/lab/rescore_selection.py on the real Scientific data and the shipped checkpoint's recipe.

The expensive half (beam search with the real backbone) is replaced by ``--ranks``, the file the
script itself writes after searching; the user selection, the refusal of a trial validated on other
users and the paired comparison run for real.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECKPOINT = REPO / "checkpoints" / "scientific" / "wo_aat"


def _run(*args: str, data_root) -> subprocess.CompletedProcess:
    env = {**os.environ, "EAGER_DATA_ROOT": str(data_root)}
    return subprocess.run([sys.executable, str(REPO / "eager" / "lab" / "rescore_selection.py"), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.fixture
def selection_users(shared_data) -> list[str]:
    from eager.data import load_dataset
    from eager.train.validation import recorded_selection_recipe, selection_cases

    config = json.loads((CHECKPOINT / "config.json").read_text())
    data = load_dataset(config["dataset"], shared_data)
    recipe = recorded_selection_recipe(config)
    return [data.user_keys[c.user] for c in selection_cases(data, recipe)]


def test_pairs_a_trial_with_the_checkpoint_on_the_same_users(shared_data, selection_users, tmp_path):
    checkpoint_ranks = {u: (1 if i % 10 == 0 else None) for i, u in enumerate(selection_users)}  # 10 % hits at 1
    (tmp_path / "ranks.json").write_text(json.dumps(checkpoint_ranks))
    better = dict(checkpoint_ranks)
    gained = [u for u in selection_users if better[u] is None][:25]
    better.update({u: 2 for u in gained})  # the trial also finds 25 more targets, at rank 2
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "valid_ranks.json").write_text(json.dumps({"same": checkpoint_ranks, "better": better}))

    same = _run(str(CHECKPOINT), str(tmp_path / "search"), "same", "--ranks", str(tmp_path / "ranks.json"),
                data_root=shared_data)
    assert same.returncode == 0, same.stderr
    assert f"on {len(selection_users)} validation users: {{'recall@10': 0.1, 'ndcg@10': 0.1}}" in same.stdout
    assert "| recall@10 | 0.1000 | 0.1000 | +0.0000 |" in same.stdout

    out = tmp_path / "paired.json"
    more = _run(str(CHECKPOINT), str(tmp_path / "search"), "better", "--ranks", str(tmp_path / "ranks.json"),
                "--out", str(out), data_root=shared_data)
    assert more.returncode == 0, more.stderr
    result = json.loads(out.read_text())["comparison"]
    recall = next(m for m in result["metrics"] if m["metric"] == "recall@10")
    assert result["users"] == len(selection_users)
    assert recall["difference"] == pytest.approx(25 / len(selection_users))
    assert (recall["b_better_users"], recall["a_better_users"]) == (25, 0)
    assert recall["ci_low"] > 0 and recall["p_value"] < 0.01


def test_refuses_a_trial_validated_on_other_users(shared_data, selection_users, tmp_path):
    (tmp_path / "valid_ranks.json").write_text(json.dumps({"other": {u: None for u in selection_users[:-3]}}))
    run = _run(str(CHECKPOINT), str(tmp_path), "other", data_root=shared_data)
    assert run.returncode != 0
    assert "validated other users (3 of the checkpoint's 500 are missing)" in run.stderr
    missing = _run(str(CHECKPOINT), str(tmp_path), "nope", data_root=shared_data)
    assert missing.returncode != 0 and "no trial 'nope'" in missing.stderr and "['other']" in missing.stderr


def test_pools_second_seeds_of_both_sides(shared_data, selection_users, tmp_path):
    n = len(selection_users)
    seed1_a = {u: (1 if i % 10 == 0 else None) for i, u in enumerate(selection_users)}
    (tmp_path / "ranks.json").write_text(json.dumps(seed1_a))
    seed2_a = {u: (1 if i % 10 == 1 else None) for i, u in enumerate(selection_users)}
    # B finds what A finds on each seed and 20 more users on seed 1 only: averaged, +10 users' worth.
    seed1_b = dict(seed1_a) | {u: 3 for u in selection_users[2::10][:20]}
    seed2_b = dict(seed2_a)
    for name, ranks in (("first", {"b": seed1_b}), ("second", {"a": seed2_a, "b": seed2_b})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "valid_ranks.json").write_text(json.dumps(ranks))

    out = tmp_path / "pooled.json"
    run = _run(str(CHECKPOINT), str(tmp_path / "first"), "b", "--ranks", str(tmp_path / "ranks.json"),
               "--also-a", f"{tmp_path / 'second'}:a", "--also-b", f"{tmp_path / 'second'}:b", "--out", str(out),
               data_root=shared_data)
    assert run.returncode == 0, run.stderr
    assert "A: wo_aat, mean of 2 runs" in run.stdout and "B: b, mean of 2 runs" in run.stdout
    result = json.loads(out.read_text())["comparison"]
    recall = next(m for m in result["metrics"] if m["metric"] == "recall@10")
    assert recall["a_runs"] == [0.1, 0.1] and recall["b_runs"] == [pytest.approx(0.1 + 20 / n), 0.1]
    assert recall["difference"] == pytest.approx(10 / n)
    assert (recall["b_better_users"], recall["a_better_users"]) == (20, 0)

    short = {"a": {u: None for u in selection_users[:-1]}}
    (tmp_path / "second" / "valid_ranks.json").write_text(json.dumps(short))
    refused = _run(str(CHECKPOINT), str(tmp_path / "first"), "b", "--ranks", str(tmp_path / "ranks.json"),
                   "--also-a", f"{tmp_path / 'second'}:a", data_root=shared_data)
    assert refused.returncode != 0 and "trial 'a' validated other users (1 of" in refused.stderr
    malformed = _run(str(CHECKPOINT), str(tmp_path / "first"), "b", "--also-b", "no-colon", data_root=shared_data)
    assert malformed.returncode != 0 and "give another run as SEARCH_DIR:TRIAL" in malformed.stderr


def test_pairs_a_trial_validated_on_fewer_users_of_the_same_seed(shared_data, selection_users, tmp_path):
    """A search run with a smaller --eval-users (same seed) is paired on its own users via --eval-users."""
    from dataclasses import replace

    from eager.data import load_dataset
    from eager.train.validation import recorded_selection_recipe, selection_cases

    config = json.loads((CHECKPOINT / "config.json").read_text())
    data = load_dataset(config["dataset"], shared_data)
    recipe = replace(recorded_selection_recipe(config), eval_users=100)
    fewer = [data.user_keys[c.user] for c in selection_cases(data, recipe)]
    assert len(fewer) == 100
    checkpoint_ranks = {u: None for u in set(selection_users) | set(fewer)}
    (tmp_path / "ranks.json").write_text(json.dumps(checkpoint_ranks))
    (tmp_path / "valid_ranks.json").write_text(json.dumps({"small": {u: 1 for u in fewer}}))

    refused = _run(str(CHECKPOINT), str(tmp_path), "small", "--ranks", str(tmp_path / "ranks.json"), data_root=shared_data)
    assert refused.returncode != 0 and "validated other users" in refused.stderr
    paired = _run(str(CHECKPOINT), str(tmp_path), "small", "--ranks", str(tmp_path / "ranks.json"),
                  "--eval-users", "100", data_root=shared_data)
    assert paired.returncode == 0, paired.stderr
    assert "on 100 validation users: {'recall@10': 0.0, 'ndcg@10': 0.0}" in paired.stdout
    assert "| recall@10 | 0.0000 | 1.0000 | +1.0000 |" in paired.stdout


def test_a_shorter_prompt_keeps_the_selection_users_and_targets(shared_data, selection_users):
    from eager.data import load_dataset
    from eager.train.validation import recorded_selection_recipe, selection_cases

    config = json.loads((CHECKPOINT / "config.json").read_text())
    data = load_dataset(config["dataset"], shared_data)
    recipe = recorded_selection_recipe(config)
    full, cut = selection_cases(data, recipe), selection_cases(data, recipe, max_history=2)
    assert [data.user_keys[c.user] for c in cut] == selection_users
    assert [c.target for c in cut] == [c.target for c in full]
    assert all(list(c.history) == list(f.history[-2:]) for c, f in zip(cut, full))
    assert any(len(f.history) > 2 for f in full)  # the cut changed some prompts


def test_max_history_refuses_saved_ranks_and_an_empty_prompt(shared_data, tmp_path):
    (tmp_path / "ranks.json").write_text("{}")
    saved = _run(str(CHECKPOINT), "--ranks", str(tmp_path / "ranks.json"), "--max-history", "5", data_root=shared_data)
    assert saved.returncode != 0 and "--ranks keeps the ranks of the model reading its own 20 items" in saved.stderr
    empty = _run(str(CHECKPOINT), "--max-history", "0", data_root=shared_data)
    assert empty.returncode != 0 and "--max-history 0: give at least 1 item" in empty.stderr


def test_pairs_another_checkpoint_from_the_ranks_this_script_wrote(shared_data, selection_users, tmp_path):
    """--vs-ranks: B is another checkpoint (say, an `eager train` run) scored by this script with --ranks."""
    shipped = {u: (1 if i % 10 == 0 else None) for i, u in enumerate(selection_users)}
    (tmp_path / "shipped.json").write_text(json.dumps(shipped))
    trained = dict(shipped) | {u: 4 for u in selection_users[1::10][:15]}  # 15 more targets, at rank 4
    (tmp_path / "trained.json").write_text(json.dumps(trained))

    out = tmp_path / "paired.json"
    run = _run(str(CHECKPOINT), "--ranks", str(tmp_path / "shipped.json"), "--vs-ranks", str(tmp_path / "trained.json"),
               "--out", str(out), data_root=shared_data)
    assert run.returncode == 0, run.stderr
    assert "B: trained" in run.stdout
    saved = json.loads(out.read_text())
    recall = next(m for m in saved["comparison"]["metrics"] if m["metric"] == "recall@10")
    assert saved["vs_ranks"] == str(tmp_path / "trained.json")
    assert recall["difference"] == pytest.approx(15 / len(selection_users))
    assert (recall["b_better_users"], recall["a_better_users"]) == (15, 0)

    (tmp_path / "short.json").write_text(json.dumps({u: None for u in selection_users[:-2]}))
    short = _run(str(CHECKPOINT), "--ranks", str(tmp_path / "shipped.json"), "--vs-ranks", str(tmp_path / "short.json"),
                 data_root=shared_data)
    assert short.returncode != 0 and "validated other users (2 of the checkpoint's 500 are missing)" in short.stderr
    absent = _run(str(CHECKPOINT), "--vs-ranks", str(tmp_path / "absent.json"), data_root=shared_data)
    assert absent.returncode != 0 and "score the other checkpoint first" in absent.stderr
    both = _run(str(CHECKPOINT), str(tmp_path), "t", "--vs-ranks", str(tmp_path / "trained.json"), data_root=shared_data)
    assert both.returncode != 0 and "not both" in both.stderr
