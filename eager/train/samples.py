"""Training samples of the instruction tasks, from the train split only.

Two kinds. A :class:`Sample` is one prompt and one response (the loss on the response): LC-Rec's
per-prefix form, where a user with n items gives n − 1 seqrec samples and O(n²) tokens. A
:class:`HistorySample` is a user's history written in the ``sequence`` prompt style, where every
prefix is the serving prompt at that point in time; the loss falls on every item's code from
``supervised_from`` on, so one forward pass trains each next-item prediction once, in O(n) tokens.
""" 

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from eager.data.dataset import InteractionData
from eager.data.split import DEFAULT_MAX_HISTORY, train_sequences
from eager.index.item_index import ItemIndex
from eager.model.prompts import DEFAULT_PROMPT_STYLE, SEQUENCE_STYLE, TASKS, get_prompt_style, history_text


@dataclass(frozen=True)
class Sample:
    prompt: str
    response: str
    task: str
    target: int  # row in the index of the item the response names (-1: none)


@dataclass(frozen=True)
class HistorySample:
    """A window of a user's history in the ``sequence`` style: ``text`` writes the items of ``rows``
    (index rows, oldest first); items ``supervised_from`` onwards are predicted, each from
    everything before it in the window (GCT, when on, at the position that predicts each one)."""

    text: str
    rows: tuple[int, ...]
    supervised_from: int
    task: str = "seqrec"

    @property
    def targets(self) -> tuple[int, ...]:
        return self.rows[self.supervised_from:]


TrainingSample = Sample | HistorySample


def history_windows(length: int, max_history: int) -> list[tuple[int, int, int]]:
    """(start, end, first supervised position) of the windows a history of ``length`` items is cut into.

    A window holds at most ``max_history`` + 1 items, and every item but the first is supervised
    exactly once. The first window starts at the first item; each later one ends half a window
    further and starts as far back as the window allows, so an item it supervises reads at least
    half a window of real history (more when it sits further in).
    """
    span = max_history + 1
    if length < 2:
        return []
    end = min(length, span)
    windows = [(0, end, 1)]
    stride = max(1, max_history // 2)
    while end < length:
        new_end = min(length, end + stride)
        start = new_end - span if new_end - span > 0 else 0
        windows.append((start, new_end, end - start))
        end = new_end
    return windows


def history_samples(index: ItemIndex, keys: Sequence[str], sequences: Iterable[np.ndarray], max_history: int,
                    style: str = SEQUENCE_STYLE) -> list[HistorySample]:
    """Each train sequence as whole-history windows (:func:`history_windows`)."""
    prompts = get_prompt_style(style)
    row_of = {k: index.row(k) for k in keys}
    samples = []
    for seq in sequences:
        for start, end, first in history_windows(len(seq), max_history):
            window = [keys[i] for i in seq[start:end]]
            text = prompts.prompt("seqrec", history=history_text(index, window, style))
            samples.append(HistorySample(text, tuple(row_of[k] for k in window), first))
    return samples


def per_prefix_history_samples(sample: HistorySample, index: ItemIndex, style: str = SEQUENCE_STYLE) -> list[HistorySample]:
    """The same predictions as ``sample``, one sample per supervised item, in the same format: what
    the whole-history sample must equal (its loss is their mean)."""
    prompts = get_prompt_style(style)
    keys = [index.keys[r] for r in sample.rows]
    return [HistorySample(prompts.prompt("seqrec", history=history_text(index, keys[: t + 1], style)),
                          sample.rows[: t + 1], t, sample.task)
            for t in range(sample.supervised_from, len(sample.rows))]


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
) -> list[TrainingSample]:
    """Training samples from the train split only (the last two items of every user stay unseen).

    In the ``sequence`` style seqrec comes as whole histories (:class:`HistorySample`); the other
    tasks stay one prompt and one response."""
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
    samples: list[TrainingSample] = []
    if "seqrec" in tasks and style == SEQUENCE_STYLE:
        samples += history_samples(index, keys, sequences, max_history, style)
    elif "seqrec" in tasks:
        for history, target in _prefix_pairs(sequences, max_history):
            prompt = prompts.prompt("seqrec", rng, history=history_text(index, [keys[i] for i in history], style))
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
                prompt = prompts.prompt("fusion_title_out", rng, history=history_text(index, hist_keys, style))
                samples.append(Sample(prompt, titles[target], "fusionseqrec", row_of[target]))
            else:
                hist_titles = ", ".join(f'"{titles[i]}"' for i in history if titles[i].strip())
                prompt = prompts.prompt("fusion_index_out", rng, titles=hist_titles)
                samples.append(Sample(prompt, index.text_of(keys[target]), "fusionseqrec", row_of[target]))
    rng.shuffle(samples)
    return samples
