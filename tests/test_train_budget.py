"""The trainer's clock budget, its schedule, and the collation workers."""

import re
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import get_cosine_schedule_with_warmup

from eager.decoding.trie import CodeTrie
from eager.model.code_tokens import add_code_tokens
from eager.train.batching import CollatedBatches, bucketed_batches
from eager.train.recipes import MULTITASK_SHORT_RECIPE, get_recipe
from eager.train.samples import build_samples
from eager.train.schedule import StepBudget
from eager.train.trainer import train_stage
from tests.tiny import TEST_RECIPE, load_tiny, toy_index


@settings(max_examples=40, deadline=None)
@given(total=st.integers(1, 400), warmup_ratio=st.floats(0.0, 0.5))
def test_unbudgeted_schedule_is_the_transformers_cosine(total, warmup_ratio):
    param = torch.nn.Parameter(torch.zeros(1))
    reference = get_cosine_schedule_with_warmup(torch.optim.SGD([param], lr=1.0), int(warmup_ratio * total), total)
    ours = StepBudget(total, warmup_ratio, None)
    for step in range(total + 1):  # (past the end, transformers climbs the cosine again; ours stays at 0)
        assert abs(ours.lr_factor(step) - reference.lr_lambdas[0](step)) < 1e-12


class FakeClock:
    def __init__(self, seconds_per_step: float):
        self.now, self.per_step = 0.0, seconds_per_step

    def __call__(self) -> float:
        return self.now


def test_budget_fits_the_step_count_to_the_clock(monkeypatch):
    clock = FakeClock(2.0)
    monkeypatch.setattr("eager.train.schedule.time.monotonic", clock)
    budget = StepBudget(total=10_000, warmup_ratio=0.0, max_minutes=1.0)  # 60 s at 2 s a step
    synced = []
    step = 0
    while step < budget.total:
        clock.now += clock.per_step
        step += 1
        budget.observe(step, step, 0.0, lambda: synced.append(step))
    # Timed from step 3, fitted after 10 timed steps: 60 s / 2 s = 30 steps in all.
    assert budget.fits == 1 and budget.total == 30 and step == 30
    assert synced == [3, 13]
    assert budget.lr_factor(budget.total) == 0.0  # the cosine now ends when the time does


def test_budget_gives_back_the_steps_slow_first_steps_took(monkeypatch):
    """Steps that get faster after the first fit (warm-up, loader workers) raise the count again."""
    clock = FakeClock(1.0)
    monkeypatch.setattr("eager.train.schedule.time.monotonic", clock)
    budget = StepBudget(total=1000, warmup_ratio=0.0, max_minutes=2.0)  # 120 s
    step, counts = 0, []
    while step < budget.total:
        clock.now += 1.0 if step < 13 else 0.25
        step += 1
        before = budget.fits
        budget.observe(step, step, 0.0, lambda: None)
        if budget.fits > before:
            counts.append(budget.total)
    assert counts[0] == 13 + int((120 - 13) / 1.0)  # the first fit sees 10 slow steps
    assert counts == sorted(counts) and counts[-1] == 13 + int((120 - 13) / 0.25)
    assert 120 - 2.0 < clock.now <= 120.0  # and the stage ends when the time does, not long before


def test_budget_never_extends_the_planned_steps_and_stops_hard(monkeypatch):
    clock = FakeClock(0.01)
    monkeypatch.setattr("eager.train.schedule.time.monotonic", clock)
    budget = StepBudget(total=20, warmup_ratio=0.1, max_minutes=5.0)
    for step in range(1, 21):
        clock.now += clock.per_step
        budget.observe(step, step, 0.0, lambda: None)
    assert budget.total == 20 and budget.fits >= 1  # fast steps: the epochs' plan stands
    slow = StepBudget(total=100, warmup_ratio=0.0, max_minutes=0.01)  # 0.6 s
    clock.now = 0.0
    clock.now += 1.0
    slow.observe(1, 1, 0.0, lambda: None)
    assert slow.total == 1  # past the budget before calibration: stop now


