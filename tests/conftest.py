from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from eager.data.dataset import InteractionData, items_frame

REPO = Path(__file__).resolve().parents[1]
# The README's test command sets EAGER_DATA_ROOT; without it, the shared folder beside the clone.
SHARED_DATA = Path(os.environ.get("EAGER_DATA_ROOT") or REPO.parent / "shared" / "data").resolve()


def shared_data_or_skip() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    return shared_data_or_skip()


def make_cyclic_data(num_items: int = 50, num_users: int = 60, length: int = 8, seed: int = 0) -> InteractionData:
    """A catalogue where item i is always followed by item i+1 (mod n): easy to learn, hard to guess."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(num_users):
        start = int(rng.integers(num_items))
        sequences.append((start + np.arange(length)) % num_items)
    keys = [f"I{i:03d}" for i in range(num_items)]
    items = items_frame(keys, title=[f"item number {i}" for i in range(num_items)])
    return InteractionData("cyclic", items, [f"U{u:03d}" for u in range(num_users)], sequences, ("title",), "synthetic")


@pytest.fixture
def cyclic_data() -> InteractionData:
    return make_cyclic_data()


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    """A saved tiny random Llama (2 layers, hidden 32) with SmolLM2's real tokenizer."""
    from tests.tiny import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(autouse=True)
def _serving_cache_in_tmp(tmp_path_factory, monkeypatch):
    # The serving loader caches merged models; tests must never write into the working tree.
    monkeypatch.setenv("EAGER_SERVE_CACHE", str(tmp_path_factory.getbasetemp() / "serve_cache"))
