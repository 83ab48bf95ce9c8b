"""Instruction tasks in LC-Rec's style: seqrec, item2index, index2item, fusionseqrec.

Every sample is (prompt, response, task, target item row). The prompt is LC-Rec's wrapper around
one of several instruction templates; the loss is taken on the response only. Evaluation always
uses one fixed seqrec template (the style's first).

A second prompt style, ``compact``, drops the wrapper and keeps one terse template per task: a
sample is ~2.2x fewer tokens, which is what a CPU run is bound by. A checkpoint records its style
(``recipe.prompt_style``) and everything that prompts it (evaluation, serving, the demo) uses it.

A third, ``sequence``, writes a history as the items' codes each closed by a separator, after a
short prefix, and nothing after it: ``Items:<a_1><b_2><c_3><d_4>,<a_5>…,``. Every prefix of a
user's whole history written this way is exactly the serving prompt at that point in time, so one
forward pass over the whole history trains every next-item prediction in it (eager.train.samples).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from eager.data.split import DEFAULT_MAX_HISTORY
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
    separator: str = ", "  # between the items of a history
    # Each item closed by the separator (the last one too) rather than the items joined by it: the
    # prompt then ends where the next item's code begins, whatever the history's length.
    closed: bool = False

    def history(self, codes: Sequence[str]) -> str:
        """A history of item codes (each the concatenation of its code tokens) as this style writes it."""
        return "".join(code + self.separator for code in codes) if self.closed else self.separator.join(codes)

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
        PromptStyle("sequence", "{instruction}", {
            "seqrec": ("Items:{history}",),
            "item2index": ("Title: {title}\nItem:",),
            "index2item": ("Item: {item}\nTitle:",),
            "fusion_title_out": ("Items:{history}\nNext item's title:",),
            "fusion_index_out": ("Titles: {titles}\nNext item:",),
        }, separator=",", closed=True),
    )
}

SEQUENCE_STYLE = "sequence"


DEFAULT_PROMPT_STYLE = "lcrec"  # what checkpoints from before prompt styles were trained on


def get_prompt_style(name: str) -> PromptStyle:
    if name not in PROMPT_STYLES:
        raise KeyError(f"unknown prompt style {name!r}; choose one of: {', '.join(PROMPT_STYLES)}")
    return PROMPT_STYLES[name]


def history_text(index: ItemIndex, keys: Sequence[str], style: str = DEFAULT_PROMPT_STYLE) -> str:
    return get_prompt_style(style).history([index.text_of(k) for k in keys])


def seqrec_prompt(index: ItemIndex, history_keys: Sequence[str], style: str = DEFAULT_PROMPT_STYLE) -> str:
    """The fixed evaluation prompt of ``style`` for a history of item keys."""
    return get_prompt_style(style).prompt("seqrec", history=history_text(index, history_keys, style))


def history_window(max_history: int) -> int:
    """How many of a history's last items a model trained with the history cap ``max_history`` reads:
    its cap, within the protocol's 20 (evaluation never gives a model more)."""
    return min(max_history, DEFAULT_MAX_HISTORY)


def recorded_history_window(config: dict) -> int:
    """The history window of the model a checkpoint's ``config.json`` describes."""
    return history_window(config.get("recipe", {}).get("max_history", DEFAULT_MAX_HISTORY))
