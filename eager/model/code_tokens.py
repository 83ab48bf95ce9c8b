"""Add an item index's code tokens to a tokenizer and a (tied) embedding table.

Token ids are looked up from the tokenizer after adding, never assumed. New rows start

- ``"mean"``: at the mean of the existing embeddings (what ``resize_token_embeddings`` does), all
  alike, so training alone tells them apart;
- ``"text"``: at the mean embedding of the words in the titles of the items under that code, so a
  code token starts near what its items are about (and, the embeddings being tied, is scored like
  those words at the output too);
- ``"mean+text"``: at the mean row plus what sets this code's titles apart from the other codes of
  its level (its title vector minus the level's average), a neutral start that still carries the
  titles' differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from eager.data.dataset import InteractionData
from eager.index.item_index import ItemIndex, code_token

TOKEN_INITS = ("mean", "text", "mean+text")


@dataclass(frozen=True)
class CodeVocabulary:
    """Token ids of every (level, code value) pair, as a dense (levels × k) table (-1 = unused)."""

    table: torch.Tensor

    @property
    def levels(self) -> int:
        return self.table.shape[0]

    def ids_for(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(…, levels) code values → (…, levels) token ids."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        ids = self.table[torch.arange(self.levels), codes]
        if (ids < 0).any():
            raise ValueError("a code value has no token in this vocabulary")
        return ids

    def all_ids(self) -> torch.Tensor:
        return self.table[self.table >= 0]


def code_vocabulary(tokenizer, index: ItemIndex) -> CodeVocabulary:
    table = torch.full((index.levels, index.k), -1, dtype=torch.long)
    for level in range(index.levels):
        for value in np.unique(index.codes[:, level]):
            token_id = tokenizer.convert_tokens_to_ids(code_token(level, int(value)))
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise KeyError(f"token {code_token(level, int(value))} is not in the tokenizer; call add_code_tokens first")
            table[level, int(value)] = token_id
    return CodeVocabulary(table)


def add_code_tokens(
    model, tokenizer, index: ItemIndex, init: str = "text", data: InteractionData | None = None
) -> CodeVocabulary:
    """Extend tokenizer + embeddings with the index's tokens; return their id table."""
    if init not in TOKEN_INITS:
        raise ValueError(f"unknown token init {init!r}; choose one of: {', '.join(TOKEN_INITS)}")
    tokens = index.all_tokens()
    tokenizer.add_tokens(tokens, special_tokens=False)
    old_size = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    vocab = code_vocabulary(tokenizer, index)
    embeddings = model.get_input_embeddings().weight
    with torch.no_grad():
        base = embeddings[:old_size]
        mean_row = base.mean(0)
        embeddings[old_size:] = mean_row
        if init in ("text", "mean+text"):
            if data is None:
                raise ValueError(f"init={init!r} needs the dataset (item titles)")
            for level, rows in enumerate(_title_rows(base, tokenizer, index, data)):
                if not rows:
                    continue
                ids = torch.as_tensor(list(rows))
                vectors = torch.stack(list(rows.values()))
                if init == "mean+text":
                    vectors = mean_row.float() + vectors - vectors.mean(0)
                embeddings[vocab.table[level, ids]] = vectors.to(embeddings.dtype)
    return vocab


def _title_rows(base, tokenizer, index: ItemIndex, data: InteractionData) -> list[dict[int, torch.Tensor]]:
    """Per level, {code value: mean word embedding of the titles of the items under it}.

    Codes whose items have no title are left out (they keep the mean row)."""
    titles = dict(zip(data.item_keys, data.titles))
    item_vectors = np.zeros((len(index.keys), base.shape[1]), dtype=np.float32)
    has_text = np.zeros(len(index.keys), dtype=bool)
    encoded = tokenizer([titles.get(key, "") for key in index.keys], add_special_tokens=False)["input_ids"]
    for row, ids in enumerate(encoded):
        ids = [i for i in ids if i < base.shape[0]]
        if ids:
            item_vectors[row] = base[ids].float().mean(0).numpy()
            has_text[row] = True
    levels = []
    for level in range(index.levels):
        rows = {}
        for value in np.unique(index.codes[:, level]):
            members = (index.codes[:, level] == value) & has_text
            if members.any():
                rows[int(value)] = torch.as_tensor(item_vectors[members].mean(0))
        levels.append(rows)
    return levels
