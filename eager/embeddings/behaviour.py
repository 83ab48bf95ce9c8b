"""Behaviour embeddings on disk: an item table keyed by item key, as a behaviour model exports it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eager.data.dataset import InteractionData

EMBEDDINGS_FILE = "item_embeddings.npy"


ITEM_KEYS_FILE = "item_keys.json"


def load_item_embeddings(directory: str | Path, data: InteractionData) -> np.ndarray:
    """Exported embeddings re-ordered to ``data``'s item order (keys must cover the catalogue)."""
    directory = Path(directory)
    table = np.load(directory / EMBEDDINGS_FILE)
    keys = json.loads((directory / ITEM_KEYS_FILE).read_text())
    row_of = {k: i for i, k in enumerate(keys)}
    missing = [k for k in data.item_keys if k not in row_of]
    if missing:
        raise KeyError(f"{directory}: embeddings lack {len(missing)} of {data.name}'s items (e.g. {missing[0]!r}); retrain")
    return table[[row_of[k] for k in data.item_keys]]
