"""Prompt styles: the compact one is shorter, trains the same pairs, and a checkpoint is prompted in its own style."""

from dataclasses import replace

import pytest

from eager.decoding.engine import BeamSearchEngine
from eager.decoding.evaluate import evaluate_checkpoint
from eager.model.prompts import PROMPT_STYLES, get_prompt_style, seqrec_prompt
from eager.model.variants import get_variant
from eager.serve.loader import load_checkpoint
from eager.train.batching import encode
from eager.train.pipeline import train_variant
from eager.train.samples import build_samples
from tests.tiny import TEST_RECIPE, load_tiny, toy_embeddings, toy_index


def test_compact_samples_pair_the_same_items_in_fewer_tokens(cyclic_data, base_dir):
    _, tok = load_tiny(base_dir)
    index = toy_index(cyclic_data)
    tasks = ("seqrec", "item2index", "index2item", "fusionseqrec")
    lcrec = build_samples(cyclic_data, index, tasks, seed=3)
    compact = build_samples(cyclic_data, index, tasks, seed=3, style="compact")
    # The same (task, response, target) pairs; only the prompts (and the shuffle) differ. Fusion samples
    # toss a coin for titles in or out, so only their number is the same.
    def pairs(samples):
        return sorted((s.task, s.response, s.target) for s in samples if s.task != "fusionseqrec")

    assert pairs(lcrec) == pairs(compact)
    assert sum(s.task == "fusionseqrec" for s in lcrec) == sum(s.task == "fusionseqrec" for s in compact)
    short = sum(len(encode(tok, s, 512).ids) for s in compact)
    long = sum(len(encode(tok, s, 512).ids) for s in lcrec)
    assert short < 0.75 * long
    history = [cyclic_data.item_keys[0], cyclic_data.item_keys[1]]
    prompt = seqrec_prompt(index, history, "compact")
    assert prompt.startswith("Items: ") and index.text_of(history[1]) in prompt and "###" not in prompt
    assert "### Response:" in seqrec_prompt(index, history)  # LC-Rec's wrapper stays the default


def test_every_style_has_every_task_and_unknown_styles_are_named():
    for style in PROMPT_STYLES.values():
        assert set(style.templates) == {"seqrec", "item2index", "index2item", "fusion_title_out", "fusion_index_out"}
    with pytest.raises(KeyError, match="terse.*lcrec, compact"):
        get_prompt_style("terse")


def test_a_compact_checkpoint_is_served_and_evaluated_in_its_style(cyclic_data, base_dir, tmp_path):
    model, tok = load_tiny(base_dir)
    recipe = replace(TEST_RECIPE, prompt_style="compact")
    out = tmp_path / "ckpt"
    train_variant(cyclic_data, get_variant("wo_aat"), recipe, out, tmp_path / "artifacts", base=str(base_dir),
                  progress=False, model=model, tokenizer=tok, index=toy_index(cyclic_data),
                  tables=toy_embeddings(cyclic_data))
    loaded = load_checkpoint(out)
    assert loaded.prompt_style == "compact"
    engine = BeamSearchEngine.from_loaded(loaded)
    assert engine.prompts([["I001"]]) == [seqrec_prompt(loaded.index, ["I001"], "compact")]
    report = evaluate_checkpoint(loaded, cyclic_data, "valid", limit=8, beams=10, k=10)
    assert report["users"] == 8 and report["invalid_rate"] == 0
