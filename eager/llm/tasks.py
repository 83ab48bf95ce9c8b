"""Instruction tasks in LC-Rec's style: seqrec, item2index, index2item, fusionseqrec.

Every sample is (prompt, response, task, target item row). The prompt is LC-Rec's wrapper around
one of several instruction templates; the loss is taken on the response only. Evaluation always
uses one fixed seqrec template (the style's first).

A second prompt style, ``compact``, drops the wrapper and keeps one terse template per task: a
sample is ~2.2x fewer tokens, which is what a CPU run is bound by. A checkpoint records its style
(``recipe.prompt_style``) and everything that prompts it (evaluation, serving, the demo) uses it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from eager.data.dataset import InteractionData
from eager.data.split import DEFAULT_MAX_HISTORY, train_sequences
from eager.index.item_index import ItemIndex

WRAPPER = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "seqrec": (
        "The user has interacted with items {history} in chronological order. Can you predict the next possible item that the user may expect?",
        "Here is the purchase history of a user: {history}. Predict the next item the user is likely to buy.",
        "Given the items the user bought so far, {history}, which item will the user choose next?",
        "Based on the user's historical interactions {history}, recommend the next item.",
    ),
    "item2index": (
        "Which item has the title: {title}?",
        "An item is called \"{title}\". What is its item index?",
        "Give the index of the item titled {title}.",
    ),
    "index2item": (
        "What is the title of item {item}?",
        "Item {item}: what is it called?",
        "Tell me the title of the item with index {item}.",
    ),
    "fusion_title_out": (
        "The user has sequentially interacted with items {history}. Can you recommend the next item? Tell me the title of the item.",
        "From the interaction history {history}, what is the title of the item the user will buy next?",
    ),
    "fusion_index_out": (
        "Given the titles of the items the user interacted with, {titles}, can you recommend a suitable next item for the user?",
        "The user bought, in order: {titles}. Which item should be recommended next?",
    ),
}
TASKS = ("seqrec", "item2index", "index2item", "fusionseqrec")


@dataclass(frozen=True)
class PromptStyle:
    name: str
    wrapper: str  # with an {instruction} slot
    templates: dict[str, tuple[str, ...]]  # the first seqrec template is the evaluation one

    def wrap(self, instruction: str) -> str:
        return self.wrapper.format(instruction=instruction)

    def prompt(self, task: str, rng: random.Random | None = None, **fields: str) -> str:
        """A prompt for ``task`` (a random template when ``rng`` is given, else the first)."""
        options = self.templates[task]
        return self.wrap((rng.choice(options) if rng is not None else options[0]).format(**fields))


PROMPT_STYLES = {
    style.name: style
    for style in (
        PromptStyle("lcrec", WRAPPER, TEMPLATES),
        PromptStyle("compact", "{instruction}", {
            "seqrec": ("Items: {history}\nNext item:",),
            "item2index": ("Title: {title}\nItem:",),
            "index2item": ("Item: {item}\nTitle:",),
            "fusion_title_out": ("Items: {history}\nNext item's title:",),
            "fusion_index_out": ("Titles: {titles}\nNext item:",),
        }),
    )
}


DEFAULT_PROMPT_STYLE = "lcrec"  # what checkpoints from before prompt styles were trained on


def get_prompt_style(name: str) -> PromptStyle:
    if name not in PROMPT_STYLES:
        raise KeyError(f"unknown prompt style {name!r}; choose one of: {', '.join(PROMPT_STYLES)}")
    return PROMPT_STYLES[name]


@dataclass(frozen=True)
class Sample:
    prompt: str
    response: str
    task: str
    target: int  # row in the index of the item the response names (-1: none)


def history_text(index: ItemIndex, keys: Sequence[str]) -> str:
    return ", ".join(index.text_of(k) for k in keys)


def seqrec_prompt(index: ItemIndex, history_keys: Sequence[str], style: str = DEFAULT_PROMPT_STYLE) -> str:
    """The fixed evaluation prompt of ``style`` for a history of item keys."""
    return get_prompt_style(style).prompt("seqrec", history=history_text(index, history_keys))


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
