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
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eager.index.item_index import INDEX_FILE, ItemIndex
from eager.model.assembly import backbone_for_index, merge_stage
from eager.model.lora import LoraSettings

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


def record_evaluation(checkpoint: str | Path, split: str, report: dict, dtype: str) -> dict:
    """Put a full evaluation's numbers into the checkpoint's metrics.json (and refresh its manifest)."""
    from eager.model.checkpoint import read_config

    folder = Path(checkpoint)
    read_config(folder)  # only a complete, unmodified checkpoint gets numbers recorded into it
    keys = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "recall@20", "ndcg@20", "invalid_rate", "users")
    recorded = {k: report[k] for k in keys if k in report} | {
        "dtype": dtype, "beams": report.get("beams"), "created": report.get("created"), "machine": report.get("machine")}
    return _update_metrics(folder, lambda metrics: metrics | {split: recorded})


def _update_metrics(folder: Path, update) -> dict:
    """Rewrite a checkpoint's metrics.json as ``update(metrics)`` and refresh its manifest."""
    path = folder / METRICS_FILE
    metrics = update(json.loads(path.read_text()) if path.exists() else {})
    path.write_text(json.dumps(metrics, indent=1) + "\n")
    write_manifest(folder)
    return metrics