def test_worker_collation_gives_the_same_batches(cyclic_data, base_dir):
    _, tok = load_tiny(base_dir)
    index = toy_index(cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec", "item2index"))
    plan = bucketed_batches(list(range(len(samples))), [len(s.prompt) for s in samples], 16, seed=3)
    for pack_len in (None, 512):
        batches = CollatedBatches(tok, samples, plan, 256, pack_len)
        here, workers = list(batches.stream(0)), list(batches.stream(2))
        assert len(here) == len(workers) == len(plan)
        for a, b in zip(here, workers):
            assert a.packed == (pack_len is not None)
            for field in ("input_ids", "labels", "summary_index", "targets", "gct_mask", "position_ids"):
                x, y = getattr(a, field), getattr(b, field)
                assert (x is None and y is None) or torch.equal(x, y)


def test_a_stage_with_a_clock_budget_stops_early_and_says_so(cyclic_data, base_dir, tmp_path):
    model, tok = load_tiny(base_dir)
    index = toy_index(cyclic_data)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    samples = build_samples(cyclic_data, index, ("seqrec",))
    stage = replace(TEST_RECIPE.stage2, epochs=3, max_steps=None, batch_size=4, max_minutes=1e-4)  # 6 ms
    recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4)
    planned = 3 * -(-len(samples) // 4)
    _, _, _, info = train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage, recipe, None,
                                tmp_path, lambda r: None, progress=False)
    last = info["history"][-1]
    assert len(info["history"]) == 1  # later epochs never started
    assert 1 <= last["step"] == last["planned_steps"] < planned
    assert last["tokens"] > 0 and last["tokens_per_s"] > 0


def test_the_gpu_lease_recipe_is_named_and_budgeted():
    recipe = get_recipe("multitask-short")
    assert recipe is MULTITASK_SHORT_RECIPE
    assert recipe.stage1.max_minutes and recipe.stage2.max_minutes and recipe.pack_len
    assert not recipe.stage1.full_finetune and not recipe.stage2.full_finetune


def test_compiled_layers_train_like_the_plain_ones(cyclic_data, base_dir, tmp_path):
    """torch.compile of the decoder layers (packed rows, LoRA, GCT off) changes no number that matters,
    with activation checkpointing too (the compiled layer recomputed in the backward pass)."""
    index = toy_index(cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec", "item2index"))
    stage = replace(TEST_RECIPE.stage2, epochs=1, max_steps=3, batch_size=8,
                    lora=replace(TEST_RECIPE.stage2.lora, dropout=0.0))  # inductor draws dropout masks its own way
    from torch._dynamo.utils import counters

    runs = {}
    for compiled, checkpointed in ((False, 0), (True, 0), (True, 1)):
        counters.clear()
        model, tok = load_tiny(base_dir)
        trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
        recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4, compile=compiled, activation_checkpointing=checkpointed)
        (tmp_path / "stage2_state.pt").unlink(missing_ok=True)  # a finished run leaves its state: start afresh
        trained, lora, rows, info = train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage, recipe,
                                                None, tmp_path, lambda r: None, progress=False)
        layer = trained.get_base_model().model.layers[0]
        assert "forward" not in vars(layer)  # the plain forward is back after training
        if compiled:  # it went through dynamo: one graph for both layers, nothing left in eager mode
            assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"], (checkpointed, dict(counters))
        runs[compiled, checkpointed] = (info["history"][-1], lora)
    plain, plain_lora = runs[False, 0]
    for fast, fast_lora in (runs[True, 0], runs[True, 1]):
        assert abs(plain["loss_lm"] - fast["loss_lm"]) < 1e-3 * abs(plain["loss_lm"])
        assert plain["valid_ndcg@10"] == fast["valid_ndcg@10"]
        for key, value in plain_lora.items():
            assert torch.allclose(value, fast_lora[key], atol=1e-4, rtol=1e-3), key


def test_max_steps_flag_takes_one_cap_or_one_per_stage():
    from eager.cli import _stage_steps

    assert _stage_steps("300") == (300, 300)
    assert _stage_steps("274, 188") == (274, 188)
    for bad in ("0", "1,2,3", "ten", "5,-1"):
        with pytest.raises(SystemExit, match="--max-steps"):
            _stage_steps(bad)


