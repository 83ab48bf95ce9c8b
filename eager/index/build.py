"""``eager index build``: embeddings → balanced hierarchical codes → the item index file.

Inputs are explicit files: the semantic embedding cache (made here if missing) and the SASRec
artifact's ``item_embeddings.npy`` (``eager baseline sasrec``). The output folder holds
``index.json`` with the config that built it and its stats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eager.data.dataset import InteractionData
from eager.embeddings.behaviour import EMBEDDINGS_FILE, load_item_embeddings
from eager.embeddings.semantic import ENCODERS, TextConfig, semantic_embeddings
from eager.index.balanced_kmeans import (
    BalancedKMeansConfig,
    balanced_hierarchical_codes,
)
from eager.index.item_index import SOURCES, ItemIndex, combine
from eager.utils import artifacts_root


@dataclass(frozen=True)
class IndexConfig:
    source: str = "dual"
    encoder: str = "minilm"
    kmeans: BalancedKMeansConfig = field(default_factory=BalancedKMeansConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # Centre and L2-normalise before clustering: LLM hidden states are anisotropic (a few huge
    # dimensions), and SASRec's scoring scale says nothing about which items are alike.
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown index source {self.source!r}; choose one of: {', '.join(SOURCES)}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of: {', '.join(ENCODERS)}")

    @property
    def name(self) -> str:
        return self.source if self.source == "behaviour" else f"{self.source}-{self.encoder}"


def prepare_for_clustering(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def semantic_cache_dir(artifacts: Path, data: InteractionData, encoder: str) -> Path:
    return artifacts / data.name / "semantic" / encoder


def behaviour_dir(artifacts: Path, data: InteractionData) -> Path:
    return artifacts / data.name / "sasrec"


def load_behaviour(data: InteractionData, directory: Path) -> np.ndarray:
    if not (directory / EMBEDDINGS_FILE).exists():
        raise FileNotFoundError(
            f"no behaviour embeddings at {directory / EMBEDDINGS_FILE}; train them first with\n"
            f"    eager baseline sasrec --dataset {data.name}"
            + (f" --out {directory}" if directory.name != "sasrec" else "")
        )
    return load_item_embeddings(directory, data)


def source_embeddings(
    data: InteractionData, config: IndexConfig, artifacts: Path, behaviour_from: Path | None, progress: bool
) -> dict[str, np.ndarray]:
    out = {}
    if config.source in ("dual", "semantic"):
        out["semantic"] = semantic_embeddings(
            data, config.encoder, semantic_cache_dir(artifacts, data, config.encoder), config.text, progress
        )
    if config.source in ("dual", "behaviour"):
        out["behaviour"] = load_behaviour(data, behaviour_from or behaviour_dir(artifacts, data))
    return out


def build_index(
    data: InteractionData,
    config: IndexConfig = IndexConfig(),
    artifacts: str | Path | None = None,
    behaviour_from: str | Path | None = None,
    progress: bool = True,
    embeddings: dict[str, np.ndarray] | None = None,
) -> ItemIndex:
    """Build (not save) the index; ``embeddings`` may be given directly (tests, notebooks)."""
    root = artifacts_root(artifacts)
    if embeddings is None:
        embeddings = source_embeddings(data, config, root, Path(behaviour_from) if behaviour_from else None, progress)
    paths = {}
    for name, table in embeddings.items():
        if len(table) != data.num_items:
            raise ValueError(f"{name} embeddings have {len(table)} rows for {data.num_items} items")
        x = prepare_for_clustering(table) if config.normalize else table
        # Each source gets its own seed stream so the two codebooks are not fitted in lockstep.
        kmeans = config.kmeans if name == "semantic" else BalancedKMeansConfig(
            **{**asdict(config.kmeans), "seed": config.kmeans.seed + 1000})
        paths[name] = balanced_hierarchical_codes(x, kmeans)
    record = {
        "dataset": data.name, "source": config.source, "encoder": config.encoder if "semantic" in paths else None,
        "kmeans": asdict(config.kmeans), "text": asdict(config.text), "normalize": config.normalize,
        "embedding_dims": {name: int(t.shape[1]) for name, t in embeddings.items()},
    }
    return combine(data.item_keys, paths.get("semantic"), paths.get("behaviour"), config.kmeans.k, record)


def index_dir(artifacts: str | Path | None, data: InteractionData, config: IndexConfig) -> Path:
    return artifacts_root(artifacts) / data.name / "index" / config.name
