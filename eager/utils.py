"""Small shared helpers: seeding and artifact locations."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

ARTIFACTS_ENV = "EAGER_ARTIFACTS"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def artifacts_root(explicit: str | Path | None = None) -> Path:
    """Where trained baselines, embeddings and indices go: flag, $EAGER_ARTIFACTS, or ./artifacts."""
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get(ARTIFACTS_ENV, "artifacts")).expanduser()
