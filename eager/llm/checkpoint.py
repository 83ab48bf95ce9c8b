"""Checkpoints: ``checkpoints/<dataset>/<variant>/``, small enough for git (≤ 12 MiB).

Files: ``index.json`` (the item codes), ``stage1.safetensors`` and, with AAT, ``stage2.safetensors``
(LoRA matrices + the code-token embedding rows, bf16), ``config.json`` (the resolved recipe,
variant, backbone and tokenizer facts), ``metrics.json`` and ``manifest.json`` (sha256 of every
file, checked on load). The model is rebuilt as base + tokens + stage LoRAs merged in order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eager.index.item_index import INDEX_FILE, ItemIndex
from eager.llm.code_tokens import CodeVocabulary
from eager.llm.decode import CodeTrie
from eager.llm.recipes import LoraSettings, recorded_history_window
from eager.llm.setup import backbone_for_index, merge_stage
from eager.llm.tasks import DEFAULT_PROMPT_STYLE

log = logging.getLogger("eager.checkpoint")

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
ROWS_KEY = "code_token_rows"
MAX_BYTES = 12 * 1024 * 1024


class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_stage(directory: Path, stage: str, lora: dict[str, torch.Tensor], rows: torch.Tensor | None) -> Path:
    """One stage's LoRA (bf16); ``rows`` only for the last stage, whose rows are the final ones."""
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in lora.items()}
    if rows is not None:
        tensors[ROWS_KEY] = rows.to(torch.bfloat16).contiguous()
    path = directory / f"{stage}.safetensors"
    save_file(tensors, str(path))
    return path


def write_manifest(directory: Path) -> dict:
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files}
    total = sum(f["bytes"] for f in manifest.values())
    if total > MAX_BYTES:
        raise CheckpointError(f"checkpoint {directory} is {total / 2**20:.1f} MiB, over the 12 MiB limit")
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def verify_manifest(directory: Path) -> None:
    path = directory / MANIFEST_FILE
    if not path.exists():
        raise CheckpointError(f"{directory} has no {MANIFEST_FILE}: not a complete eager checkpoint")
    for name, entry in json.loads(path.read_text()).items():
        file = directory / name
        if not file.exists():
            raise CheckpointError(f"checkpoint file {file} is missing")
        if _sha256(file) != entry["sha256"]:
            raise CheckpointError(f"checkpoint file {file} does not match its sha256 in {MANIFEST_FILE}; "
                                  "it was changed or corrupted: re-export or re-download the checkpoint")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    index: ItemIndex
    vocab: CodeVocabulary
    trie: CodeTrie
    config: dict
    directory: Path

    @property
    def prompt_style(self) -> str:
        """How the checkpoint was prompted in training (checkpoints from before styles: LC-Rec's)."""
        return self.config.get("recipe", {}).get("prompt_style", DEFAULT_PROMPT_STYLE)

    @property
    def history_window(self) -> int:
        """How many of a history's last items the model reads (its training cap, at most the protocol's 20)."""
        return recorded_history_window(self.config)


def read_config(directory: str | Path) -> dict:
    """The checkpoint's resolved config, after checking every file against the manifest."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).exists():
        raise CheckpointError(f"no checkpoint at {directory} (expected {CONFIG_FILE}); train one with `eager train`")
    verify_manifest(directory)
    return json.loads((directory / CONFIG_FILE).read_text())


def rebuild_merged(directory: str | Path, base: str | Path | None = None, config: dict | None = None):
    """(fp32 model with every stage's LoRA merged and the code rows in place, tokenizer, index, vocab, config).

    ``config``: the already verified :func:`read_config` result, so the files are hashed only once.
    """
    directory = Path(directory)
    config = config if config is not None else read_config(directory)
    index = ItemIndex.load(directory / INDEX_FILE)
    model, tokenizer, vocab, first_row = backbone_for_index(base or config.get("backbone_override"), index)
    if len(tokenizer) != config["vocab_size"]:
        raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens after adding codes, checkpoint expects "
                              f"{config['vocab_size']}: was it trained on another backbone?")
    for stage in config["stages"]:
        tensors = load_file(str(directory / f"{stage['name']}.safetensors"))
        rows = tensors.pop(ROWS_KEY, None)
        model = merge_stage(model, first_row, LoraSettings(**stage["lora"]), tensors, rows)
    return model, tokenizer, index, vocab, config


def load_checkpoint(directory: str | Path, dtype: str = "fp32", base: str | Path | None = None) -> LoadedModel:
    """Rebuild the model from the base backbone + checkpoint; ``dtype`` is one of ``SERVING_DTYPES``.

    No disk cache: :func:`eager.serve.loader.load_for_serving` is the cached, start-up-fast path.
    """
    model, tokenizer, index, vocab, config = rebuild_merged(directory, base)
    model = to_serving_dtype(model, dtype)
    model.eval()
    return LoadedModel(model, tokenizer, index, vocab, CodeTrie(index, vocab), config, Path(directory))


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
