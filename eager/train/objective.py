"""The training objective: L = L_LM (response tokens only) + w·L_sem + w·L_beh (GCT, seqrec only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eager.model.assembly import causal_lm
from eager.train.batching import Batch
from eager.train.gct import DecompressionProjectors, GCTConfig


def last_hidden(model, batch: Batch) -> torch.Tensor:
    """Final-layer (post-norm) hidden states, without computing logits for every position."""
    lm = causal_lm(model)
    if batch.packed:  # no 2-D mask and no cache: transformers builds the block-diagonal mask from positions
        # (the boundaries are read only by varlen attention, eager.train.attention; SDPA ignores them)
        bounds = {} if batch.cu_seqlens is None else {"cu_seq_lens_q": batch.cu_seqlens, "max_length_q": batch.max_seqlen}
        return lm.model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                        **bounds).last_hidden_state
    return lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).last_hidden_state


def compute_loss(
    model,
    batch: Batch,
    projectors: DecompressionProjectors | None = None,
    gct: GCTConfig | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    hidden = last_hidden(model, batch)
    # Next-token loss only where there is a label: project just those positions to the vocabulary.
    # (The positions were found on the host when the batch was built: no sync here.)
    predicting = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.label_positions)
    logits = causal_lm(model).lm_head(predicting)
    lm_loss = F.cross_entropy(logits.float(), batch.label_ids)
    out = {"lm": lm_loss, "loss": lm_loss}
    rows = batch.gct_rows
    if gct is not None and gct.share < 1.0 and rows.numel() > 1:
        keep = max(1, round(gct.share * rows.numel()))
        rows = rows[torch.randperm(rows.numel(), generator=generator)[:keep].to(rows.device)]
    if projectors is not None and gct is not None and gct.weight > 0 and rows.numel() > 0:  # a shape: no sync
        summary = hidden[batch.rows_of_samples[rows], batch.summary_index[rows]]
        losses = projectors(summary, batch.targets[rows], gct, generator)
        for name, value in losses.items():
            out[name] = value
            out["loss"] = out["loss"] + gct.weight * value
    return out