def test_train_flags_override_only_what_they_name():
    from eager.cli import build_parser, train_recipe_from_args

    parse = build_parser().parse_args
    lease = get_recipe("multitask-short")
    assert train_recipe_from_args(parse(["train", "--dataset", "beauty", "--recipe", "multitask-short"])) == lease
    changed = train_recipe_from_args(parse(["train", "--dataset", "beauty", "--recipe", "multitask-short", "--max-steps", "274,188",
                                            "--train-seed", "1", "--activation-checkpointing", "--attention", "varlen"]))
    assert changed == replace(lease, train_seed=1, activation_checkpointing=1, attention="varlen",
                              stage1=replace(lease.stage1, max_steps=274, max_minutes=None),
                              stage2=replace(lease.stage2, max_steps=188, max_minutes=None))
    every_other = train_recipe_from_args(parse(["train", "--dataset", "beauty", "--recipe", "multitask-short",
                                                "--activation-checkpointing", "2", "--no-compile"]))
    assert every_other == replace(lease, activation_checkpointing=2, compile=False)
    default = get_recipe("whole-history")  # what `eager train` trains unless told otherwise
    assert train_recipe_from_args(parse(["train", "--dataset", "beauty", "--activation-checkpointing", "0"])) == default
    with pytest.raises(SystemExit, match="--activation-checkpointing: .*every how many decoder layers.*not -1"):
        train_recipe_from_args(parse(["train", "--dataset", "beauty", "--activation-checkpointing", "-1"]))
    with pytest.raises(SystemExit, match="--attention: .*set pack_len"):
        train_recipe_from_args(parse(["train", "--dataset", "beauty", "--recipe", "check", "--attention", "varlen"]))


def test_varlen_attention_trains_like_sdpa(cyclic_data, base_dir, tmp_path, monkeypatch):
    """recipe.attention='varlen' routes every training step's attention through it, and trains to the same numbers."""
    import eager.train.attention as attention

    calls = []
    reference = attention.varlen_reference
    monkeypatch.setattr(attention, "varlen_reference", lambda *a, **k: calls.append(1) or reference(*a, **k))
    index = toy_index(cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec", "item2index"))
    stage = replace(TEST_RECIPE.stage2, epochs=1, max_steps=5, batch_size=8,
                    lora=replace(TEST_RECIPE.stage2.lora, dropout=0.0))
    runs = {}
    for choice in ("sdpa", "varlen"):
        model, tok = load_tiny(base_dir)
        trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
        recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4, attention=choice)
        (tmp_path / "stage2_state.pt").unlink(missing_ok=True)
        before = len(calls)
        trained, lora, rows, info = train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage, recipe,
                                                None, tmp_path, lambda r: None, progress=False)
        # 5 steps x 2 layers went through it (and validation, with its cache and tree masks, did not)
        assert len(calls) - before == (5 * 2 if choice == "varlen" else 0)
        last = info["history"][-1]  # the rate past the first 3 steps is logged (and no GPU memory on CPU)
        assert last["tokens_per_s_steady"] > 0 and "peak_gib" not in last
        assert trained.get_base_model().config._attn_implementation != attention.VARLEN_ATTENTION
        runs[choice] = (info["history"][-1], lora)
    (plain, plain_lora), (fast, fast_lora) = runs["sdpa"], runs["varlen"]
    assert abs(plain["loss_lm"] - fast["loss_lm"]) < 1e-4 * abs(plain["loss_lm"])
    assert plain["valid_ndcg@10"] == fast["valid_ndcg@10"]
    for key, value in plain_lora.items():
        assert torch.allclose(value, fast_lora[key], atol=1e-5, rtol=1e-4), key


def test_activation_checkpointing_trains_like_the_plain_steps(cyclic_data, base_dir, tmp_path, monkeypatch):
    """recipe.activation_checkpointing=n keeps a fraction of the activations of every training step for the
    backward pass (every n-th layer is recomputed, dropout included: the recompute replays its RNG) and
    trains to the same numbers; it is off again after."""
    import eager.train.objective as objective

    kept = []  # per training step: bytes autograd saved for the backward pass inside the decoder stack

    def counting_hidden(*args, **kwargs):
        saved = [0]

        def pack(tensor):
            saved[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = plain_hidden(*args, **kwargs)
        if out.requires_grad:  # a training step (validation runs without gradients)
            kept.append(saved[0])
        return out

    plain_hidden = objective.last_hidden
    monkeypatch.setattr(objective, "last_hidden", counting_hidden)
    index = toy_index(cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec", "item2index"))
    stage = replace(TEST_RECIPE.stage2, epochs=1, max_steps=4, batch_size=8)
    assert stage.lora.dropout > 0
    runs = {}
    for every in (0, 1, 2):
        model, tok = load_tiny(base_dir)
        trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
        recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4, activation_checkpointing=every)
        (tmp_path / "stage2_state.pt").unlink(missing_ok=True)
        kept.clear()
        trained, lora, rows, info = train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage, recipe,
                                                None, tmp_path, lambda r: None, progress=False)
        assert not trained.get_base_model().model.layers[0].gradient_checkpointing
        runs[every] = (info["history"][-1], lora, rows, list(kept))
    plain, plain_lora, plain_rows, plain_kept = runs[0]
    all_kept, half_kept = runs[1][3], runs[2][3]
    # The same 4 batches. Every layer checkpointed keeps a fraction of what the plain step keeps (each
    # layer's input instead of everything inside it); every other layer (the first of the tiny two)
    # keeps about half.
    assert len(plain_kept) == len(all_kept) == len(half_kept) == 4
    assert all(a < 0.25 * p for a, p in zip(all_kept, plain_kept)), (all_kept, plain_kept)
    assert all(0.4 * p < h < 0.7 * p for h, p in zip(half_kept, plain_kept)), (half_kept, plain_kept)
    for every in (1, 2):
        recomputed, recomputed_lora, recomputed_rows, _ = runs[every]
        assert abs(plain["loss_lm"] - recomputed["loss_lm"]) < 1e-5 * abs(plain["loss_lm"])
        assert plain["valid_ndcg@10"] == recomputed["valid_ndcg@10"]
        assert torch.allclose(plain_rows, recomputed_rows, atol=1e-6)
        for key, value in plain_lora.items():
            assert torch.allclose(value, recomputed_lora[key], atol=1e-6, rtol=1e-5), (every, key)


