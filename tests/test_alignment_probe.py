"""The item2index probe: which items it asks about, and how it scores the answers."""

import math
from dataclasses import replace

import pytest

from eager.data.dataset import items_frame
from eager.decoding.engine import SearchResult
from eager.decoding.trie import Recommendation
from eager.eval.alignment import item2index_probe, probe_items
from eager.model.prompts import get_prompt_style
from tests.conftest import make_cyclic_data
from tests.tiny import toy_index


class AnsweringEngine:
    """Answers each item2index prompt with the items from ``shift`` places after the asked one on."""

    def __init__(self, data, index, shift: int):
        self.index, self.style, self.shift = index, get_prompt_style("compact"), shift
        self.asked = {self.style.prompt("item2index", title=t): i for i, t in enumerate(data.titles) if t}
        self.keys, self.prompts_seen = data.item_keys, []

    def search_prompts(self, prompts, k, beams):
        self.prompts_seen += prompts
        n = len(self.keys)
        return SearchResult([[Recommendation(self.keys[(self.asked[p] + self.shift + j) % n], "", 0.0) for j in range(k)]
                             for p in prompts])


@pytest.fixture
def titled_data():
    """The 50-item cyclic catalogue with items 0, 7 and 13 left without a title."""
    data = make_cyclic_data()
    titles = ["" if i in (0, 7, 13) else t for i, t in enumerate(data.titles)]
    return replace(data, items=items_frame(data.item_keys, title=titles))


def test_probe_asks_about_titled_items_in_a_seeded_order(titled_data):
    index = toy_index(titled_data)
    every = probe_items(titled_data, index.keys)
    assert sorted(every) == [i for i in range(50) if i not in (0, 7, 13)]
    assert every != sorted(every)  # shuffled, so --limit takes a fair sample, not the first ids
    assert probe_items(titled_data, index.keys, limit=10) == every[:10] == probe_items(titled_data, index.keys, 10)
    assert probe_items(titled_data, index.keys, limit=10, seed=1) != every[:10]
    coded = titled_data.item_keys[:20]  # an index covering only the first 20 items
    assert sorted(probe_items(titled_data, coded)) == [i for i in range(20) if i not in (0, 7, 13)]
    untitled = replace(titled_data, items=items_frame(titled_data.item_keys))
    with pytest.raises(ValueError, match="no item has both a title and a code"):
        probe_items(untitled, index.keys)


@pytest.mark.parametrize("shift, hit1, hit10, ndcg10", [
    (0, 1.0, 1.0, 1.0),  # its own code first
    (-3, 0.0, 1.0, 1 / math.log2(5)),  # its own code fourth
    (5, 0.0, 0.0, 0.0),  # never among the ten
])
def test_probe_scores_where_each_item_lands_among_the_answers(titled_data, shift, hit1, hit10, ndcg10):
    index = toy_index(titled_data)
    engine = AnsweringEngine(titled_data, index, shift)
    report = item2index_probe(engine, titled_data, limit=12, batch_size=5, progress=False)
    assert report["items"] == 12 == len(engine.prompts_seen)  # three batches of at most five
    assert engine.prompts_seen == [engine.style.prompt("item2index", title=titled_data.titles[i])
                                   for i in probe_items(titled_data, index.keys, 12)]
    assert (report["hit@1"], report["hit@10"]) == (hit1, hit10) and report["ndcg@10"] == pytest.approx(ndcg10)
    assert report["chance@10"] == pytest.approx(10 / 50) and report["prompt_style"] == "compact"
    with pytest.raises(ValueError, match="at least 10 beams"):
        item2index_probe(engine, titled_data, beams=8)
