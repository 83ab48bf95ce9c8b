"""The one in-memory form every dataset is loaded into.

Items are numbered 0..n-1 *inside a process* only; anything written to disk is keyed by the
item's external key (ASIN or movie id) so artifacts survive a different local numbering.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

TEXT_FIELDS = ("title", "brand", "categories", "description")
# Shown beside an item, never read by a model: the product picture's web address, where the
# official metadata has one (the benchmark copies do not).
IMAGE_FIELD = "image"
ITEMS_FILE = "items.jsonl"
SEQUENCES_FILE = "sequences.jsonl"
META_FILE = "dataset.json"


@dataclass
class InteractionData:
    """A catalogue plus per-user chronological item sequences.

    ``items`` has one row per item, in internal-index order, with a ``key`` column (the stable
    external id) and the text columns in :data:`TEXT_FIELDS` ("" where a field is unknown).
    ``sequences[u]`` is user ``u``'s items as internal indices, oldest first.
    """

    name: str
    items: pd.DataFrame
    user_keys: list[str]
    sequences: list[np.ndarray]
    text_fields: tuple[str, ...] = ()
    source: str = ""
    _key_to_index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.user_keys) != len(self.sequences):
            raise ValueError(
                f"{self.name}: {len(self.user_keys)} user keys but {len(self.sequences)} sequences"
            )
        for column in ("key", *TEXT_FIELDS):
            if column not in self.items.columns:
                self.items[column] = ""
        self.items = self.items.reset_index(drop=True)
        if self.items["key"].duplicated().any():
            dup = self.items.loc[self.items["key"].duplicated(), "key"].iloc[0]
            raise ValueError(f"{self.name}: item key {dup!r} appears twice in the catalogue")

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def item_keys(self) -> list[str]:
        return self.items["key"].tolist()

    @property
    def titles(self) -> list[str]:
        return self.items["title"].tolist()

    def key_to_index(self) -> dict[str, int]:
        if self._key_to_index is None:
            self._key_to_index = {k: i for i, k in enumerate(self.items["key"])}
        return self._key_to_index

    def indices_of(self, keys: list[str]) -> list[int]:
        """Internal indices of external keys; unknown keys raise a KeyError naming them."""
        lookup = self.key_to_index()
        missing = [k for k in keys if k not in lookup]
        if missing:
            shown = ", ".join(repr(k) for k in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise KeyError(
                f"unknown item key(s) for dataset {self.name!r}: {shown}{more}. "
                f"Keys are the catalogue's external ids (e.g. {self.items['key'].iloc[0]!r})."
            )
        return [lookup[k] for k in keys]

    def stats(self) -> dict[str, int]:
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
        }

    # --- canonical on-disk form -------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the canonical form: items.jsonl, sequences.jsonl (keyed), dataset.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        keys = self.items["key"].tolist()
        with open(directory / ITEMS_FILE, "w", encoding="utf-8") as f:
            columns = ["key", *TEXT_FIELDS, *([IMAGE_FIELD] if IMAGE_FIELD in self.items else [])]
            for row in self.items[columns].to_dict("records"):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        with open(directory / SEQUENCES_FILE, "w", encoding="utf-8") as f:
            for user, seq in zip(self.user_keys, self.sequences):
                f.write(json.dumps({"user": user, "items": [keys[i] for i in seq]}) + "\n")
        meta = {"name": self.name, "source": self.source, "text_fields": list(self.text_fields)}
        meta.update(self.stats())
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> "InteractionData":
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        items = pd.read_json(directory / ITEMS_FILE, lines=True, dtype=False)
        items = items.fillna("").astype({c: str for c in ("key", *TEXT_FIELDS, IMAGE_FIELD) if c in items})
        lookup = {k: i for i, k in enumerate(items["key"])}
        user_keys, sequences = [], []
        with open(directory / SEQUENCES_FILE, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                user_keys.append(str(row["user"]))
                sequences.append(np.array([lookup[k] for k in row["items"]], dtype=np.int64))
        return cls(
            name=name or meta["name"],
            items=items,
            user_keys=user_keys,
            sequences=sequences,
            text_fields=tuple(meta.get("text_fields", ())),
            source=meta.get("source", str(directory)),
        )


def items_frame(keys: list[str], **text_columns: list[str]) -> pd.DataFrame:
    """Build an item table from parallel lists, filling missing text fields with ''."""
    frame = pd.DataFrame({"key": [str(k) for k in keys]})
    for column in TEXT_FIELDS:
        values = text_columns.get(column)
        frame[column] = [("" if v is None else str(v)) for v in values] if values else ""
    return frame
