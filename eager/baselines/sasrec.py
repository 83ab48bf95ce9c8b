"""SASRec (Kang & McAuley, ICDM 2018) in PyTorch: the measured baseline and the behaviour source.

Two recipes sit side by side: the paper's (binary cross-entropy against one sampled negative) and
ours, tuned on Beauty validation (full-softmax cross-entropy over the catalogue, which is known to
lift SASRec well above its paper numbers: Klenitskiy & Vasilev, RecSys 2023). The trained item
embedding table is exported, keyed by item key, as the behaviour embeddings of the item codes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from eager.data.dataset import InteractionData
from eager.data.split import DEFAULT_MAX_HISTORY, eval_cases, train_sequences
from eager.embeddings.behaviour import EMBEDDINGS_FILE, ITEM_KEYS_FILE
from eager.eval.harness import evaluate_rankings, rankings_from_scores
from eager.eval.metrics import metrics_from_ranks
from eager.utils import seed_everything

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.5
    max_len: int = DEFAULT_MAX_HISTORY
    # "ce": softmax over all items; "ss": softmax over the positive and `negatives` items drawn
    # uniformly, shared by the batch (sampled softmax); "bce": one sampled negative per position
    loss: str = "ce"
    negatives: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200
    eval_every: int = 2
    patience: int = 5  # evaluations without a validation NDCG@10 gain before stopping
    max_minutes: float = 20.0
    seed: int = 42
    # Never score what the user already has: the earlier items are masked out of the softmax in
    # training and out of the ranking at inference (RecBole's full-sort and RecTools' filter_viewed
    # do the latter). With tied input/output embeddings the residual stream makes the last item the
    # top-scored one for nearly every user, and no held-out item of these benchmarks is a repeat.
    exclude_history: bool = False


SASREC_PAPER_CONFIG = SASRecConfig(hidden=50, loss="bce", lr=1e-3, dropout=0.5)
"""Kang & McAuley's setting (hidden 50, binary cross-entropy against one sampled negative), with the
protocol's history of 20."""

SASREC_CE38_CONFIG = SASRecConfig(hidden=64, loss="ce", lr=1e-3, dropout=0.5, weight_decay=0.0, epochs=38)
"""Full-softmax cross-entropy (Klenitskiy & Vasilev, RecSys 2023), 38 epochs: our default until
2026-12-07 (Beauty test R@10 0.0795 / N@10 0.0379); it spends a slot of ten on the user's last item."""

SASREC_SAMPLED_SOFTMAX_CONFIG = SASRecConfig(hidden=64, layers=1, loss="ss", negatives=256, lr=1e-3, dropout=0.5,
                                             epochs=200, eval_every=2, patience=3, max_minutes=45.0)
"""Sampled softmax over 256 uniform negatives, one block, d = 64: the literature's tuned SASRec
(transformer_benchmark, the eSASRec paper's companion; Beauty R@10 0.0921 / N@10 0.0531 there)."""

SASREC_TUNED_CONFIG = SASRecConfig(hidden=64, layers=2, loss="ce", lr=2e-3, dropout=0.5, exclude_history=True,
                                   epochs=200, eval_every=2, patience=3, max_minutes=45.0)
"""The default: full softmax that never scores the user's own items (in training and in ranking),
learning rate 2e-3, early-stopped on validation NDCG@10 within 45 minutes on a 2-core CPU; chosen
over a grid on Beauty validation (docs/results.md, "SASRec tuning")."""

SASREC_SMOKE_CONFIG = SASRecConfig(hidden=16, epochs=3, eval_every=1, batch_size=32, max_minutes=1.0)
"""A few steps on a tiny catalogue, for tests and smoke runs."""

RECIPES = {"tuned": SASREC_TUNED_CONFIG, "ce-38": SASREC_CE38_CONFIG, "sampled-softmax": SASREC_SAMPLED_SOFTMAX_CONFIG,
           "paper": SASREC_PAPER_CONFIG, "smoke": SASREC_SMOKE_CONFIG}