def test_a_step_out_of_memory_says_what_to_change(cyclic_data, base_dir, tmp_path, monkeypatch):
    import eager.train.trainer as train

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 504.00 MiB.\nmore detail")

    plain_loss = train.compute_loss
    monkeypatch.setattr(train, "compute_loss", no_memory)
    index = toy_index(cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec",))
    stage = replace(TEST_RECIPE.stage2, epochs=1, max_steps=2, batch_size=8, batch_tokens=512)
    for every in (0, 2, 1):
        model, tok = load_tiny(base_dir)
        trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
        recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4, activation_checkpointing=every)
        with pytest.raises(RuntimeError) as stopped:
            train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage, recipe, None, tmp_path,
                        lambda r: None, progress=False)
        message = str(stopped.value)
        assert re.search(r"training step 1 ran out of memory on a batch of [\d,]+ tokens", message), message
        assert ("--activation-checkpointing" in message) is (every != 1)  # not offered when every layer is already
        assert "batch_tokens, now 512" in message and "Tried to allocate 504.00 MiB" in message
        assert "more detail" not in message  # the first line of torch's message, not all of it
        assert "resumes from the last finished epoch" not in message  # no epoch finished: nothing to resume

    # Out of memory in the second epoch: the first one's state is on disk, and the message says a rerun keeps it.
    state = tmp_path / "stage2_state.pt"
    assert not state.exists()
    monkeypatch.setattr(train, "compute_loss", lambda *a, **k: no_memory() if state.exists() else plain_loss(*a, **k))
    model, tok = load_tiny(base_dir)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4)
    with pytest.raises(RuntimeError, match=r"training step \d+ ran out.*A rerun with --activation-checkpointing resumes "
                                           r"from the last finished epoch \(.*stage2_state.pt\)"):
        train_stage("stage2", model, tok, index, trie, cyclic_data, samples, replace(stage, epochs=2, max_steps=None),
                    recipe, None, tmp_path, lambda r: None, progress=False)


def test_a_saved_state_resumes_only_under_the_same_settings(tmp_path):
    from types import SimpleNamespace

    from eager.train.resume import check_resumable, run_settings

    config = SimpleNamespace(hidden_size=64, num_hidden_layers=2)
    recipe = get_recipe("seqrec-compact")

    def settings_of(r):
        return run_settings("stage1", r.stage1, r, "scientific", 1000, 49_400, config)

    saved = settings_of(recipe)
    # A search trial's name and a fresh clock budget are free: the step count is the saved one.
    # So is activation checkpointing (the same gradients): a run stopped by GPU memory resumes with it.
    same = replace(recipe, name="seqrec-compact+trial", stage1=replace(recipe.stage1, max_minutes=5),
                   activation_checkpointing=1)
    check_resumable(saved, settings_of(same), tmp_path / "stage1_state.pt")
    changed = replace(recipe, stage1=replace(recipe.stage1, tasks=("seqrec", "item2index")), token_init="text")
    with pytest.raises(ValueError) as refused:
        check_resumable(saved, settings_of(changed), tmp_path / "stage1_state.pt")
    message = str(refused.value)
    assert "stage1.tasks: ['seqrec'] → ['seqrec', 'item2index']" in message and "token_init: 'mean' → 'text'" in message
    assert "stage.tasks" in message  # the stage being trained is named as such too
    with pytest.raises(ValueError, match="did not record its settings"):
        check_resumable(None, saved, tmp_path / "stage1_state.pt")
