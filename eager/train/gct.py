"""GCT, the global contrast decompression task.

The summary token's last-layer hidden state (at the EOS after the response) is L2-normalised and
mapped by two linear *decompression guidance projectors* into the semantic and the behaviour
embedding spaces; each is trained with InfoNCE (cosine similarity, temperature τ) against the
target item's frozen embedding, with one set of random catalogue items shared as negatives by the
whole batch. The projectors exist for training only; they are not part of a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GCTConfig:
    weight: float = 0.1  # per source: L = L_LM + w·L_sem + w·L_beh
    temperature: float = 0.1
    negatives: int = 2048
    # The share of a batch's GCT points that take part, drawn at random each step: a whole-history
    # batch has one point per supervised item, several times a per-prefix batch's.
    share: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"gct.share is the share of GCT points used, in (0, 1], not {self.share}")


class DecompressionProjectors(nn.Module):
    """Two linear maps from the LLM's hidden size to each frozen embedding table's space."""

    def __init__(self, hidden: int, tables: dict[str, np.ndarray | torch.Tensor], seed: int = 0):
        super().__init__()
        # A seeded start: runs repeat, and every process of a distributed run starts from the same
        # heads (FSDP shards each process's own copy; nothing broadcasts them as DDP does).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.heads = nn.ModuleDict({name: nn.Linear(hidden, t.shape[1]) for name, t in tables.items()})
        for name, table in tables.items():
            table = F.normalize(torch.as_tensor(np.asarray(table), dtype=torch.float32), dim=-1)
            self.register_buffer(f"table_{name}", table, persistent=False)

    def table(self, name: str) -> torch.Tensor:
        return getattr(self, f"table_{name}")

    def forward(
        self, summary: torch.Tensor, targets: torch.Tensor, config: GCTConfig, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """InfoNCE loss per source for summary states (B, hidden) of items ``targets`` (B,)."""
        query_in = F.normalize(summary.float(), dim=-1)
        losses = {}
        for name, head in self.heads.items():
            table = self.table(name)
            negatives = torch.randint(0, len(table), (min(config.negatives, len(table)),),
                                      generator=generator, device="cpu").to(table.device, non_blocking=True)
            losses[name] = info_nce(head(query_in), table[targets], table[negatives],
                                    negatives == targets[:, None].to(negatives.device), config.temperature)
        return losses


def info_nce(
    query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, accidental: torch.Tensor, temperature: float
) -> torch.Tensor:
    """−log softmax of the positive among [positive, negatives] under cosine / τ.

    ``accidental`` (B, M) marks negatives that are the sample's own target; they are masked out.
    """
    query = F.normalize(query, dim=-1)
    pos = (query * positive).sum(-1, keepdim=True)
    neg = (query @ negatives.T).masked_fill(accidental, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))
