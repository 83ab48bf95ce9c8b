"""Balanced hierarchical k-means, the item index, its meaning check, figure and CLI."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.baselines.sasrec import SASREC_SMOKE_CONFIG, run_sasrec
from eager.cli import main
from eager.index.balanced_kmeans import (
    BalancedKMeansConfig,
    balanced_assign,
    balanced_hierarchical_codes,
    required_depth,
)
from eager.index.build import IndexConfig, build_index
from eager.index.figures import code_tree_figure
from eager.index.item_index import ItemIndex
from eager.index.meaning import meaning_report


@given(
    n=st.integers(1, 400),
    k=st.integers(2, 20),
    dim=st.integers(1, 8),
    seed=st.integers(0, 3),
)
@settings(max_examples=60, deadline=None)
def test_codes_are_unique_bounded_and_balanced(n, k, dim, seed):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    codes = balanced_hierarchical_codes(x, BalancedKMeansConfig(k=k, iterations=5, refinements=2, seed=seed))
    depth = required_depth(n, k)
    assert codes.shape == (n, depth)
    assert len({tuple(r) for r in codes.tolist()}) == n  # no collisions
    assert codes.min() >= 0 and codes.max() < k
    branches = min(k, n)  # codebook size at every level
    for level in range(depth):
        parents = {}
        for row in codes.tolist():
            parents.setdefault(tuple(row[:level]), []).append(row[level])
        for children in parents.values():
            sizes = np.bincount(children, minlength=branches)[:branches]
            lo, hi = len(children) // branches, -(-len(children) // branches)
            assert sizes.min() >= lo and sizes.max() <= hi


@given(st.integers(1, 60), st.integers(1, 12), st.integers(0, 5))
@settings(max_examples=40, deadline=None)
def test_balanced_assign_sizes(n, k, seed):
    dist = np.random.default_rng(seed).random((n, k))
    out = balanced_assign(dist)
    sizes = np.bincount(out, minlength=k)
    assert sizes.min() >= n // k and sizes.max() <= -(-n // k)


def test_duplicate_points_still_get_unique_codes():
    x = np.zeros((50, 4), dtype=np.float32)
    codes = balanced_hierarchical_codes(x, BalancedKMeansConfig(k=8))
    assert len({tuple(r) for r in codes.tolist()}) == 50


def test_deterministic_for_a_seed():
    x = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    a = balanced_hierarchical_codes(x, BalancedKMeansConfig(k=16, seed=3))
    b = balanced_hierarchical_codes(x, BalancedKMeansConfig(k=16, seed=3))
    assert np.array_equal(a, b)


def test_clusters_follow_the_geometry():
    # Four far-apart blobs of 16 points, k=4: each blob should be exactly one level-1 code.
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 50
    x = np.concatenate([c + rng.normal(size=(16, 8)) for c in centres]).astype(np.float32)
    codes = balanced_hierarchical_codes(x, BalancedKMeansConfig(k=4))
    for blob in range(4):
        assert len(set(codes[blob * 16 : (blob + 1) * 16, 0])) == 1


def _two_topic_embeddings(data):
    # Semantic signal = the item's parity; behaviour signal = its position on the cycle.
    n = data.num_items
    sem = np.stack([np.arange(n) % 2, np.zeros(n)], 1).astype(np.float32) + 0.01 * np.random.default_rng(0).normal(size=(n, 2))
    angle = 2 * np.pi * np.arange(n) / n
    beh = np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32)
    return {"semantic": sem, "behaviour": beh}


def test_dual_index_file_roundtrip_and_stats(cyclic_data, tmp_path):
    config = IndexConfig(source="dual", kmeans=BalancedKMeansConfig(k=8))
    index = build_index(cyclic_data, config, embeddings=_two_topic_embeddings(cyclic_data))
    stats = index.stats()
    assert stats["items"] == 50 and stats["tokens_per_item"] == 4 and stats["collisions"] == 0
    assert index.level_sources == ["semantic", "semantic", "behaviour", "behaviour"]
    assert stats["largest_group_sharing_prefix"]["prefix_2"] == 1
    text = index.text_of("I007")
    assert text.startswith("<a_") and "<d_" in text and text.count("<") == 4
    again = ItemIndex.load(index.save(tmp_path))
    assert again.keys == index.keys and np.array_equal(again.codes, index.codes)
    assert again.key_of_code(index.code_of("I007")) == "I007"
    saved = json.loads((tmp_path / "index.json").read_text())
    assert saved["config"]["kmeans"]["k"] == 8 and saved["stats"]["collisions"] == 0
    with pytest.raises(KeyError, match="nope"):
        index.code_of("nope")


def test_single_source_indices(cyclic_data):
    emb = _two_topic_embeddings(cyclic_data)
    sem = build_index(cyclic_data, IndexConfig(source="semantic", kmeans=BalancedKMeansConfig(k=8)), embeddings={"semantic": emb["semantic"]})
    beh = build_index(cyclic_data, IndexConfig(source="behaviour", kmeans=BalancedKMeansConfig(k=8)), embeddings={"behaviour": emb["behaviour"]})
    assert sem.level_sources == ["semantic"] * 2 and beh.level_sources == ["behaviour"] * 2
    assert sem.stats()["collisions"] == 0 == beh.stats()["collisions"]


def test_meaning_report_detects_signal(cyclic_data):
    cyclic_data.items["title"] = [("red lipstick gloss" if i % 2 else "blue shampoo bottle") + f" {i}" for i in range(50)]
    index = build_index(cyclic_data, IndexConfig(kmeans=BalancedKMeansConfig(k=8)), embeddings=_two_topic_embeddings(cyclic_data))
    report = meaning_report(index, cyclic_data)
    assert report["semantic_level1"]["title_lift"] > 1.5
    # Neighbours on the cycle co-occur in training sequences far more often than random pairs.
    assert report["behaviour_level1"]["cooccur_lift"] > 1.5


def test_code_tree_figure_highlights(cyclic_data):
    index = build_index(cyclic_data, IndexConfig(kmeans=BalancedKMeansConfig(k=8)), embeddings=_two_topic_embeddings(cyclic_data))
    fig = code_tree_figure(index, cyclic_data, highlight=["I003"])
    trace = fig.data[0]
    leaf = [i for i in trace.ids if i.endswith("|I003")]
    assert len(leaf) == 1 and trace.marker.colors[list(trace.ids).index(leaf[0])] == "#d62728"
    assert "item number 3" in trace.hovertext[list(trace.ids).index(leaf[0])]
    tops = [i for i, p in zip(trace.ids, trace.parents) if p == ""]
    assert sum(v for i, v in zip(trace.ids, trace.values) if i in tops) == 50
    with pytest.raises(KeyError):
        code_tree_figure(index, cyclic_data, highlight=["missing"])
    merged = code_tree_figure(index, cyclic_data, highlight=["I003"], merge_collapsed=True).data[0]
    merged_tops = [i for i, p in zip(merged.ids, merged.parents) if p == ""]
    assert "other" in merged_tops and len(merged_tops) == 2  # the opened branch + one wedge for the rest
    opened = next(v for i, v in zip(merged.ids, merged.values) if i in merged_tops and i != "other")
    assert f"({50 - opened} items)" in merged.labels[list(merged.ids).index("other")]
    fig_b = code_tree_figure(index, cyclic_data, source="behaviour")
    assert fig_b.data[0].ids[0].startswith("<c_")


def test_cli_builds_a_dual_index_end_to_end(cyclic_data, tmp_path, capsys):
    """Real MiniLM text encoder + a real (smoke) SASRec behaviour artifact, through the CLI."""
    root = tmp_path / "data"
    cyclic_data.items.loc[3, "title"] = ""  # a text-less item still gets codes
    cyclic_data.save(root / "Beauty")  # the canonical form is found under the Beauty folder
    artifacts = tmp_path / "artifacts"
    assert main(["index", "build", "--dataset", "beauty", "--data-root", str(root), "--artifacts", str(artifacts),
                 "--k", "8", "--json"]) == 2
    assert "eager baseline sasrec --dataset beauty" in capsys.readouterr().err
    from eager.data import load_dataset

    data = load_dataset("beauty", root)
    run_sasrec(data, SASREC_SMOKE_CONFIG, artifacts / "beauty" / "sasrec", progress=False)
    assert main(["index", "build", "--dataset", "beauty", "--data-root", str(root), "--artifacts", str(artifacts),
                 "--k", "8", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["items"] == 50 and stats["tokens_per_item"] == 4 and stats["collisions"] == 0
    assert "semantic_level1" in stats["meaning"] and "behaviour_level1" in stats["meaning"]
    meta = json.loads((artifacts / "beauty" / "semantic" / "minilm" / "meta.json").read_text())
    assert meta["encoder"] == "minilm" and meta["textless_items"] == 1 and meta["dim"] == 384
    emb = np.load(artifacts / "beauty" / "semantic" / "minilm" / "embeddings.npy")
    assert np.isfinite(emb).all() and np.linalg.norm(emb[3]) > 0
