"""Which saved training state a run may resume: only one saved by a run with the same settings.

A state file holds the weights, optimizer and schedule of a run at an epoch boundary. Resuming it
under other settings (another learning rate, step cap, task mix, dataset subset or backbone) would
silently splice two runs into one checkpoint whose config describes neither. So every state
records the settings that shape the trajectory, and a run with different ones refuses to start,
naming what differs, and leaves the file where it is; ``--restart`` sets it aside (renamed, never
deleted) and starts afresh.

The state also holds every process's global RNG (:func:`rng_states`): dropout draws from it, so a
resumed run restores it (:func:`restore_rng_state`) to repeat an unbroken one.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from eager.train.recipes import StageConfig, TrainRecipe


def _free(path: str) -> bool:
    """Settings a resumed run may change: the recipe's name (search trials rename it), any stage's
    wall-clock budget (a resumed run gets a fresh clock by design; its step count is the one saved),
    and activation checkpointing (the same gradients: a run stopped by GPU memory resumes with it on)."""
    return path in ("name", "activation_checkpointing") or path.endswith(".max_minutes")


def run_settings(stage_name: str, stage: StageConfig, recipe: TrainRecipe, dataset: str, samples: int,
                 vocab_size: int, model_config: Any) -> dict:
    """What a state file must match to be resumed, by dotted path (tuples as lists, as config.json shows them)."""
    settings = {
        "stage_name": stage_name, "stage": asdict(stage), **asdict(recipe), "dataset": dataset, "samples": samples,
        "vocab_size": vocab_size, "hidden_size": model_config.hidden_size, "layers": model_config.num_hidden_layers,
    }
    return {path: value for path, value in flatten_dotted(settings) if not _free(path)}


def check_resumable(saved: dict | None, now: dict, state_file: Path) -> None:
    """Raise a ValueError that names every differing setting (the file is left as it is)."""
    if saved == now:
        return
    if saved is None:
        problem = "was written by a version of eager that did not record its settings"
    else:
        changed = [f"{p}: {saved.get(p, '(absent)')!r} → {now.get(p, '(absent)')!r}"
                   for p in sorted(set(saved) | set(now)) if saved.get(p) != now.get(p)]
        problem = "was saved by a run with other settings (" + "; ".join(changed) + ")"
    raise ValueError(
        f"{state_file} {problem}. Rerun with the same settings to resume it, or add --restart to set it "
        "aside (it is kept, renamed) and start this run from scratch."
    )


def set_aside(state_file: Path) -> Path:
    """Move a state file out of the resume path without losing it: ``stage1_state.set-aside-<UTC>.pt``
    (no longer ``*_state.pt``, so neither resumed nor cleaned up by a finished run)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    kept = state_file.with_name(f"{state_file.stem}.set-aside-{stamp}{state_file.suffix}")
    state_file.rename(kept)
    return kept


def flatten_dotted(value: Any, prefix: str = ""):
    """(dotted path, leaf) for every leaf of nested dicts, tuples as lists (as config.json holds them)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from flatten_dotted(inner, f"{prefix}{key}.")
    else:
        yield prefix[:-1], list(value) if isinstance(value, tuple) else value


def rng_states(device: torch.device, world: int) -> list[dict]:
    """Every process's global RNG (dropout draws from it; the shares differ in size, so the streams differ)."""
    state = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    if world == 1:
        return [state]
    from accelerate.utils import gather_object

    return gather_object([state])


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
