"""Training samples of the instruction tasks, from the train split only."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from eager.data.dataset import InteractionData
from eager.data.split import DEFAULT_MAX_HISTORY, train_sequences
from eager.index.item_index import ItemIndex
from eager.model.prompts import (
    DEFAULT_PROMPT_STYLE,
    TASKS,
    get_prompt_style,
    history_text,
)


@dataclass(frozen=True)
class Sample:
    prompt: str
    response: str
    task: str
    target: int  # row in the index of the item the response names (-1: none)


def _prefix_pairs(sequences: Iterable[np.ndarray], max_history: int):
    """Every (history, next) pair inside each train sequence: every prefix is a sample."""
    for seq in sequences:
        for pos in range(1, len(seq)):
            yield seq[max(0, pos - max_history) : pos], int(seq[pos])


def build_samples(
    data: InteractionData,
    index: ItemIndex,
    tasks: Sequence[str] = TASKS,
    max_history: int = DEFAULT_MAX_HISTORY,
    seed: int = 0,
    users: Sequence[int] | None = None,
    style: str = DEFAULT_PROMPT_STYLE,
) -> list[Sample]:
    """Training samples from the train split only (the last two items of every user stay unseen)."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; choose from {', '.join(TASKS)}")
    rng = random.Random(seed)
    prompts = get_prompt_style(style)
    keys, titles = data.item_keys, data.titles
    row_of = [index.row(k) for k in keys]
    sequences = train_sequences(data)
    if users is not None:
        sequences = [sequences[u] for u in users]
    samples: list[Sample] = []
    if "seqrec" in tasks:
        for history, target in _prefix_pairs(sequences, max_history):
            prompt = prompts.prompt("seqrec", rng, history=history_text(index, [keys[i] for i in history]))
            samples.append(Sample(prompt, index.text_of(keys[target]), "seqrec", row_of[target]))
    with_title = [i for i in range(data.num_items) if titles[i].strip()]
    if "item2index" in tasks:
        for i in with_title:
            prompt = prompts.prompt("item2index", rng, title=titles[i])
            samples.append(Sample(prompt, index.text_of(keys[i]), "item2index", row_of[i]))
    if "index2item" in tasks:
        for i in with_title:
            prompt = prompts.prompt("index2item", rng, item=index.text_of(keys[i]))
            samples.append(Sample(prompt, titles[i], "index2item", row_of[i]))
    if "fusionseqrec" in tasks:
        for history, target in _prefix_pairs(sequences, max_history):
            hist_keys = [keys[i] for i in history]
            if rng.random() < 0.5 and titles[target].strip():
                prompt = prompts.prompt("fusion_title_out", rng, history=history_text(index, hist_keys))
                samples.append(Sample(prompt, titles[target], "fusionseqrec", row_of[target]))
            else:
                hist_titles = ", ".join(f'"{titles[i]}"' for i in history if titles[i].strip())
                prompt = prompts.prompt("fusion_index_out", rng, titles=hist_titles)
                samples.append(Sample(prompt, index.text_of(keys[target]), "fusionseqrec", row_of[target]))
    rng.shuffle(samples)
    return samples
