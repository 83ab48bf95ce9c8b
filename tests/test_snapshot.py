"""Snapshots: a run's saved state small enough to commit, and a run on another machine going on from it."""

import hashlib
import json
from dataclasses import replace

import pytest
import torch

from eager.decoding.trie import CodeTrie
from eager.model.code_tokens import add_code_tokens
from eager.train import trainer as train_module
from eager.train.gct import DecompressionProjectors
from eager.train.samples import build_samples
from eager.train.snapshot import (
    REWARM_STEPS,
    read_snapshot,
    snapshot_files,
    write_snapshot,
)
from eager.train.trainer import _rewarm, gct_tables, train_stage
from tests.tiny import TEST_RECIPE, load_tiny, toy_embeddings, toy_index


def _state(best_is_current: bool) -> dict:
    g = torch.Generator().manual_seed(3)
    lora = {"a.lora_A.weight": torch.randn(4, 6, generator=g), "a.lora_B.weight": torch.randn(6, 4, generator=g)}
    rows = torch.randn(5, 6, generator=g)
    best_lora = lora if best_is_current else {k: v + 1 for k, v in lora.items()}
    return {
        "lora": lora, "rows": rows, "optimizer": {"state": {}}, "scheduler": {"base_lrs": [0.1], "last_epoch": 7,
                                                                             "_last_lr": [0.05], "lr_lambdas": [None]},
        "projectors": {"heads.semantic.weight": torch.randn(2, 6, generator=g)}, "epoch": 1, "step": 7, "total": 20,
        "history": [{"epoch": 1, "valid_ndcg@10": 0.25}], "best": {"ndcg@10": 0.25, "epoch": 1, "ranks": [1, 3, 2]},
        "best_lora": best_lora, "best_rows": rows.clone() if best_is_current else rows + 1,
        "generator": torch.Generator().manual_seed(1).get_state(), "rng": [{"cpu": torch.get_rng_state(), "cuda": None}],
        "settings": {"stage.lr": 0.1}, "in_epoch": {"epoch": 1, "done": 3, "tokens": 99, "sums": {"loss": 1.5},
                                                    "seconds": 12.0, "epoch_generator": torch.Generator().manual_seed(2).get_state()},
    }


@pytest.mark.parametrize("best_is_current", [True, False])
def test_a_snapshot_reads_back_as_the_state_without_the_optimizer(tmp_path, best_is_current):
    state = _state(best_is_current)
    weights, meta = write_snapshot(state, tmp_path, "stage1")
    back = read_snapshot(tmp_path, "stage1")
    bf16 = lambda t: t.to(torch.bfloat16).float()
    assert back["optimizer"] is None
    for group in ("lora", "best_lora", "projectors"):
        assert back[group].keys() == state[group].keys()
        assert all(torch.equal(back[group][k], bf16(v)) for k, v in state[group].items())
    assert torch.equal(back["rows"], bf16(state["rows"])) and torch.equal(back["best_rows"], bf16(state["best_rows"]))
    for key in ("epoch", "step", "total", "history", "best", "settings", "scheduler"):
        assert back[key] == state[key], key
    assert torch.equal(back["generator"], state["generator"]) and torch.equal(back["rng"][0]["cpu"], state["rng"][0]["cpu"])
    assert torch.equal(back["in_epoch"]["epoch_generator"], state["in_epoch"]["epoch_generator"])
    assert {k: v for k, v in back["in_epoch"].items() if k != "epoch_generator"} == \
        {k: v for k, v in state["in_epoch"].items() if k != "epoch_generator"}
    # The best epoch's weights are stored once when they are the current ones: the file holds no copy.
    from safetensors.torch import load_file

    stored = load_file(str(weights))
    assert any(k.startswith("best_lora/") for k in stored) is not best_is_current
    assert all(v.dtype in (torch.bfloat16, torch.uint8) for v in stored.values())
    assert json.loads(meta.read_text())["best_is_current"] is best_is_current


def test_the_learning_rate_ramps_back_up_after_a_warm_start():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    seen = []
    for done in range(REWARM_STEPS + 3):
        _rewarm(optimizer, scheduler, done)
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.5 / REWARM_STEPS)
    assert all(a < b for a, b in zip(seen[:REWARM_STEPS], seen[1:REWARM_STEPS]))
    assert seen[REWARM_STEPS - 1:] == [pytest.approx(0.5)] * 4  # then the schedule's own rate, never compounded


