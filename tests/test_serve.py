"""The serving engine: exact against full-catalogue scoring, equal to HF generate, fast loader, bench CLI."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.decoding.engine import BeamSearchEngine, exact_item_scores, exact_top_k
from eager.decoding.hf_generate import recommend_batch
from eager.decoding.trie import CodeTrie
from eager.index.item_index import ItemIndex
from eager.model.variants import get_variant
from eager.serve import loader as serve_loader
from eager.serve.loader import load_checkpoint
from eager.train.pipeline import train_variant
from tests.tiny import (
    TEST_RECIPE,
    load_tiny,
    tiny_with_codes,
    toy_embeddings,
    toy_index,
)

HISTORIES = [["I001", "I002"], ["I010"], ["I020", "I021", "I022", "I023", "I024", "I025"], ["I049", "I000", "I001"]]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """The tiny random Llama at hidden 64 here: every Linear then fits NF4's blocks of 64 (at 32, as
    elsewhere, quantising would rightly leave most of them unquantised)."""
    from tests.tiny import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("tiny_base_64"), hidden=64)


@pytest.fixture(scope="module")
def engine(base_dir):
    """A tiny random model whose code rows are spread out, so scores differ clearly between items."""
    data, model, tok, index, vocab = tiny_with_codes(base_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        rows = vocab.all_ids()
        model.get_input_embeddings().weight[rows] += torch.randn(len(rows), model.config.hidden_size, generator=generator)
    return BeamSearchEngine(model, tok, index, vocab)


def test_wide_beam_equals_exact_full_catalogue_scoring(engine):
    # 50 beams ≥ every trie level's width: beam search must be exact.
    result = engine.search(HISTORIES, k=10, beams=len(engine.index.keys))
    for history, recs in zip(HISTORIES, result.recommendations):
        exact = exact_item_scores(engine, history)
        top = exact.topk(10)
        assert [r.key for r in recs] == [engine.index.keys[i] for i in top.indices.tolist()]
        assert np.allclose([r.score for r in recs], top.values.numpy(), atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(beams=st.integers(2, 30))
def test_the_pruned_bound_holds_and_certifies_only_exact_results(engine, beams):
    # k = beams: every survivor is returned, so every item missing from the result was dropped.
    result = engine.search(HISTORIES, k=beams, beams=beams)
    for history, recs, bound in zip(HISTORIES, result.recommendations, result.pruned_bounds):
        exact = exact_item_scores(engine, history)
        returned = {engine.index.keys.index(r.key) for r in recs}
        dropped = [s for i, s in enumerate(exact.tolist()) if i not in returned]
        assert bound >= max(dropped) - 1e-4  # no dropped item scores above the bound
    for k in {1, beams // 2 or 1, beams}:
        for history, recs, exact in zip(HISTORIES, result.recommendations, result.certified(k)):
            if exact:
                top = exact_item_scores(engine, history).topk(k).indices.tolist()
                assert [r.key for r in recs[:k]] == [engine.index.keys[i] for i in top]


def test_a_beam_wide_as_the_catalogue_is_always_certified(engine):
    result = engine.search(HISTORIES, k=10, beams=len(engine.index.keys))
    assert result.pruned_bounds == [float("-inf")] * len(HISTORIES) and all(result.certified(10))


@pytest.mark.parametrize("max_beams", [64, 2])  # widening, and full-catalogue scoring past max_beams
def test_exact_top_k_equals_full_catalogue_scoring(engine, max_beams):
    found = exact_top_k(engine, HISTORIES, k=5, beams=5, growth=2, max_beams=max_beams)
    for history, recs, width in zip(HISTORIES, found.recommendations, found.beams_needed):
        top = exact_item_scores(engine, history).topk(5)
        assert [r.key for r in recs] == [engine.index.keys[i] for i in top.indices.tolist()]
        assert np.allclose([r.score for r in recs], top.values.numpy(), atol=1e-4)
        assert (width is None) == (max_beams < 5) and (width is None or 5 <= width <= max_beams)
    plain = engine.search(HISTORIES, k=5, beams=5).recommendations
    assert found.at_first_width == (plain if max_beams >= 5 else [None] * len(HISTORIES))
    with pytest.raises(ValueError, match="beams"):
        exact_top_k(engine, HISTORIES, k=10, beams=5)


def _top_without(engine, history, banned, k):
    scores = exact_item_scores(engine, history).clone()  # an inference tensor: copy before writing
    scores[[engine.index.row(key) for key in banned]] = float("-inf")
    top = scores.topk(k)
    return [engine.index.keys[i] for i, s in zip(top.indices.tolist(), top.values.tolist()) if s > float("-inf")]


@settings(max_examples=15, deadline=None)
@given(beams=st.integers(5, 30), picks=st.lists(st.lists(st.integers(0, 49), max_size=48), min_size=4, max_size=4))
def test_excluded_items_never_come_back_and_what_is_left_stays_exact(engine, beams, picks):
    keys = engine.index.keys
    exclude = [{keys[i] for i in pick} for pick in picks]
    result = engine.search(HISTORIES, k=5, beams=beams, exclude=exclude)
    for history, recs, banned, certified in zip(HISTORIES, result.recommendations, exclude, result.certified(5)):
        assert not {r.key for r in recs} & banned
        assert len(recs) == min(5, len(keys) - len(banned))  # no beam is spent on an excluded item
        if certified:  # the certificate now speaks of the catalogue less the excluded items
            assert [r.key for r in recs] == _top_without(engine, history, banned, 5)
    wide = engine.search(HISTORIES, k=5, beams=len(keys), exclude=exclude)
    for history, recs, banned in zip(HISTORIES, wide.recommendations, exclude):
        assert [r.key for r in recs] == _top_without(engine, history, banned, 5)
    none = engine.search(HISTORIES, k=5, beams=beams, exclude=[set()] * len(HISTORIES))
    assert none.recommendations == engine.search(HISTORIES, k=5, beams=beams).recommendations


@pytest.mark.parametrize("max_beams", [64, 2])
def test_exact_top_k_leaves_out_what_it_is_told(engine, max_beams):
    exclude = [set(history) for history in HISTORIES]  # the demo's use: never the history itself
    found = exact_top_k(engine, HISTORIES, k=5, beams=5, growth=2, max_beams=max_beams, exclude=exclude)
    for history, recs in zip(HISTORIES, found.recommendations):
        assert [r.key for r in recs] == _top_without(engine, history, set(history), 5)
    with pytest.raises(ValueError, match="one set per prompt"):
        engine.search(HISTORIES, k=5, beams=5, exclude=exclude[:1])
    with pytest.raises(KeyError, match="not in this index"):
        engine.search(HISTORIES[:1], k=5, beams=5, exclude=[{"bogus"}])


@pytest.mark.parametrize("beams", [4, 8, 20])
def test_engine_agrees_with_hf_generate_and_the_trie_callback(engine, beams):
    ours = engine.search(HISTORIES, k=min(5, beams), beams=beams).recommendations
    theirs = recommend_batch(engine.model, engine.tokenizer, engine.index, engine.trie, HISTORIES, k=min(5, beams), beams=beams)
    for a, b in zip(ours, theirs):
        assert [r.key for r in a] == [r.key for r in b]
        assert np.allclose([r.score for r in a], [r.score for r in b], atol=1e-4)


def test_a_batch_equals_one_user_at_a_time(engine):
    # Left padding and position ids must make batching invisible.
    batched = engine.search(HISTORIES, k=5, beams=8).recommendations
    for history, recs in zip(HISTORIES, batched):
        alone = engine.search([history], k=5, beams=8).recommendations[0]
        assert [r.key for r in recs] == [r.key for r in alone]
        assert np.allclose([r.score for r in recs], [r.score for r in alone], atol=1e-4)


def test_trace_shows_every_level_and_only_real_prefixes(engine):
    seen = []
    result = engine.search(HISTORIES[:2], k=5, beams=8, trace=True, on_step=seen.append)
    assert [s.level for s in result.steps] == list(range(engine.index.levels)) == [s.level for s in seen]
    assert [s.source for s in result.steps] == engine.index.level_sources
    prefixes = {tuple(row[:n]) for row in engine.index.codes.tolist() for n in range(1, engine.index.levels + 1)}
    for step in result.steps:
        for user_beams in step.beams:
            assert 0 < len(user_beams) <= 8
            assert all(len(code) == step.level + 1 and code in prefixes for code, _ in user_beams)
            scores = [s for _, s in user_beams]
            assert scores == sorted(scores, reverse=True)
    final = result.steps[-1].beams[0]
    assert [engine.index.key_of_code(c) for c, _ in final[:5]] == [r.key for r in result.recommendations[0]]
    assert all(r.key in engine.index.keys for recs in result.recommendations for r in recs)
    with pytest.raises(ValueError, match="beams"):
        engine.search(HISTORIES, k=10, beams=5)


@st.composite
def random_indices(draw):
    levels = draw(st.integers(1, 4))
    k = draw(st.integers(2, 6))
    n = draw(st.integers(1, min(40, k**levels)))
    flat = draw(st.lists(st.integers(0, k**levels - 1), min_size=n, max_size=n, unique=True))
    codes = np.array([[(c // k**(levels - 1 - level)) % k for level in range(levels)] for c in flat])
    return ItemIndex([f"K{i}" for i in range(n)], codes, ["semantic"] * levels, k)


class _Vocab:
    def __init__(self, index):
        self.table = torch.arange(index.levels * index.k).view(index.levels, index.k) + 1000


@settings(max_examples=60, deadline=None)
@given(random_indices())
def test_no_trie_node_has_an_empty_allowed_set(index):
    trie = CodeTrie(index, _Vocab(index))
    inner = trie.depth_of < index.levels
    assert ((trie.next_node[inner] >= 0).sum(1) > 0).all()  # every inner node continues
    assert ((trie.next_node[~inner] >= 0).sum(1) == 0).all()  # leaves do not
    assert (trie.item_of_node[~inner] >= 0).all() and (trie.item_of_node[inner] == -1).all()
    assert sorted(trie.item_of_node[~inner].tolist()) == list(range(len(index.keys)))  # one leaf per item


@pytest.fixture(scope="module")
def tiny_checkpoint(base_dir, tmp_path_factory):
    from eager.data import load_dataset
    from tests.conftest import make_cyclic_data

    root = tmp_path_factory.mktemp("serve")
    make_cyclic_data().save(root / "data" / "ml-100k")  # any registered name; the canonical form is read
    data = load_dataset("ml-100k", root / "data")
    model, tok = load_tiny(base_dir)
    recipe = replace(TEST_RECIPE, stage1=replace(TEST_RECIPE.stage1, max_steps=3))
    train_variant(data, get_variant("wo_aat"), recipe, root / "ckpt", root / "artifacts", base=str(base_dir),
                  progress=False, model=model, tokenizer=tok, index=toy_index(data), tables=toy_embeddings(data))
    return root


def test_serving_cache_gives_the_same_model_warm(tiny_checkpoint, base_dir, tmp_path):
    ckpt = tiny_checkpoint / "ckpt"
    cold, choice, first = serve_loader.load_for_serving(ckpt, "fp32", base_dir, cache_dir=tmp_path)
    warm, _, second = serve_loader.load_for_serving(ckpt, "fp32", base_dir, cache_dir=tmp_path)
    assert first["cold"] and not second["cold"] and choice.dtype == "fp32"
    reference = load_checkpoint(ckpt, "fp32", base_dir)
    ids = reference.tokenizer(reference.index.text_of("I004") + " hello", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = reference.model(ids).logits
        assert torch.allclose(cold.model(ids).logits, expected, atol=1e-5)
        assert torch.allclose(warm.model(ids).logits, expected, atol=1e-5)
    assert len(warm.tokenizer) == len(reference.tokenizer) and torch.equal(warm.vocab.table, reference.vocab.table)


def test_nf4_serving_and_the_cpu_precision_choice(tiny_checkpoint, base_dir, tmp_path, monkeypatch):
    import bitsandbytes as bnb

    monkeypatch.setattr(serve_loader, "cpu_has_bf16", lambda: False)
    choice = serve_loader.choose_serving("auto", "cpu")
    assert (choice.dtype, choice.compute_dtype) == ("nf4-mlp", "fp32") and "no native bf16" in choice.reason
    monkeypatch.setattr(serve_loader, "cpu_has_bf16", lambda: True)
    assert serve_loader.choose_serving("auto", "cpu").compute_dtype == "bf16"
    assert serve_loader.choose_serving("fp32", "cpu").compute_dtype == "fp32"
    with pytest.raises(ValueError, match="unknown dtype"):
        serve_loader.choose_serving("int3")
    from eager.cli import build_parser

    recommend = build_parser()._subparsers._group_actions[0].choices["recommend"]
    assert next(a for a in recommend._actions if a.dest == "dtype").choices == list(serve_loader.DTYPES)
    monkeypatch.setattr(serve_loader, "cpu_has_bf16", lambda: False)
    loaded, choice, _ = serve_loader.load_for_serving(tiny_checkpoint / "ckpt", "nf4", base_dir, cache_dir=tmp_path)
    assert isinstance(loaded.model.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    assert isinstance(loaded.model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert loaded.model.get_input_embeddings().weight.dtype == torch.float32  # not the cache's bf16
    engine = BeamSearchEngine.from_loaded(loaded)
    recs = engine.search([["I001", "I002"]], k=5, beams=8).recommendations[0]
    assert len(recs) == 5 and all(r.key in loaded.index.keys for r in recs)
    # nf4-mlp: the same cached model, attention left in the compute dtype, the MLPs in blocks of 32.
    mixed, choice, timings = serve_loader.load_for_serving(tiny_checkpoint / "ckpt", "nf4-mlp", base_dir, cache_dir=tmp_path)
    assert (choice.dtype, choice.compute_dtype, timings["cold"]) == ("nf4-mlp", "fp32", False)
    layer = mixed.model.model.layers[0]
    assert type(layer.self_attn.q_proj) is torch.nn.Linear and layer.self_attn.q_proj.weight.dtype == torch.float32
    assert isinstance(layer.mlp.up_proj, bnb.nn.Linear4bit) and layer.mlp.up_proj.weight.quant_state.blocksize == 32
    recs = BeamSearchEngine.from_loaded(mixed).search([["I001", "I002"]], k=5, beams=8).recommendations[0]
    assert len(recs) == 5 and all(r.key in mixed.index.keys for r in recs)


def test_bench_latency_and_throughput_cli(tiny_checkpoint, base_dir, capsys):
    from eager.cli import main

    common = ["--checkpoint", str(tiny_checkpoint / "ckpt"), "--base", str(base_dir), "--dtype", "fp32",
              "--data-root", str(tiny_checkpoint / "data"), "--beams", "8", "--k", "5", "--history", "5", "--json"]
    assert main(["bench", "latency", "--requests", "4", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["histories"] == "test users" and report["engine"]["requests"] == 4
    assert report["engine"]["p50_s"] > 0 and report["hf_generate"]["p95_s"] >= report["hf_generate"]["p50_s"]
    assert report["speedup_p50"] > 0 and report["top1_agreement"] == 1.0
    assert report["engine"]["peak_rss_mb"] > 0 and report["prompt_tokens_mean"] > 5 * 4  # 5 items, ≥ 4 code tokens each
    assert main(["bench", "throughput", "--users", "12", "--batch", "4", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engine"]["users_per_s"] > 0 and report["users"] == 12
