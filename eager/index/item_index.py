"""Item indices: each item's code path written as new tokens, keyed by the item's external key.

``dual`` (the paper's DKI) is the semantic path followed by the behaviour path, e.g.
``<a_12><b_7><c_3><d_200>``; ``semantic`` (the ``w/o DKI`` ablation) and ``behaviour`` use one
source. Level ``i`` of the whole path gets the letter ``chr(ord('a') + i)``, so a token names its
position and a code value, never a vocabulary id.
"""

from __future__ import annotations

import re

import json
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

INDEX_FILE = "index.json"
SOURCES = ("dual", "semantic", "behaviour")


def level_letter(level: int) -> str:
    if level >= len(string.ascii_lowercase):
        raise ValueError(f"at most {len(string.ascii_lowercase)} code levels are supported")
    return string.ascii_lowercase[level]


def code_token(level: int, value: int) -> str:
    return f"<{level_letter(level)}_{int(value)}>"


# What every name code_token writes looks like (a letter per level, the value).
CODE_TOKEN_PATTERN = re.compile(r"<[a-z]_\d+>")


@dataclass
class ItemIndex:
    """Codes (items × levels) for ``keys``, the source of each level, and the build config."""

    keys: list[str]
    codes: np.ndarray
    level_sources: list[str]  # "semantic" or "behaviour", per level
    k: int
    config: dict = field(default_factory=dict)
    _by_key: dict[str, int] | None = field(default=None, repr=False)
    _by_code: dict[tuple[int, ...], str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.codes.shape != (len(self.keys), len(self.level_sources)):
            raise ValueError(f"codes have shape {self.codes.shape}, expected ({len(self.keys)}, {len(self.level_sources)})")

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    @property
    def source(self) -> str:
        kinds = set(self.level_sources)
        return "dual" if len(kinds) == 2 else kinds.pop()

    def row(self, key: str) -> int:
        if self._by_key is None:
            self._by_key = {k: i for i, k in enumerate(self.keys)}
        if key not in self._by_key:
            raise KeyError(f"item {key!r} is not in this index ({len(self.keys)} items)")
        return self._by_key[key]

    def code_of(self, key: str) -> tuple[int, ...]:
        return tuple(int(c) for c in self.codes[self.row(key)])

    def tokens_of(self, key: str) -> list[str]:
        return [code_token(level, c) for level, c in enumerate(self.code_of(key))]

    def text_of(self, key: str) -> str:
        return "".join(self.tokens_of(key))

    def key_of_code(self, code: Sequence[int]) -> str | None:
        if self._by_code is None:
            self._by_code = {tuple(int(c) for c in row): k for k, row in zip(self.keys, self.codes)}
        return self._by_code.get(tuple(int(c) for c in code))

    def all_tokens(self) -> list[str]:
        """Every token the index can emit (level × value in use), in a stable order."""
        return [code_token(level, v) for level in range(self.levels) for v in np.unique(self.codes[:, level])]

    def stats(self) -> dict:
        n = len(self.keys)
        unique = len({tuple(r) for r in self.codes.tolist()})
        largest = {}
        for length in range(1, self.levels + 1):
            counts = Counter(map(tuple, self.codes[:, :length].tolist()))
            largest[f"prefix_{length}"] = max(counts.values())
        return {
            "items": n,
            "tokens_per_item": self.levels,
            "source": self.source,
            "level_sources": self.level_sources,
            "k": self.k,
            "collisions": n - unique,
            "code_usage_per_level": [int(len(np.unique(self.codes[:, l]))) for l in range(self.levels)],
            "new_tokens": len(self.all_tokens()),
            "largest_group_sharing_prefix": largest,
        }

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": self.config,
            "k": self.k,
            "level_sources": self.level_sources,
            "stats": self.stats(),
            "items": {k: [int(c) for c in row] for k, row in zip(self.keys, self.codes)},
        }
        path = directory / INDEX_FILE
        path.write_text(json.dumps(payload) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ItemIndex":
        path = Path(path)
        if path.is_dir():
            path = path / INDEX_FILE
        payload = json.loads(path.read_text())
        keys = list(payload["items"])
        codes = np.array([payload["items"][k] for k in keys], dtype=np.int64).reshape(len(keys), -1)
        return cls(keys, codes, payload["level_sources"], payload["k"], payload.get("config", {}))


def combine(
    keys: list[str], semantic: np.ndarray | None, behaviour: np.ndarray | None, k: int, config: dict
) -> ItemIndex:
    """The index for a source: semantic path, behaviour path, or the semantic path then behaviour."""
    parts, sources = [], []
    if semantic is not None:
        parts.append(semantic)
        sources += ["semantic"] * semantic.shape[1]
    if behaviour is not None:
        parts.append(behaviour)
        sources += ["behaviour"] * behaviour.shape[1]
    if not parts:
        raise ValueError("an index needs at least one source")
    return ItemIndex(keys, np.concatenate(parts, axis=1), sources, k, config)
