"""eager.lab.codes_compare: two indices of one catalogue, side by side."""

import numpy as np

from eager.index.balanced_kmeans import BalancedKMeansConfig
from eager.index.build import IndexConfig, build_index
from eager.lab.codes_compare import compare_indices
from tests.tiny import toy_embeddings


def test_a_rebuilt_behaviour_half_keeps_every_semantic_half(cyclic_data):
    tables = toy_embeddings(cyclic_data)
    config = IndexConfig(source="dual", kmeans=BalancedKMeansConfig(k=8))
    old = build_index(cyclic_data, config, embeddings=tables)
    shuffled = {**tables, "behaviour": tables["behaviour"][np.random.default_rng(1).permutation(cyclic_data.num_items)]}
    new = build_index(cyclic_data, config, embeddings=shuffled)
    report = compare_indices(old, new, cyclic_data)
    assert report["items_with_the_same_semantic_half"] == cyclic_data.num_items
    assert report["old"]["stats"]["collisions"] == report["new"]["stats"]["collisions"] == 0
    behaviour = [report[side]["meaning"]["behaviour_level1"]["cooccur_lift"] for side in ("old", "new")]
    # the cyclic catalogue's behaviour table places each item beside its successor: shuffled, that is lost
    assert behaviour[0] > behaviour[1]