def test_a_run_goes_on_from_its_snapshot_on_another_machine(cyclic_data, base_dir, tmp_path, monkeypatch):
    """A run saved after every step is stopped after 5 steps; its state, written as a snapshot, starts a
    run in an empty work folder (another machine), which trains exactly the batches the unbroken run
    trained after its fifth, GCT projectors included, and ends near the unbroken run's weights."""
    monkeypatch.setenv(train_module.SAVE_EVERY_ENV, "1e-9")
    index = toy_index(cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec",))[:96]
    stage = replace(TEST_RECIPE.stage1, tasks=("seqrec",), epochs=1, max_steps=None, lr=2e-3)
    recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4)
    real = train_module.compute_loss
    seen: list[str] = []

    def recording(model, batch, *args, **kwargs):
        seen.append(hashlib.sha1(batch.input_ids.numpy().tobytes()).hexdigest())
        if len(seen) == stop_at[0]:
            raise KeyboardInterrupt
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(train_module, "compute_loss", recording)

    def run(work, records, warm_start=None):
        model, tok = load_tiny(base_dir)
        trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
        projectors = DecompressionProjectors(model.config.hidden_size,
                                             gct_tables(index, cyclic_data, toy_embeddings(cyclic_data)), seed=0)
        return train_stage("stage1", model, tok, index, trie, cyclic_data, samples, stage, recipe, projectors, work,
                           records.append, progress=False, warm_start=warm_start)

    stop_at = [0]
    _, whole, _, _ = run(tmp_path / "whole", [])
    whole_batches, seen[:] = list(seen), []
    stop_at[0] = 6
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "here", [])
    saved = torch.load(tmp_path / "here" / "stage1_state.pt", weights_only=False)
    assert saved["step"] == 5 and saved["projectors"]
    write_snapshot(saved, tmp_path / "committed", "stage1")

    # Another machine: nothing in its work folder, the committed snapshot beside it.
    stop_at[0], seen[:] = 0, []
    records = []
    _, resumed, _, info = run(tmp_path / "there", records, warm_start=tmp_path / "committed")
    assert records[0] == {"stage": "stage1", "resumed_at_epoch": 0, "resumed_at_batch": 5,
                          "warm_start": str(tmp_path / "committed")}
    assert seen == whole_batches[5:]  # the same data order, from where the saved run stopped
    assert info["history"][0]["step"] == len(whole_batches)
    start = read_snapshot(tmp_path / "committed", "stage1")["lora"]
    assert any(not torch.equal(resumed[k], start[k]) for k in start)  # it trained on from there
    gap = max((resumed[k] - whole[k]).abs().max().item() for k in whole)
    spread = max((whole[k] - start[k]).abs().max().item() for k in whole)
    assert gap < spread  # nearer the unbroken run's end than the snapshot was

    # A snapshot of other settings is refused by name, as a local state is.
    with pytest.raises(ValueError, match=r"stage1\.json was saved by a run with other settings \(stage\.lr"):
        stage = replace(stage, lr=1e-3)
        run(tmp_path / "elsewhere", [], warm_start=tmp_path / "committed")
    assert snapshot_files(tmp_path / "committed", "stage1")[0].exists()


def test_cli_snapshot_to_says_when_there_is_nothing_to_write(tmp_path, capsys):
    from eager.cli import main

    args = ["train", "--dataset", "ml-100k", "--artifacts", str(tmp_path / "artifacts")]
    try:
        code = main([*args, "--snapshot-to", str(tmp_path / "snap")])
    except SystemExit as err:
        code = err.code
    assert code != 0
    assert "no saved training state" in capsys.readouterr().err + str(code)
    try:
        code = main([*args, "--warm-start", str(tmp_path / "absent")])
    except SystemExit as err:
        code = err.code
    assert "is not a folder of snapshots" in capsys.readouterr().err + str(code)


def test_a_running_variant_exports_its_best_stage1_as_a_checkpoint(cyclic_data, base_dir, tmp_path):
    """After its first epoch a `full` run's stage 1 is written out as its `wo_aat` checkpoint (from the
    state here, or from a committed snapshot on another machine), which loads and recommends."""
    from safetensors.torch import load_file

    from eager.decoding.evaluate import recommend_keys
    from eager.model.variants import get_variant
    from eager.serve.loader import load_checkpoint
    from eager.train.pipeline import export_stage1, run_work_dir

    variant, index = get_variant("full"), toy_index(cyclic_data)
    recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4,
                     stage1=replace(TEST_RECIPE.stage1, tasks=("seqrec",), epochs=3, max_steps=None))
    work = run_work_dir(tmp_path / "artifacts", cyclic_data.name, variant, recipe)
    model, tok = load_tiny(base_dir)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    samples = build_samples(cyclic_data, index, ("seqrec",))[:48]
    work.mkdir(parents=True)
    torch.save({"best_lora": None, "step": 3, "total": 9}, work / "stage1_state.pt")
    with pytest.raises(ValueError, match="has not finished an epoch"):
        export_stage1(cyclic_data, variant, recipe, index, tmp_path / "early", tmp_path / "artifacts", base=str(base_dir))
    (work / "stage1_state.pt").unlink()

    def stop_after_first_epoch(record):
        if "valid_ndcg@10" in record:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stage("stage1", model, tok, index, trie, cyclic_data, samples, recipe.stage1, recipe, None, work,
                    stop_after_first_epoch, progress=False)
    out = export_stage1(cyclic_data, variant, recipe, index, tmp_path / "wo_aat", tmp_path / "artifacts",
                        base=str(base_dir))
    saved = torch.load(work / "stage1_state.pt", weights_only=False)
    assert out["progress"] == {"epoch": 1, "step": saved["step"], "planned_steps": saved["total"], "best_epoch": 1,
                               "stage1_complete": False}
    config = json.loads((tmp_path / "wo_aat" / "config.json").read_text())
    assert config["variant"]["name"] == "wo_aat" and config["stage1_of"] == "full" and config["recipe"]["name"] == recipe.name
    stored = load_file(str(tmp_path / "wo_aat" / "stage1.safetensors"))
    assert all(torch.equal(stored[k], v.to(torch.bfloat16)) for k, v in saved["best_lora"].items())
    loaded = load_checkpoint(tmp_path / "wo_aat", base=str(base_dir))
    assert len(recommend_keys(loaded, cyclic_data, ["I001", "I002"], k=3, beams=5)) == 3
    # On another machine: no state, the committed snapshot instead.
    write_snapshot(saved, tmp_path / "committed", "stage1")
    (work / "stage1_state.pt").unlink()
    again = export_stage1(cyclic_data, variant, recipe, index, tmp_path / "wo_aat2", tmp_path / "artifacts",
                          warm_start=tmp_path / "committed", base=str(base_dir))
    assert again["progress"] == out["progress"] and again["selection"] == out["selection"]
    with pytest.raises(FileNotFoundError, match="no saved stage-1 state"):
        export_stage1(cyclic_data, variant, recipe, index, tmp_path / "none", tmp_path / "artifacts", base=str(base_dir))
