"""Does the index mean something? Items sharing a code prefix against random pairs.

Semantic levels: mean Jaccard overlap of title words (and of categories where the dataset has
them). Behaviour levels: how often the two items co-occur in some user's training sequence.
A lift well above 1 says the codes carry the signal they were built from.
"""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np

from eager.data.dataset import InteractionData
from eager.data.split import train_sequences
from eager.index.item_index import ItemIndex

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and the of for with in on to by from oz ml fl pack count set new".split())


def _word_sets(texts: list[str]) -> list[frozenset[str]]:
    return [frozenset(w for w in _WORD.findall(t.lower()) if len(w) > 1 and w not in _STOP) for t in texts]


def _category_sets(texts: list[str]) -> list[frozenset[str]]:
    return [frozenset(c.strip().lower() for c in t.split(",") if c.strip()) for t in texts]


def _jaccard(sets: list[frozenset[str]], pairs: np.ndarray) -> float:
    scores = []
    for i, j in pairs:
        a, b = sets[i], sets[j]
        if a or b:
            scores.append(len(a & b) / len(a | b))
    return float(np.mean(scores)) if scores else float("nan")


def same_prefix_pairs(codes: np.ndarray, max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """All item pairs sharing ``codes`` (rows = prefixes), subsampled to ``max_pairs``."""
    groups: dict[tuple, list[int]] = {}
    for item, prefix in enumerate(map(tuple, codes.tolist())):
        groups.setdefault(prefix, []).append(item)
    pairs = np.array([p for members in groups.values() for p in combinations(members, 2)], dtype=np.int64)
    if len(pairs) > max_pairs:
        pairs = pairs[rng.choice(len(pairs), max_pairs, replace=False)]
    return pairs.reshape(-1, 2)


def random_pairs(num_items: int, count: int, rng: np.random.Generator) -> np.ndarray:
    pairs = rng.integers(0, num_items, size=(count, 2))
    return pairs[pairs[:, 0] != pairs[:, 1]]


def cooccurring_pairs(data: InteractionData) -> set[int]:
    """Item pairs (encoded i·N + j, i < j) that appear together in some training sequence."""
    n = data.num_items
    encoded = []
    for seq in train_sequences(data):
        items = np.unique(seq)
        if len(items) > 1:
            i, j = np.triu_indices(len(items), 1)
            encoded.append(items[i] * n + items[j])
    return set(np.concatenate(encoded).tolist()) if encoded else set()


def _cooccur_rate(pairs: np.ndarray, together: set[int], n: int) -> float:
    lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    return float(np.mean([int(x) in together for x in (lo * n + hi)])) if len(pairs) else float("nan")


def _lift(same: float, rand: float) -> float:
    return same / rand if rand > 0 else float("inf")


def meaning_report(index: ItemIndex, data: InteractionData, max_pairs: int = 100_000, seed: int = 0) -> dict:
    """For the first level of each source: overlap of same-prefix pairs vs random pairs."""
    rng = np.random.default_rng(seed)
    rows = [index.row(k) for k in data.item_keys]
    codes = index.codes[rows]
    rand = random_pairs(data.num_items, max_pairs, rng)
    report: dict = {}
    sources = index.level_sources
    if "semantic" in sources:
        first = sources.index("semantic")
        same = same_prefix_pairs(codes[:, first : first + 1], max_pairs, rng)
        titles = _word_sets(data.titles)
        entry = {"pairs": len(same), "title_jaccard_same": _jaccard(titles, same),
                 "title_jaccard_random": _jaccard(titles, rand)}
        entry["title_lift"] = _lift(entry["title_jaccard_same"], entry["title_jaccard_random"])
        if "categories" in data.text_fields:
            cats = _category_sets(data.items["categories"].tolist())
            entry["category_jaccard_same"] = _jaccard(cats, same)
            entry["category_jaccard_random"] = _jaccard(cats, rand)
            entry["category_lift"] = _lift(entry["category_jaccard_same"], entry["category_jaccard_random"])
        report["semantic_level1"] = entry
    if "behaviour" in sources:
        first = sources.index("behaviour")
        same = same_prefix_pairs(codes[:, first : first + 1], max_pairs, rng)
        together = cooccurring_pairs(data)
        entry = {"pairs": len(same), "cooccur_same": _cooccur_rate(same, together, data.num_items),
                 "cooccur_random": _cooccur_rate(rand, together, data.num_items)}
        entry["cooccur_lift"] = _lift(entry["cooccur_same"], entry["cooccur_random"])
        report["behaviour_level1"] = entry
    return report
