"""The item2index probe: given an item's title, does the model generate that item's own code?

Recommendation metrics say whether the next item is found. This says whether a model has learnt
the title → code correspondence that the item2index alignment task teaches, which is what a task-mix
lever needs in order to be read: a mix that costs recommendation quality while teaching nothing
differs from one that teaches the mapping and still costs it. The search is the serving engine's
(constrained to real codes, in the checkpoint's prompt style), so every answer is a real item.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from eager.data.dataset import InteractionData
from eager.eval.metrics import metrics_from_ranks, target_rank

PROBE_KS = (1, 10)


def probe_items(data: InteractionData, index_keys: Sequence[str], limit: int | None = None, seed: int = 0) -> list[int]:
    """Items with a title and a code, in a seeded random order (so ``limit`` takes a fair sample)."""
    coded = set(index_keys)
    titles, keys = data.titles, data.item_keys  # each a fresh list per access: read once
    items = [i for i in range(data.num_items) if titles[i].strip() and keys[i] in coded]
    if not items:
        raise ValueError(f"{data.name}: no item has both a title and a code, so there is nothing to probe")
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[j] for j in order[:limit]]


def item2index_probe(engine, data: InteractionData, limit: int | None = None, beams: int = 20,
                     batch_size: int = 8, seed: int = 0, progress: bool = True) -> dict:
    """Hit@1 and Hit@10 (with NDCG@10) of an item's own code from its title, over ``limit`` items.

    ``engine`` is a :class:`eager.decoding.engine.BeamSearchEngine`; ``chance@10`` is what guessing
    ten real items at random would score, the floor to read the hits against.
    """
    from tqdm.auto import tqdm

    k = max(PROBE_KS)
    if beams < k:
        raise ValueError(f"the probe ranks {k} items, so it needs at least {k} beams (got {beams})")
    items = probe_items(data, engine.index.keys, limit, seed)
    titles, keys = data.titles, data.item_keys
    ranks: list[int | None] = []
    for start in tqdm(range(0, len(items), batch_size), desc="item2index probe", disable=not progress):
        chunk = items[start : start + batch_size]
        prompts = [engine.style.prompt("item2index", title=titles[i]) for i in chunk]
        for item, recs in zip(chunk, engine.search_prompts(prompts, k=k, beams=beams).recommendations):
            ranks.append(target_rank([r.key for r in recs], keys[item]))
    scores = metrics_from_ranks(ranks, PROBE_KS)
    return {"task": "item2index", "hit@1": scores["recall@1"], "hit@10": scores["recall@10"],
            "ndcg@10": scores["ndcg@10"], "items": len(items), "chance@10": k / len(engine.index.keys),
            "beams": beams, "prompt_style": engine.style.name, "seed": seed}
