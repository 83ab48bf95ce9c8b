"""A checkpoint rebuilt in memory, with its index, code vocabulary and trie: what decoding runs on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from eager.decoding.trie import CodeTrie
from eager.index.item_index import ItemIndex
from eager.model.code_tokens import CodeVocabulary
from eager.model.prompts import DEFAULT_PROMPT_STYLE, recorded_history_window


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    index: ItemIndex
    vocab: CodeVocabulary
    trie: CodeTrie
    config: dict
    directory: Path

    @property
    def prompt_style(self) -> str:
        """How the checkpoint was prompted in training (checkpoints from before styles: LC-Rec's)."""
        return self.config.get("recipe", {}).get("prompt_style", DEFAULT_PROMPT_STYLE)

    @property
    def history_window(self) -> int:
        """How many of a history's last items the model reads (its training cap, at most the protocol's 20)."""
        return recorded_history_window(self.config)
