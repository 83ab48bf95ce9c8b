"""4-bit and half-precision serving weights: bitsandbytes NF4 layouts and dtype casts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger("eager.serve")



@dataclass(frozen=True)
class FourBitLayout:
    """Which transformer Linears are stored in NF4, in blocks of how many weights; the rest of the
    model runs in the compute dtype."""

    keep: tuple[str, ...] = ()  # Linears whose qualified name contains one of these stay unquantised
    blocksize: int = 64


# Measured on Beauty (README "What NF4 costs in quality"): attention is where 4 bits move rankings
# most per byte, so "nf4-mlp" keeps it and quantises the MLPs (three quarters of the Linear weights).
FOUR_BIT_LAYOUTS = {
    "nf4": FourBitLayout(),  # every transformer Linear, bitsandbytes' default block
    "nf4-mlp": FourBitLayout(keep=("self_attn.",), blocksize=32),
}


SERVING_DTYPES = (*FOUR_BIT_LAYOUTS, "bf16", "fp32")


def to_serving_dtype(model, dtype: str, compute_dtype: torch.dtype = torch.bfloat16):
    # A GGUF-loaded model is flagged as quantised by transformers (its weights are already
    # dequantised) and refuses .float()/.to(dtype); the plain nn.Module casts are what we mean.
    if dtype == "fp32":
        return torch.nn.Module.float(model)
    if dtype == "bf16":
        return torch.nn.Module.to(model, torch.bfloat16)
    if dtype in FOUR_BIT_LAYOUTS:
        layout = FOUR_BIT_LAYOUTS[dtype]
        return quantize_nf4(model, compute_dtype, layout.blocksize, layout.keep)
    raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(SERVING_DTYPES)}")


def is_transformer_linear(module: torch.nn.Module, vocab_size: int) -> bool:
    """A Linear of the decoder layers: not the (tied) vocabulary head, which stays as the embeddings are."""
    return isinstance(module, torch.nn.Linear) and module.weight.shape[0] != vocab_size


# bitsandbytes' CPU kernel for AVX512-BF16/AMX machines repacks each 4-bit weight in tiles of 32
# output rows with one scale per ``blocksize`` inputs of a row: a Linear of another shape fails at its
# first matmul there (0.50.x: "shape '[32, 0]' is invalid") though it runs on every other CPU.
PACKED_ROWS = 32


def fits_4bit_kernel(linear: torch.nn.Linear, blocksize: int) -> bool:
    """Whether ``linear`` can be stored in NF4 blocks of ``blocksize`` and run by every bitsandbytes kernel."""
    return linear.in_features % blocksize == 0 and linear.out_features % PACKED_ROWS == 0


def quantize_nf4(model, compute_dtype: torch.dtype = torch.bfloat16, blocksize: int = 64,
                 keep: tuple[str, ...] = ()):
    """Swap every transformer Linear for a bitsandbytes NF4 Linear4bit (embeddings / head stay).

    ``compute_dtype`` is what the 4-bit weights are dequantised to for the matmul: bf16 where the
    hardware has bf16 units, fp32 on CPUs without them (bf16 would be emulated, and slower). The rest
    of the model (embeddings, norms, the tied head, the residual stream) is cast to it too.
    ``blocksize``: weights sharing one absmax scale (bitsandbytes: 32–4096). ``keep``: Linears whose
    qualified name contains one of these strings stay unquantised, in ``compute_dtype``. So do
    Linears whose shape does not fit the 4-bit kernels (:func:`fits_4bit_kernel`; never one of
    SmolLM2's or Llama's), with a warning that names them, so the model serves on every CPU.
    """
    import bitsandbytes as bnb

    misfits: list[str] = []

    def swap(module, prefix):
        for name, child in module.named_children():
            qualified = f"{prefix}{name}"
            wanted = is_transformer_linear(child, model.config.vocab_size) and not any(part in qualified for part in keep)
            if wanted and not fits_4bit_kernel(child, blocksize):
                misfits.append(f"{qualified} ({child.in_features}→{child.out_features})")
            elif wanted:
                # No double quantisation: it saves ~0.4 bit/weight but dequantises the absmax per matmul.
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=False)
                q.weight = bnb.nn.Params4bit(child.weight.data.float().cpu(), requires_grad=False, quant_type="nf4",
                                             compress_statistics=False, blocksize=blocksize)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                q = q.to(child.weight.device)  # quantises on the move
                setattr(module, name, q)
            else:
                swap(child, qualified + ".")

    swap(model, "")
    if misfits:
        log.warning("%d Linear(s) stay unquantised: their shape does not fit NF4 blocks of %d in tiles of %d "
                    "rows: %s", len(misfits), blocksize, PACKED_ROWS, ", ".join(misfits[:4]) + (" …" if len(misfits) > 4 else ""))
    # Cast what stays after quantising, tensor by tensor: casting the whole model first would hold
    # every Linear in fp32 at once (the packed 4-bit weights are uint8 and are left alone).
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != compute_dtype:
            tensor.data = tensor.data.to(compute_dtype)
    return model
