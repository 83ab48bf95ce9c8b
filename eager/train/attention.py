"""Attention for packed training rows at the cost of each sample's own length.

Transformers turns restarting position ids into a block-diagonal causal mask, and SDPA with a mask
then computes the whole row × row score matrix: for 2048-token rows of ~118-token samples, some 17×
the work that counts, and no flash kernel (flash takes no mask). ``VARLEN_ATTENTION`` is registered
with transformers' ``AttentionInterface``: on CUDA it calls PyTorch's own variable-length flash
kernel (``torch.nn.attention.varlen``) with the samples' boundaries, so nothing outside the
block diagonal is computed; elsewhere it runs a plain masked SDPA over the same boundaries, the
reference the kernel is checked against (tests on CPU, ``eager/lab/bench_train_step.py`` on a GPU).

It serves training steps only (``TrainingAttention``): validation and serving use caches and
tree masks, which keep the model's own implementation.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

VARLEN_ATTENTION = "eager_varlen"
ATTENTION_CHOICES = ("sdpa", "varlen")  # TrainRecipe.attention


def segment_bounds(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cumulative boundaries (int32, S+1) of the samples in packed rows, read from restarting positions,
    and the longest sample. Rows are concatenated: each row must start a sample (position 0)."""
    if bool((position_ids[:, 0] != 0).any()):
        raise ValueError("packed rows must start with position 0: every row begins a sample")
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).squeeze(1)
    bounds = torch.cat([starts, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    return bounds, int((bounds[1:] - bounds[:-1]).max())


_FLASH: tuple | None = None  # (kernel, causal kwargs, native GQA, takes scale): read once, not per layer call


def _flash_kernel() -> tuple:
    global _FLASH
    if _FLASH is None:
        from torch.nn.attention.varlen import varlen_attn

        params = inspect.signature(varlen_attn).parameters
        # torch 2.10 spells causality is_causal; later versions a window, and grouped KV heads natively.
        causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
        _FLASH = (varlen_attn, causal, "enable_gqa" in params, "scale" in params)
    return _FLASH


def _varlen_flash(query, key, value, bounds, longest, scaling):
    kernel, causal, native_gqa, takes_scale = _flash_kernel()
    half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
    if half not in (torch.float16, torch.bfloat16):
        half = torch.bfloat16
    groups = query.shape[1] // key.shape[1]
    extra = {}
    if groups > 1 and native_gqa:
        extra["enable_gqa"] = True
    elif groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    if takes_scale:
        extra["scale"] = scaling
    elif scaling is not None and abs(scaling - query.shape[-1] ** -0.5) > 1e-12:
        raise ValueError("this torch's varlen_attn has no scale argument and the model's scaling is not 1/sqrt(d)")
    out = kernel(query.to(half), key.to(half), value.to(half), bounds, bounds, longest, longest, **causal, **extra)
    return out.to(query.dtype) if not torch.is_autocast_enabled("cuda") else out


def varlen_reference(query, key, value, bounds, scaling):
    """Masked SDPA over (B, H, T, D) rows with the causal block-diagonal mask that ``bounds`` describe.

    Samples never cross rows, so the mask is per row: (B, 1, T, T), what transformers' own packed
    SDPA path builds."""
    batch, _, length, _ = query.shape
    sizes = (bounds[1:] - bounds[:-1]).long()
    segment = torch.repeat_interleave(torch.arange(len(sizes), device=query.device), sizes).view(batch, length)
    index = torch.arange(length, device=query.device)
    mask = (segment[:, :, None] == segment[:, None, :]) & (index[:, None] >= index[None, :])
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask[:, None], scale=scaling).transpose(1, 2)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                             cu_seq_lens_q: torch.Tensor | None = None, max_length_q: int | None = None, **kwargs):
    """transformers' attention signature: (B, H, T, D) in, (B, T, H, D) out; rows are concatenated."""
    if cu_seq_lens_q is None or max_length_q is None:
        raise ValueError("varlen attention needs the samples' boundaries: pass cu_seq_lens_q and max_length_q "
                         "(eager.train.attention.segment_bounds of the packed position ids)")
    if not query.is_cuda:
        return varlen_reference(query, key, value, cu_seq_lens_q, scaling), None
    batch, heads, length, dim = query.shape
    flat = [t.transpose(1, 2).reshape(batch * length, t.shape[1], dim) for t in (query, key, value)]
    out = _varlen_flash(*flat, cu_seq_lens_q, max_length_q, scaling)
    return out.reshape(batch, length, heads, dim), None


def register() -> None:
    from transformers import AttentionInterface

    # No mask function is registered on purpose: for an implementation without one, transformers
    # builds no mask and skips its packed-sequence detection (a host sync per forward); the
    # boundaries travel as cu_seq_lens_q instead.
    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
    if torch.cuda.is_available():
        _flash_kernel()  # resolved here, in eager mode, before any (compiled) forward reads it


class TrainingAttention:
    """The model's attention implementation switched to ``choice`` for the training steps only."""

    def __init__(self, model, choice: str):
        from eager.model.assembly import causal_lm

        if choice not in ATTENTION_CHOICES:
            raise ValueError(f"unknown attention {choice!r}; choose one of: {', '.join(ATTENTION_CHOICES)}")
        self.config = causal_lm(model).config
        self.name = VARLEN_ATTENTION if choice == "varlen" else None
        if self.name:
            register()

    @property
    def varlen(self) -> bool:
        return self.name is not None

    def __enter__(self):
        if self.name:
            self.saved, self.config._attn_implementation = self.config._attn_implementation, self.name
        return self

    def __exit__(self, *exc):
        if self.name:
            self.config._attn_implementation = self.saved
        return False
