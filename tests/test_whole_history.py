"""Whole-history training: one pass over a user's history trains every next-item prediction in it.

The checks: every prefix of a whole-history sample is the serving prompt, token for token; the
windows supervise each item once; and on a tiny random Llama the loss of whole-history samples is
the mean of the per-prefix losses written in the same format, GCT included, packed or not, which
fails as soon as a prediction reads anything after the item it predicts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eager.model.prompts import SEQUENCE_STYLE, seqrec_prompt
from eager.train import batching
from eager.train.batching import IGNORE, collate, collate_packed, encode, token_lengths
from eager.train.gct import DecompressionProjectors, GCTConfig
from eager.train.objective import compute_loss
from eager.train.samples import (
    HistorySample,
    build_samples,
    history_samples,
    history_windows,
    per_prefix_history_samples,
)
from tests.tiny import load_tiny, tiny_with_codes, toy_embeddings, toy_index


@pytest.fixture(scope="module")
def setup(base_dir):
    return tiny_with_codes(base_dir)


@given(st.integers(0, 80), st.integers(1, 25))
def test_windows_supervise_every_item_but_the_first_once(length, max_history):
    windows = history_windows(length, max_history)
    supervised = [p for start, end, first in windows for p in range(start + first, end)]
    assert supervised == list(range(1, length))
    for start, end, first in windows:
        assert end - start <= max_history + 1 and 1 <= first < end - start
        # an item a later window supervises reads at least half a window of real history
        assert start == 0 or first >= max_history - max(1, max_history // 2) + 1


def test_every_prefix_is_the_serving_prompt_token_for_token(setup):
    data, _, tok, index, _ = setup
    keys = data.item_keys[:7]
    whole = history_samples(index, data.item_keys, [np.arange(7)], max_history=20)[0]
    ids = encode(tok, whole, 256).ids
    for t in range(1, 7):
        prompt = seqrec_prompt(index, keys[:t], SEQUENCE_STYLE)
        assert whole.text.startswith(prompt)
        served = tok(prompt, add_special_tokens=False)["input_ids"]
        assert ids[: len(served)] == served  # the model trains on exactly what it is served
        # ... and what follows that prompt in training is the next item's code
        code = tok(index.text_of(keys[t]), add_special_tokens=False)["input_ids"]
        assert ids[len(served) : len(served) + len(code)] == code


def test_labels_fall_on_each_supervised_items_code_and_gct_on_the_token_before(setup):
    data, _, tok, index, vocab = setup
    sample = history_samples(index, data.item_keys, [np.arange(6)], max_history=20)[0]
    batch = collate(tok, [sample], 256)
    labelled = batch.labels[0][batch.labels[0] != IGNORE].tolist()
    codes = [vocab.ids_for(index.code_of(k)).tolist() for k in data.item_keys[1:6]]
    assert labelled == [t for code in codes for t in code]
    assert batch.targets.tolist() == [index.row(k) for k in data.item_keys[1:6]]
    for position, target in zip(batch.summary_index.tolist(), batch.targets.tolist()):
        assert batch.input_ids[0, position + 1] == vocab.ids_for(index.codes[target])[0]


def _losses(model, tok, samples, data, packed: bool, row_len: int = 256):
    projectors = DecompressionProjectors(32, toy_embeddings(data), seed=0)
    batch = collate_packed(tok, samples, 256, row_len) if packed else collate(tok, samples, 256)
    with torch.no_grad():
        return compute_loss(model, batch, projectors, GCTConfig(negatives=16), torch.Generator().manual_seed(3))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(2, 30), min_size=1, max_size=4), st.sampled_from([2, 5, 20]), st.booleans(),
       st.integers(0, 10_000))
def test_the_whole_history_loss_is_the_mean_of_the_per_prefix_losses(setup, lengths, max_history, packed, seed):
    data, model, tok, index, _ = setup
    rng = np.random.default_rng(seed)
    sequences = [rng.choice(data.num_items, size=n, replace=False) for n in lengths]
    whole = history_samples(index, data.item_keys, sequences, max_history)
    prefixes = [p for s in whole for p in per_prefix_history_samples(s, index)]
    assert len(prefixes) == sum(n - 1 for n in lengths)
    a = _losses(model, tok, whole, data, packed)
    b = _losses(model, tok, prefixes, data, packed, row_len=512)
    assert set(a) == set(b) == {"loss", "lm", "semantic", "behaviour"}
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), (name, a[name], b[name])


def test_the_equivalence_check_fails_when_a_prediction_reads_a_later_item(setup, monkeypatch):
    """A GCT point moved one item later (so it has read the next item's code) breaks the equality."""
    data, model, tok, index, _ = setup
    whole = history_samples(index, data.item_keys, [np.arange(9)], 20)
    reference = _losses(model, tok, per_prefix_history_samples(whole[0], index), data, packed=False)
    assert torch.allclose(_losses(model, tok, whole, data, packed=False)["semantic"], reference["semantic"], atol=1e-5)
    original = batching._encode_history

    def late(tokenizer, sample, max_len, with_gct):
        encoded = original(tokenizer, sample, max_len, with_gct)
        step = index.levels + 1  # one item: its code tokens and the separator
        return batching.Encoded(encoded.ids, encoded.labelled,
                                [(min(p + step, len(encoded.ids) - 1), t) for p, t in encoded.gct])

    monkeypatch.setattr(batching, "_encode_history", late)
    leaky = _losses(model, tok, whole, data, packed=False)
    assert not torch.allclose(leaky["semantic"], reference["semantic"], atol=1e-5)
    assert torch.allclose(leaky["lm"], reference["lm"], atol=1e-5)  # the LM part was untouched


def test_a_future_item_changes_no_earlier_prediction(setup):
    """Causality, directly: rewriting the last item leaves every earlier item's loss as it was."""
    data, model, tok, index, _ = setup
    first = history_samples(index, data.item_keys, [np.arange(8)], 20)[0]
    second = history_samples(index, data.item_keys, [np.array([0, 1, 2, 3, 4, 5, 6, 40])], 20)[0]
    early = [HistorySample(s.text, s.rows, 1) for s in (first, second)]
    logits = []
    for sample in early:
        batch = collate(tok, [sample], 256)
        with torch.no_grad():
            logits.append(model(input_ids=batch.input_ids).logits[0])
    cut = encode(tok, first, 256).labelled[-1][0] - 1  # up to the token that predicts the last item
    assert torch.allclose(logits[0][:cut], logits[1][:cut], atol=1e-6)


def test_build_samples_writes_seqrec_as_whole_histories_in_the_sequence_style(setup):
    data, _, tok, index, _ = setup
    samples = build_samples(data, index, ("seqrec", "item2index"), max_history=20, style=SEQUENCE_STYLE)
    histories = [s for s in samples if isinstance(s, HistorySample)]
    # 8 items a user → 6 in train → one window supervising 5 items
    assert len(histories) == data.num_users and all(len(s.targets) == 5 for s in histories)
    assert {s.task for s in samples} == {"seqrec", "item2index"}
    lengths = token_lengths(tok, samples[:50], 256)
    assert lengths == [len(encode(tok, s, 256).ids) for s in samples[:50]]


def test_gct_share_uses_that_share_of_the_points(setup):
    data, model, tok, index, _ = setup
    whole = history_samples(index, data.item_keys, [np.arange(30)], 20)
    batch = collate(tok, whole, 256)
    projectors = DecompressionProjectors(32, toy_embeddings(data), seed=0)
    seen = []
    original = projectors.forward
    projectors.forward = lambda summary, targets, *a: (seen.append(len(targets)), original(summary, targets, *a))[1]
    with torch.no_grad():
        compute_loss(model, batch, projectors, GCTConfig(negatives=8, share=0.25), torch.Generator().manual_seed(0))
    assert seen == [round(0.25 * 29)]
    with pytest.raises(ValueError, match="share"):
        GCTConfig(share=0.0)


def test_a_whole_history_variant_trains_learns_exports_and_serves(cyclic_data, base_dir, tmp_path):
    """Both stages in the sequence format end to end: the loss falls, and the checkpoint serves
    prompts in the format it trained on (the cyclic catalogue is learnable: i is followed by i+1)."""
    import json
    from dataclasses import replace

    from eager.decoding.evaluate import evaluate_checkpoint, recommend_keys
    from eager.model.variants import get_variant
    from eager.serve.loader import load_checkpoint
    from eager.train.pipeline import train_variant
    from eager.train.recipes import WHOLE_HISTORY_RECIPE
    from tests.tiny import TEST_RECIPE

    recipe = replace(WHOLE_HISTORY_RECIPE, name="whole-history-test", cpu_bf16=False,
                     stage1=replace(WHOLE_HISTORY_RECIPE.stage1, epochs=6, lr=1e-2),
                     stage2=replace(WHOLE_HISTORY_RECIPE.stage2, epochs=2, lr=1e-2),
                     gct=replace(TEST_RECIPE.gct), eval_users=12, eval_beams=10, pack_len=512)
    model, tok = load_tiny(base_dir)
    out = tmp_path / "ckpt"
    train_variant(cyclic_data, get_variant("full"), recipe, out, tmp_path / "artifacts", base=str(base_dir),
                  progress=False, model=model, tokenizer=tok, index=toy_index(cyclic_data),
                  tables=toy_embeddings(cyclic_data))
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["prompt_style"] == "sequence"
    # 60 users, one window each: 60 samples a stage, each supervising 5 items
    assert [s["samples"] for s in config["stages"]] == [60, 60]
    history = json.loads((out / "metrics.json").read_text())["history"]
    stage1 = [h["loss_lm"] for h in history if h["stage"] == "stage1"]
    assert stage1[-1] < stage1[0]
    loaded = load_checkpoint(out)
    assert loaded.prompt_style == "sequence"
    report = evaluate_checkpoint(loaded, cyclic_data, "test", limit=16, beams=10, k=10)
    assert report["invalid_rate"] == 0 and report["users"] == 16
    assert len(recommend_keys(loaded, cyclic_data, ["I001", "I002"], k=5)) == 5


def test_train_index_flag_refuses_an_index_of_another_catalogue_or_kind(shared_data, capsys):
    from eager.cli import main

    root = str(shared_data)
    from pathlib import Path

    beauty_index = str(Path(__file__).resolve().parents[1] / "checkpoints" / "beauty" / "full" / "index.json")
    assert main(["train", "--dataset", "scientific", "--variant", "wo_aat", "--index", beauty_index,
                 "--data-root", root]) == 2
    assert "lacks 4344 of scientific's items" in capsys.readouterr().err
    assert main(["train", "--dataset", "beauty", "--variant", "wo_dki", "--index", beauty_index,
                 "--data-root", root]) == 2
    assert "is a dual index; variant wo_dki trains on a semantic one" in capsys.readouterr().err
