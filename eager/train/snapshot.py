"""A training run's saved state, written small enough to commit, so a run goes on on another machine.

The state a run resumes from (``<work>/<stage>_state.pt``) lives in a git-ignored folder: it holds
the optimizer's moments, twice the size of the weights, and survives only where the run started.
A *snapshot* is that state without the moments, every trained tensor in bf16: the LoRA weights,
the code rows, the GCT projectors, the best epoch's weights where they differ from the current
ones, the data order's generator and where in the epoch the run stood. Two files a stage:
``<stage>.safetensors`` (tensors) and ``<stage>.json`` (schedule, history, settings).

A run warm-started from a snapshot trains on the exact batches an unbroken run would have trained
next, from the same weights (to bf16 rounding), at the same point of the same schedule. What it
cannot repeat are Adam's moment estimates: they start again at zero, and for ``REWARM_STEPS``
steps the learning rate ramps back up from zero to the schedule's, so the first updates (which
bias-corrected Adam makes at full size whatever the gradient) do not jolt the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

REWARM_STEPS = 50
SNAPSHOT_FORMAT = 1
_WEIGHT_GROUPS = ("lora", "best_lora", "projectors")


def snapshot_files(directory: Path, stage_name: str) -> tuple[Path, Path]:
    return directory / f"{stage_name}.safetensors", directory / f"{stage_name}.json"


def has_snapshot(directory: Path | None, stage_name: str) -> bool:
    return directory is not None and all(p.exists() for p in snapshot_files(Path(directory), stage_name))


def _same_tensors(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None or a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) for k in a)


def write_snapshot(state: dict, directory: Path, stage_name: str) -> tuple[Path, Path]:
    """Write a stage's state (as ``train_stage`` saves it) as a snapshot; returns its two files."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor) -> None:
        value = value.detach().cpu()
        tensors[key] = (value.to(torch.bfloat16) if value.is_floating_point() else value).contiguous()

    best_is_current = _same_tensors(state["lora"], state.get("best_lora")) and \
        state.get("best_rows") is not None and torch.equal(state["rows"], state["best_rows"])
    for group in _WEIGHT_GROUPS:
        values = state.get(group)
        if values is None or (group == "best_lora" and best_is_current):
            continue
        for name, value in values.items():
            put(f"{group}/{name}", value)
    put("rows", state["rows"])
    if state.get("best_rows") is not None and not best_is_current:
        put("best_rows", state["best_rows"])
    put("generator", state["generator"])
    for i, rng in enumerate(state.get("rng") or []):
        put(f"rng/{i}/cpu", rng["cpu"])
        if rng.get("cuda") is not None:
            put(f"rng/{i}/cuda", rng["cuda"])
    in_epoch = dict(state["in_epoch"]) if state.get("in_epoch") else None
    if in_epoch is not None:
        put("epoch_generator", in_epoch.pop("epoch_generator"))
    best = {k: (list(v) if k == "ranks" else v) for k, v in state["best"].items()}
    meta = {
        "format": SNAPSHOT_FORMAT, "stage": stage_name, "epoch": state["epoch"], "step": state["step"],
        "total": state["total"], "history": state["history"], "best": best, "best_is_current": best_is_current,
        "has_best": state.get("best_lora") is not None, "scheduler": _json_scheduler(state["scheduler"]),
        "settings": state["settings"], "in_epoch": in_epoch, "rng_processes": len(state.get("rng") or []),
    }
    weights, meta_file = snapshot_files(directory, stage_name)
    _atomic(weights, lambda p: save_file(tensors, str(p)))
    _atomic(meta_file, lambda p: p.write_text(json.dumps(meta, indent=1, default=_json_default) + "\n"))
    return weights, meta_file


def read_snapshot(directory: Path, stage_name: str) -> dict:
    """A snapshot as the state dict ``train_stage`` resumes from, with ``optimizer`` None (fresh moments)."""
    weights, meta_file = snapshot_files(Path(directory), stage_name)
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{meta_file} is snapshot format {meta.get('format')!r}; this eager reads {SNAPSHOT_FORMAT}")
    tensors = load_file(str(weights))

    def group(prefix: str) -> dict[str, torch.Tensor] | None:
        found = {k[len(prefix) + 1:]: v.float() for k, v in tensors.items() if k.startswith(prefix + "/")}
        return found or None

    lora, rows = group("lora"), tensors["rows"].float()
    if meta["best_is_current"]:
        best_lora, best_rows = lora, rows
    elif meta["has_best"]:
        best_lora, best_rows = group("best_lora"), tensors["best_rows"].float()
    else:
        best_lora, best_rows = None, None
    in_epoch = meta["in_epoch"]
    if in_epoch is not None:
        in_epoch = {**in_epoch, "epoch_generator": tensors["epoch_generator"]}
    rng = [{"cpu": tensors[f"rng/{i}/cpu"], "cuda": tensors.get(f"rng/{i}/cuda")} for i in range(meta["rng_processes"])]
    return {
        "lora": lora, "rows": rows, "optimizer": None, "scheduler": meta["scheduler"],
        "projectors": group("projectors"), "epoch": meta["epoch"], "step": meta["step"], "total": meta["total"],
        "history": meta["history"], "best": meta["best"], "best_lora": best_lora, "best_rows": best_rows,
        "generator": tensors["generator"], "rng": rng, "settings": meta["settings"], "in_epoch": in_epoch,
    }


def _json_scheduler(state: dict) -> dict:
    # LambdaLR keeps its lambdas as None (functions are not saved); the rest are numbers.
    return {k: v for k, v in state.items() if k != "lr_lambdas"} | {"lr_lambdas": [None] * len(state.get("lr_lambdas", []))}


def _json_default(value: Any):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} into a snapshot")


def _atomic(path: Path, write) -> None:
    partial = path.with_name(path.name + ".part")
    write(partial)
    os.replace(partial, path)