class SASRec(nn.Module):
    """Causal self-attention over the item sequence; scores are dot products with item embeddings.

    Index 0 is padding; item ``i`` is token ``i + 1``. Positions count back from the most recent
    item, so "the last item" always has the same position embedding whatever the length.
    """

    def __init__(self, num_items: int, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(num_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.hidden, config.heads, dim_feedforward=config.hidden, dropout=config.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        nn.init.normal_(self.item_emb.weight, std=config.hidden ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @property
    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight[1:]

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) for right-padded ``tokens`` (B, T) of the given lengths."""
        steps = torch.arange(tokens.shape[1], device=tokens.device)
        positions = (lengths[:, None] - 1 - steps[None, :]).clamp(min=0)
        x = self.item_emb(tokens) * math.sqrt(self.config.hidden) + self.pos_emb(positions)
        causal = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=tokens.device)
        # Right padding + a causal mask: real positions never see padding, so no key mask is needed.
        x = self.encoder(self.dropout(x), mask=causal, is_causal=True)
        return self.norm(x)

    def last_hidden(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.forward(tokens, lengths)
        return hidden[torch.arange(len(lengths)), lengths - 1]

    def score(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.last_hidden(tokens, lengths) @ self.item_embeddings.T


def pad_batch(sequences: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last ``max_len`` items of each sequence, shift ids by one, right-pad with 0."""
    clipped = [s[-max_len:] for s in sequences]
    lengths = torch.tensor([max(len(s), 1) for s in clipped])
    tokens = torch.zeros(len(clipped), int(lengths.max()), dtype=torch.long)
    for row, seq in enumerate(clipped):
        tokens[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long) + 1
    return tokens, lengths


def training_windows(sequences: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cut each train sequence into windows of ≤ max_len + 1 items (input + shifted target).

    Windows are taken from the end backwards and overlap by one item, so every transition is
    trained on exactly once and long histories are not thrown away.
    """
    windows = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            start = max(0, end - max_len - 1)
            windows.append(seq[start:end])
            end = start + 1 if start > 0 else 0
    return windows


def mask_seen(logits: torch.Tensor, seen: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """``logits`` with each row's already-seen items at ``-inf``, its positive item excepted.

    ``logits`` (n, items); ``seen`` (n, T) item tokens (item + 1, 0 = none) the row has seen;
    the positive stays scorable, so the loss stays finite on data where an item repeats."""
    penalty = torch.zeros_like(logits)
    rows, cols = torch.nonzero(seen, as_tuple=True)
    penalty[rows, seen[rows, cols] - 1] = float("-inf")
    return logits + penalty.scatter_(1, positive[:, None], 0.0)


def _loss(model: SASRec, tokens: torch.Tensor, lengths: torch.Tensor, num_items: int, generator) -> torch.Tensor:
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    hidden = model(inputs, (lengths - 1).clamp(min=1))
    valid = targets > 0
    positive = targets[valid] - 1
    if model.config.loss == "ce":
        logits = hidden[valid] @ model.item_embeddings.T
        if model.config.exclude_history:
            steps = inputs.shape[1]
            earlier = torch.ones(steps, steps, dtype=torch.bool).tril()
            seen = torch.where(earlier[None], inputs[:, None, :], 0)[valid]  # tokens at positions ≤ t
            logits = mask_seen(logits, seen, positive)
        return F.cross_entropy(logits, positive)
    h = hidden[valid]
    if model.config.loss == "ss":
        sampled = torch.randint(0, num_items, (model.config.negatives,), generator=generator)
        logits = torch.cat([(h * model.item_embeddings[positive]).sum(-1, keepdim=True),
                            h @ model.item_embeddings[sampled].T], dim=1)
        # a drawn negative that is the row's own positive is no negative
        accidental = torch.cat([torch.zeros(len(h), 1, dtype=torch.bool), sampled[None, :] == positive[:, None]], 1)
        logits = logits.masked_fill(accidental, float("-inf"))
        return F.cross_entropy(logits, torch.zeros(len(h), dtype=torch.long))
    negative = torch.randint(0, num_items, positive.shape, generator=generator)
    pos_logit = (h * model.item_embeddings[positive]).sum(-1)
    neg_logit = (h * model.item_embeddings[negative]).sum(-1)
    return F.binary_cross_entropy_with_logits(
        torch.cat([pos_logit, neg_logit]), torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)])
    )


@torch.no_grad()
def score_cases(model: SASRec, cases, batch_size: int = 1024, read: int | None = None) -> tuple[list[int], torch.Tensor]:
    """(user indices, score matrix) for evaluation cases; call under ``model.eval()``.

    The model reads each case's last ``read`` items (default: its ``max_len``); with
    ``exclude_history`` every item of the case's history, read or not, scores ``-inf``."""
    read = read or model.config.max_len
    users, chunks = [], []
    for start in range(0, len(cases), batch_size):
        batch = cases[start : start + batch_size]
        tokens, lengths = pad_batch([c.history for c in batch], read)
        scores = model.score(tokens, lengths)
        if model.config.exclude_history:
            rows = np.concatenate([np.full(len(c.history), i) for i, c in enumerate(batch)]).astype(np.int64)
            items = np.concatenate([c.history for c in batch]).astype(np.int64)
            scores[torch.from_numpy(rows), torch.from_numpy(items)] = float("-inf")
        chunks.append(scores)
        users.extend(c.user for c in batch)
    return users, torch.cat(chunks)


@torch.no_grad()
def quick_metrics(model: SASRec, cases, k: int = 10) -> dict[str, float]:
    """Recall/NDCG@k from scores, without building key lists (for validation during training)."""
    model.eval()
    ranks: list[int | None] = []
    for start in range(0, len(cases), 1024):
        batch = cases[start : start + 1024]
        _, scores = score_cases(model, batch)
        targets = torch.tensor([c.target for c in batch])
        target_scores = scores[torch.arange(len(batch)), targets]
        rank = (scores > target_scores[:, None]).sum(1) + 1
        ranks.extend(int(r) if r <= k else None for r in rank)
    return metrics_from_ranks(ranks, (k,))


def train_sasrec(
    data: InteractionData, config: SASRecConfig, progress: bool = True
) -> tuple[SASRec, dict]:
    """Train on the train split, pick the epoch by validation NDCG@10; return model + history."""
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = SASRec(data.num_items, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    windows = training_windows(train_sequences(data), config.max_len)
    valid = eval_cases(data, "valid", max_history=None)  # the model reads max_len of it
    best, best_state, history, stale = -1.0, None, [], 0
    started = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(windows), generator=generator).tolist()
        total, batches = 0.0, 0
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"sasrec epoch {epoch}", disable=not progress, leave=False)
        for start in bar:
            tokens, lengths = pad_batch([windows[i] for i in order[start : start + config.batch_size]], config.max_len + 1)
            loss = _loss(model, tokens, lengths, data.num_items, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        record = {"epoch": epoch, "loss": total / max(batches, 1), "minutes": (time.monotonic() - started) / 60}
        out_of_time = record["minutes"] >= config.max_minutes
        if epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time:
            metrics = quick_metrics(model, valid)
            record.update({f"valid_{k}": v for k, v in metrics.items()})
            if metrics["ndcg@10"] > best:
                best, stale = metrics["ndcg@10"], 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                record["best"] = True
            else:
                stale += 1
        history.append(record)
        if progress:
            tqdm.write(json.dumps(record))
        if out_of_time or stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, {"history": history, "best_valid_ndcg@10": best, "train_minutes": (time.monotonic() - started) / 60}


def rank_split(model: SASRec, data: InteractionData, split: str, k: int = 20,
               max_history: int | None = None) -> dict[str, list[str]]:
    """Top-``k`` keys per user of ``split``, reading the last ``max_history`` items (default: all it was trained on)."""
    model.eval()
    users, scores = score_cases(model, eval_cases(data, split, max_history=None), read=max_history)
    return rankings_from_scores(data, users, scores, k)


def save_sasrec(model: SASRec, data: InteractionData, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Model weights, the item embedding table (rows in ``item_keys.json`` order) and the config."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / MODEL_FILE)
    np.save(out / EMBEDDINGS_FILE, model.item_embeddings.detach().cpu().numpy().astype(np.float32))
    (out / ITEM_KEYS_FILE).write_text(json.dumps(data.item_keys))
    meta = {"model": "sasrec", "dataset": data.name, "config": asdict(model.config), **(extra or {})}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def run_sasrec(
    data: InteractionData, config: SASRecConfig, out_dir: str | Path, progress: bool = True, recipe: str = ""
) -> dict[str, dict]:
    """Train, export, and evaluate on valid and test through the shared harness."""
    model, info = train_sasrec(data, config, progress)
    save_sasrec(model, data, out_dir, {"recipe": recipe, **info})
    return evaluate_sasrec(model, data, out_dir, config={"recipe": recipe, **asdict(config)},
                           extra={"train_minutes": info["train_minutes"]})


def evaluate_sasrec(model: SASRec, data: InteractionData, out_dir: str | Path, config: dict,
                    max_history: int | None = None, extra: dict | None = None) -> dict[str, dict]:
    """Valid and test through the shared harness, written under ``out_dir``/<split>."""
    max_history = max_history or model.config.max_len
    if not 1 <= max_history <= model.config.max_len:
        raise ValueError(f"max_history must be between 1 and {model.config.max_len} (the positions this SASRec "
                         f"was trained with), not {max_history}")
    return {split: evaluate_rankings(data, split, rank_split(model, data, split, max_history=max_history),
                                     model="sasrec", config=config, out_dir=Path(out_dir) / split,
                                     max_history=max_history, extra=extra)
            for split in ("valid", "test")}


def load_sasrec(directory: str | Path, data: InteractionData) -> tuple[SASRec, dict]:
    """An exported SASRec (:func:`save_sasrec`) and its config file, checked against ``data``'s catalogue."""
    directory = Path(directory)
    if not (directory / MODEL_FILE).exists():
        raise FileNotFoundError(f"no SASRec at {directory} (expected {MODEL_FILE}); train one with "
                                f"`eager baseline sasrec --dataset {data.name}`")
    meta = json.loads((directory / CONFIG_FILE).read_text())
    if json.loads((directory / ITEM_KEYS_FILE).read_text()) != data.item_keys:
        raise ValueError(f"{directory} was trained on another catalogue than {data.name}'s; retrain it")
    config = SASRecConfig(**meta["config"])
    model = SASRec(data.num_items, config)
    model.load_state_dict(torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model, meta


def config_with(base: SASRecConfig, **overrides) -> SASRecConfig:
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
