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


# The same layouts on torch's own CPU int4 kernel (aten._weight_int4pack_mm_for_cpu, "tinygemm"):
# asymmetric int4 with one scale and zero point per group of inputs, bf16 activations. On a CPU
# bitsandbytes dequantises every NF4 weight to the compute dtype at every call; this kernel reads the
# packed nibbles in its matmul, which is what a decode step of 20 beams is made of.
INT4_LAYOUTS = {
    "int4": FourBitLayout(blocksize=64),
    "int4-mlp": FourBitLayout(keep=("self_attn.",), blocksize=32),
}

SERVING_DTYPES = (*FOUR_BIT_LAYOUTS, *INT4_LAYOUTS, "bf16", "fp32")


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
    if dtype in INT4_LAYOUTS:
        layout = INT4_LAYOUTS[dtype]
        return quantize_int4(model, compute_dtype, layout.blocksize, layout.keep)
    raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(SERVING_DTYPES)}")


def is_transformer_linear(module: torch.nn.Module, vocab_size: int) -> bool:
    """A Linear of the decoder layers: not the (tied) vocabulary head, which stays as the embeddings are."""
    return isinstance(module, torch.nn.Linear) and module.weight.shape[0] != vocab_size


def swap_transformer_linears(model, keep: tuple[str, ...], fits, make) -> list[str]:
    """Replace each transformer Linear whose qualified name holds none of ``keep`` by ``make(linear)``
    where ``fits(linear)``; returns the names (and shapes) of those that did not fit, left as they are."""
    misfits: list[str] = []

    def swap(module, prefix):
        for name, child in module.named_children():
            qualified = f"{prefix}{name}"
            wanted = is_transformer_linear(child, model.config.vocab_size) and not any(part in qualified for part in keep)
            if wanted and not fits(child):
                misfits.append(f"{qualified} ({child.in_features}→{child.out_features})")
            elif wanted:
                setattr(module, name, make(child))
            else:
                swap(child, qualified + ".")

    swap(model, "")
    return misfits


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

    def nf4(child: torch.nn.Linear):
        # No double quantisation: it saves ~0.4 bit/weight but dequantises the absmax per matmul.
        q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                              compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=False)
        q.weight = bnb.nn.Params4bit(child.weight.data.float().cpu(), requires_grad=False, quant_type="nf4",
                                     compress_statistics=False, blocksize=blocksize)
        if child.bias is not None:
            q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
        return q.to(child.weight.device)  # quantises on the move

    misfits = swap_transformer_linears(model, keep, lambda child: fits_4bit_kernel(child, blocksize), nf4)
    if misfits:
        log.warning("%d Linear(s) stay unquantised: their shape does not fit NF4 blocks of %d in tiles of %d "
                    "rows: %s", len(misfits), blocksize, PACKED_ROWS, ", ".join(misfits[:4]) + (" …" if len(misfits) > 4 else ""))
    # Cast what stays after quantising, tensor by tensor: casting the whole model first would hold
    # every Linear in fp32 at once (the packed 4-bit weights are uint8 and are left alone).
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != compute_dtype:
            tensor.data = tensor.data.to(compute_dtype)
    return model


class Int4Linear(torch.nn.Module):
    """A Linear stored as packed int4 (one bf16 scale and zero point per ``groupsize`` inputs of a row),
    multiplied by torch's CPU int4 kernel. ``w ≈ (q - 8) * scale + zero`` with ``q`` in 0..15, the
    kernel's own convention; activations go in as bf16 and the output comes back in their dtype."""

    def __init__(self, linear: torch.nn.Linear, groupsize: int = 32):
        super().__init__()
        if linear.weight.device.type != "cpu":
            raise ValueError("int4 serving runs on torch's CPU int4 kernel; on CUDA serve nf4 (bitsandbytes)")
        self.in_features, self.out_features, self.groupsize = linear.in_features, linear.out_features, groupsize
        q, scale_zero = quantize_groups(linear.weight.data.float(), groupsize)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        self.register_buffer("scale_zero", scale_zero.to(torch.bfloat16))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.data.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.packed,
                                                         self.groupsize, self.scale_zero)
        out = out.reshape(*shape[:-1], self.out_features).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        """The weight the kernel multiplies by, in fp32 (for tests and diagnostics)."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, self.groupsize, self.scale_zero).float().t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, groupsize={self.groupsize}"


def quantize_groups(weight: torch.Tensor, groupsize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q as int32 [out, in] in 0..15, scales and zero points as [in/groupsize, out, 2]): min-max
    asymmetric rounding per group, laid out as the CPU int4 kernel reads them."""
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // groupsize, groupsize)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = (high - low).clamp(min=1e-8) / 15
    q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(rows, cols)
    zero = low + 8 * scale  # the value of q = 8
    scale_zero = torch.cat([scale, zero], -1).reshape(rows, cols // groupsize, 2).transpose(0, 1).contiguous()
    return q, scale_zero


def fits_int4_kernel(linear: torch.nn.Linear, groupsize: int) -> bool:
    return linear.in_features % groupsize == 0 and linear.out_features % 8 == 0


def quantize_int4(model, compute_dtype: torch.dtype = torch.float32, groupsize: int = 32, keep: tuple[str, ...] = ()):
    """Swap every transformer Linear (but those whose name holds one of ``keep``) for an
    :class:`Int4Linear`; everything else, and the activations between layers, in ``compute_dtype``."""
    misfits = swap_transformer_linears(model, keep, lambda child: fits_int4_kernel(child, groupsize),
                                       lambda child: Int4Linear(child, groupsize))
    if misfits:
        log.warning("%d Linear(s) stay unquantised: their shape does not fit int4 groups of %d: %s", len(misfits),
                    groupsize, ", ".join(misfits[:4]) + (" …" if len(misfits) > 4 else ""))
    for module in model.modules():
        if isinstance(module, Int4Linear):
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.is_floating_point() and tensor.dtype != compute_dtype:
                tensor.data = tensor.data.to(compute_dtype)
    return model
