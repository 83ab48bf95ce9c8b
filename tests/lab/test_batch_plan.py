"""eager/lab/batch_plan.py: the plan it reports is the one the trainer trains, batch for batch."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from eager.decoding.trie import CodeTrie
from eager.model.code_tokens import add_code_tokens
from eager.train import trainer as train_module
from eager.train.pipeline import stage_samples
from eager.train.trainer import train_stage
from tests.tiny import TEST_RECIPE, load_tiny, toy_index

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("batch_plan", REPO / "eager" / "lab" / "batch_plan.py")
batch_plan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(batch_plan)


@pytest.mark.parametrize("budget, pack_len", [(None, 512), (600, 512), (None, None)])
def test_the_plan_is_the_trainers_first_epoch(cyclic_data, base_dir, tmp_path, monkeypatch, budget, pack_len):
    fed = []  # (sample ids, trained tokens) of every batch the trainer collated, in order

    class Recording(train_module.CollatedBatches):
        def __getitem__(self, i):
            batch = super().__getitem__(i)
            fed.append((list(self.batches[i]), batch.tokens))
            return batch

    monkeypatch.setattr(train_module, "CollatedBatches", Recording)
    index = toy_index(cyclic_data)
    recipe = replace(TEST_RECIPE, train_seed=3, eval_users=4, eval_beams=4, pack_len=pack_len,
                     stage1=replace(TEST_RECIPE.stage1, epochs=1, max_steps=None, batch_size=8, batch_tokens=budget))
    model, tok = load_tiny(base_dir)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    samples = stage_samples(cyclic_data, index, recipe, "stage1")
    plan = batch_plan.batch_plan(tok, samples, recipe, "stage1")
    train_stage("stage1", model, tok, index, trie, cyclic_data, samples, recipe.stage1, recipe, None, tmp_path,
                lambda r: None, progress=False)
    assert [b["samples"] for b in plan] == [ids for ids, _ in fed]
    assert [b["tokens"] for b in plan] == [tokens for _, tokens in fed]
    assert sorted(i for b in plan for i in b["samples"]) == list(range(len(samples)))
    for b in plan:
        assert b["layout"] >= b["tokens"] and (budget is None or b["tokens"] <= budget)
    report = batch_plan.summarise(plan, steps=3)
    assert report["epoch"]["batches"] == len(plan) and report["first_3_steps"]["batches"] == 3
    assert report["epoch"]["tokens_max"] == max(b["tokens"] for b in plan) >= report["first_3_steps"]["tokens_max"]


def _run_script(shared_data, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EAGER_DATA_ROOT": str(shared_data)}
    return subprocess.run([sys.executable, str(REPO / "eager" / "lab" / "batch_plan.py"), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def test_the_script_sizes_a_real_recipe_and_a_trial(shared_data):
    index = REPO / "checkpoints" / "scientific" / "wo_aat" / "index.json"
    common = ("--dataset", "scientific", "--recipe", "seqrec-compact", "--index", str(index), "--steps", "100", "--json")
    result = _run_script(shared_data, *common)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert (report["recipe"], report["stage"], report["batch_size"]) == ("seqrec-compact", "stage1", 16)
    first, epoch = report["first_100_steps"], report["epoch"]
    assert first["batches"] == 100 and epoch["batches"] == -(-report["samples"] // 16)
    assert 0 < epoch["tokens_median"] <= epoch["tokens_p90"] <= epoch["tokens_max"] <= 16 * report["max_len"]
    assert epoch["layout_max"] >= epoch["tokens_max"]
    assert 0 < first["tokens_total"] < epoch["tokens_total"] <= epoch["batches"] * epoch["tokens_max"]

    # A training history cap keeps every sample (each prefix is still one) and shortens them.
    capped = _run_script(shared_data, *common, "--trial", "history-5")
    assert capped.returncode == 0, capped.stderr[-2000:]
    capped = json.loads(capped.stdout)
    assert capped["recipe"] == "seqrec-compact+history-5"
    assert capped["samples"] == report["samples"] and capped["epoch"]["batches"] == epoch["batches"]
    assert capped["epoch"]["tokens_total"] < epoch["tokens_total"]


def test_the_script_names_an_unknown_trial(shared_data):
    result = _run_script(shared_data, "--dataset", "scientific", "--trial", "history-3")
    assert result.returncode != 0 and "--trial: unknown trial 'history-3'" in result.stderr and "history-5" in result.stderr
