"""Serving loader: base + checkpoint merged once, cached on disk, then cast or quantised to NF4.

Rebuilding from the GGUF (dequantising it, converting its tokenizer, merging every stage's LoRA)
takes tens of seconds; the merged model saved as a plain Hugging Face folder loads in about one.
The cache key is the checkpoint's manifest (itself sha256 of every file) plus the backbone's path,
size and mtime, so a retrained checkpoint or another backbone never reuses a stale model.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eager.backbone import resolve_backbone_source
from eager.decoding.loaded import LoadedModel
from eager.decoding.trie import CodeTrie
from eager.index.item_index import INDEX_FILE, ItemIndex
from eager.model.checkpoint import MANIFEST_FILE, read_config, rebuild_merged
from eager.model.code_tokens import code_vocabulary
from eager.serve.quantize import INT4_LAYOUTS, SERVING_DTYPES, to_serving_dtype
from eager.utils import artifacts_root, cpu_has_bf16

log = logging.getLogger("eager.serve")

DTYPES = ("auto", *SERVING_DTYPES)
# 4-bit MLPs, unquantised attention: on Beauty it kept fp32's top item for 112 of 200 users where
# every-Linear NF4 kept 80, for 92 MB more (README "What NF4 costs in quality").
CPU_AUTO_DTYPE = "nf4-mlp"
# torch's CPU int4 kernel ("int4-mlp") answers faster on an AVX2 CPU, but its rankings drift from
# fp32's far more than NF4's (top item kept for 10 of 100 Beauty test users against 57:
# docs/serving.md, "int4 on torch's CPU kernel"), so "auto" stays NF4 until that is fixed.
CACHE_ENV = "EAGER_SERVE_CACHE"


@dataclass(frozen=True)
class ServingChoice:
    """What the loader decided, and why (shown in logs, the benchmark and the app)."""

    device: str
    dtype: str  # one of SERVING_DTYPES (nf4, nf4-mlp, bf16, fp32): how the weights are stored
    compute_dtype: str  # what the matmuls run in
    reason: str


def choose_serving(dtype: str = "auto", device: str | None = None) -> ServingChoice:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if dtype in INT4_LAYOUTS:
            raise ValueError(f"{dtype} serves on torch's CPU int4 kernel; on CUDA serve nf4 (bitsandbytes) or nf4-mlp")
        weights = "bf16" if dtype == "auto" else dtype
        return ServingChoice(device, weights, "fp32" if weights == "fp32" else "bf16", "CUDA has bf16 units")
    native = cpu_has_bf16()
    weights = CPU_AUTO_DTYPE if dtype == "auto" else dtype
    if weights == "fp32":
        compute, reason = "fp32", "fp32 asked for"
    elif native:
        compute, reason = "bf16", "this CPU has native bf16 (AVX512-BF16/AMX)"
    elif weights == "bf16":
        compute, reason = "bf16", "bf16 asked for, but this CPU has no native bf16 (AVX512-BF16/AMX): it is emulated, slowly"
    elif weights in INT4_LAYOUTS:
        compute, reason = "fp32", ("this CPU has no native bf16 (AVX512-BF16/AMX): the model runs in fp32 around the "
                                   "int4 matmuls, which take bf16 activations")
    else:
        compute, reason = "fp32", "this CPU has no native bf16 (AVX512-BF16/AMX): 4-bit weights are dequantised to fp32"
    return ServingChoice(device, weights, compute, reason)


def release_freed_memory() -> None:
    """Give the pages of the weights that casting or quantising replaced back to the OS.

    glibc keeps freed heap pages mapped, so without this the process's RSS still counts the bf16/fp32
    copies that NF4 replaced; elsewhere (no glibc) there is nothing to do.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or artifacts_root() / "serve_cache")


def cache_key(checkpoint: Path, base: str | Path | None, config: dict, storage: str) -> str:
    source = resolve_backbone_source(base or config.get("backbone_override"))
    stat = source.stat()
    digest = hashlib.sha256()
    digest.update((checkpoint / MANIFEST_FILE).read_bytes())
    digest.update(f"{source.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{storage}".encode())
    return digest.hexdigest()[:20]


def _storage_dtype(choice: ServingChoice) -> torch.dtype:
    # NF4 is quantised from bf16 at load: half the disk of fp32, and NF4 rounds far coarser anyway.
    return torch.float32 if choice.dtype == "fp32" else torch.bfloat16


def _save_merged(model, tokenizer, folder: Path, storage: torch.dtype) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    torch.nn.Module.to(model, storage)
    # A GGUF-loaded model remembers its GGUF origin; the cached copy is a plain HF folder.
    # (its weights are plain tensors already; transformers would refuse to serialise "GGUF-quantised").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(folder)  # atomic: a killed start-up never leaves a half-written cache


def load_for_serving(
    checkpoint: str | Path,
    dtype: str = "auto",
    base: str | Path | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    device: str | None = None,
) -> tuple[LoadedModel, ServingChoice, dict]:
    """The model ready to serve, the precision choice, and timings (``cold``: the cache was built)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = Path(checkpoint)
    started = time.perf_counter()
    choice = choose_serving(dtype, device)
    log.info("serving %s as %s (compute %s) on %s: %s", checkpoint, choice.dtype, choice.compute_dtype,
             choice.device, choice.reason)
    config = read_config(checkpoint)
    storage = _storage_dtype(choice)
    folder = Path(cache_dir or default_cache_dir()) / cache_key(checkpoint, base, config, str(storage))
    cold = not (use_cache and (folder / "config.json").exists())
    if cold:
        model, tokenizer, index, vocab, config = rebuild_merged(checkpoint, base, config)
        if use_cache:
            folder.parent.mkdir(parents=True, exist_ok=True)
            _save_merged(model, tokenizer, folder, storage)
            (folder / "source.json").write_text(json.dumps({"checkpoint": str(checkpoint.resolve()),
                                                            "storage": str(storage)}) + "\n")
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=storage)
        index = ItemIndex.load(checkpoint / INDEX_FILE)
        vocab = code_vocabulary(tokenizer, index)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    compute = torch.bfloat16 if choice.compute_dtype == "bf16" else torch.float32
    model = torch.nn.Module.to(model, choice.device)  # NF4 quantises where the weights are
    model = to_serving_dtype(model, choice.dtype, compute)
    model.eval()
    release_freed_memory()
    loaded = LoadedModel(model, tokenizer, index, vocab, CodeTrie(index, vocab), config, checkpoint)
    timings = {"load_s": round(time.perf_counter() - started, 2), "cold": cold, "cache": str(folder) if use_cache else None}
    return loaded, choice, timings


def load_checkpoint(directory: str | Path, dtype: str = "fp32", base: str | Path | None = None) -> LoadedModel:
    """Rebuild the model from the base backbone + checkpoint; ``dtype`` is one of ``SERVING_DTYPES``.

    No disk cache: :func:`eager.serve.loader.load_for_serving` is the cached, start-up-fast path.
    """
    model, tokenizer, index, vocab, config = rebuild_merged(directory, base)
    model = to_serving_dtype(model, dtype)
    model.eval()
    return LoadedModel(model, tokenizer, index, vocab, CodeTrie(index, vocab), config, Path(directory))
