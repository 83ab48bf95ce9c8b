"""``eager train`` / ``eager eval --checkpoint`` / ``eager recommend``: whole runs as functions."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from eager.backbone import load_backbone, resolve_backbone_source
from eager.data.dataset import InteractionData
from eager.decoding.trie import CodeTrie
from eager.embeddings.semantic import semantic_embeddings
from eager.index.build import (
    IndexConfig,
    behaviour_dir,
    build_index,
    index_dir,
    load_behaviour,
    semantic_cache_dir,
)
from eager.index.item_index import INDEX_FILE, ItemIndex
from eager.model.assembly import backbone_for_index, merge_stage, prepare_backbone
from eager.model.checkpoint import CONFIG_FILE, METRICS_FILE, save_stage, write_manifest
from eager.model.variants import Variant
from eager.train.gct import DecompressionProjectors
from eager.train.recipes import TrainRecipe, with_gct
from eager.train.samples import build_samples
from eager.train.snapshot import has_snapshot, read_snapshot, write_snapshot
from eager.train.trainer import gct_tables, make_logger, train_stage
from eager.train.validation import training_users
from eager.utils import artifacts_root, machine_line, timestamp


def variant_index(data: InteractionData, variant: Variant, artifacts, encoder: str = "minilm", progress=True) -> ItemIndex:
    """The variant's item index from the artifacts, built (and saved) there if missing."""
    config = IndexConfig(source=variant.index_source, encoder=encoder)
    folder = index_dir(artifacts, data, config)
    if (folder / INDEX_FILE).exists():
        return ItemIndex.load(folder)
    index = build_index(data, config, artifacts, progress=progress)
    index.save(folder)
    return index


def embedding_tables(data: InteractionData, artifacts, encoder: str = "minilm", progress=True) -> dict[str, np.ndarray]:
    root = artifacts_root(artifacts)
    return {
        "semantic": semantic_embeddings(data, encoder, semantic_cache_dir(root, data, encoder), progress=progress),
        "behaviour": load_behaviour(data, behaviour_dir(root, data)),
    }


def rebuilt_after_stage(base, index: ItemIndex, settings, lora: dict, rows):
    """The backbone from ``base`` with a stage's (gathered) LoRA merged and its code rows set."""
    model, _, _, first_row = backbone_for_index(base, index)
    return merge_stage(model, first_row, settings, lora, rows)


def stage_samples(data: InteractionData, index: ItemIndex, recipe: TrainRecipe, stage_name: str) -> list:
    """The samples a stage trains on: its tasks over the recipe's users (stage 2 draws its templates
    with the next seed, so the two stages do not repeat each other's prompts)."""
    stage = getattr(recipe, stage_name)
    seed = recipe.training_seed + (1 if stage_name == "stage2" else 0)
    return build_samples(data, index, stage.tasks, recipe.max_history, seed, training_users(data, recipe),
                         recipe.prompt_style)


def run_work_dir(artifacts, dataset: str, variant: Variant, recipe: TrainRecipe) -> Path:
    """Where a run keeps its resumable states and log (git-ignored, beside the artifacts)."""
    return artifacts_root(artifacts) / dataset / "train" / f"{variant.name}-{recipe.name}"


def export_snapshots(artifacts, dataset: str, variant: Variant, recipe: TrainRecipe, to: str | Path) -> list[str]:
    """Write the run's saved stage states as snapshots in ``to`` (small enough to commit; a run on
    another machine goes on from them with ``warm_start``); the files written."""
    work = run_work_dir(artifacts, dataset, variant, recipe)
    states = sorted(work.glob("stage*_state.pt"))
    if not states:
        raise FileNotFoundError(f"no saved training state in {work}: this run has not saved one on this machine "
                                "(a run saves every few minutes and after each epoch), or it has finished")
    written = []
    for state_file in states:
        stage_name = state_file.name.removesuffix("_state.pt")
        written += [str(p) for p in write_snapshot(torch.load(state_file, weights_only=False), Path(to), stage_name)]
    return written


def write_checkpoint(out: Path, dataset: str, variant: Variant, recipe: TrainRecipe, index: ItemIndex,
                     vocab_size: int, base, stage_files: dict, stages: list[dict], extra: dict) -> tuple[dict, dict]:
    """A checkpoint folder: each stage's weights, the index, the config that produced it, the selection
    metrics (the last stage's best validation) and the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    for name, (lora, rows) in stage_files.items():
        save_stage(out, name, lora, rows)
    index.save(out)
    backbone = str(base) if base else resolve_backbone_source(None).name
    config = {
        "dataset": dataset, "variant": asdict(variant), "recipe": asdict(recipe), "backbone": backbone,
        "backbone_override": str(base) if base else None, "vocab_size": vocab_size,
        "max_users": recipe.max_users, **extra,
        "stages": [{"name": s["name"], "lora": s["lora"], "samples": s["samples"]} for s in stages],
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    last = {k: v for k, v in stages[-1]["best"].items() if k != "ranks"}
    metrics = {"selection": {"split": "valid", **last},  # last holds the users it scored
               "history": [r for s in stages for r in s["history"]]}
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
    write_manifest(out)
    return config, metrics


def export_stage1(data: InteractionData, variant: Variant, recipe: TrainRecipe, index: ItemIndex, out: str | Path,
                  artifacts=None, warm_start: str | Path | None = None, base=None) -> dict:
    """Write the best validated stage-1 weights a run has saved so far (its state here, else its
    snapshot in ``warm_start``) as a stage-1 checkpoint, while the run goes on: the run's ``wo_aat``
    (stage 1 of every variant with the annealing adapter is that variant without it), recorded as
    such in its config (``stage1_of``, and ``progress``: where the run stood)."""
    from eager.model.variants import get_variant

    recipe = with_gct(recipe, variant)
    state_file = run_work_dir(artifacts, data.name, variant, recipe) / "stage1_state.pt"
    if state_file.exists():
        state = torch.load(state_file, weights_only=False)
    elif has_snapshot(warm_start, "stage1"):
        state = read_snapshot(Path(warm_start), "stage1")
    else:
        raise FileNotFoundError(f"no saved stage-1 state of this run at {state_file}"
                                + (f" nor a snapshot in {warm_start}" if warm_start else ""))
    if state["best_lora"] is None:
        raise ValueError(f"the run at step {state['step']} of {state['total']} has not finished an epoch yet: "
                         "nothing has been validated to export")
    _, tokenizer, _, _ = backbone_for_index(base, index)
    stage = {"name": "stage1", "lora": asdict(recipe.stage1.lora), "samples": state["settings"].get("samples"),
             "best": state["best"], "history": state["history"]}
    stage1_variant = get_variant("wo_aat") if variant.use_aat else variant
    progress = {"epoch": state["epoch"], "step": state["step"], "planned_steps": state["total"],
                "best_epoch": state["best"].get("epoch"), "stage1_complete": state["step"] >= state["total"]}
    write_checkpoint(Path(out), data.name, stage1_variant, recipe, index, len(tokenizer), base,
                                 {"stage1": (state["best_lora"], state["best_rows"])}, [stage],
                                 {"stage1_of": variant.name, "progress": progress, "exported": timestamp()})
    return {"out": str(out), "progress": progress, "selection": {k: v for k, v in state["best"].items() if k != "ranks"}}


def train_variant(
    data: InteractionData,
    variant: Variant,
    recipe: TrainRecipe,
    out_dir: str | Path,
    artifacts: str | Path | None = None,
    base: str | Path | None = None,
    max_users: int | None = None,
    progress: bool = True,
    model=None,
    tokenizer=None,
    index: ItemIndex | None = None,
    tables: dict[str, np.ndarray] | None = None,
    restart: bool = False,
    warm_start: str | Path | None = None,
) -> dict:
    """Train stage 1 (+ AAT) and export the checkpoint; model/index/tables may be injected (tests).

    An interrupted run with the same settings resumes from its last save; ``restart`` sets its saved
    states aside (kept, renamed) and trains from scratch. ``warm_start``: a folder of snapshots
    (:func:`export_snapshots`) that a run with no saved state here goes on from."""
    if recipe.stage1.full_finetune or recipe.stage2.full_finetune:
        raise NotImplementedError(
            f"recipe {recipe.name!r} fully fine-tunes the backbone (the paper's 7B setting); that cannot be "
            "exported as a ≤ 12 MiB checkpoint and is not implemented. Use --recipe smollm2 (LoRA + code rows)."
        )
    out = Path(out_dir)
    # Resumable state and logs live beside the artifacts, never inside the (git-tracked) checkpoint.
    work = run_work_dir(artifacts, data.name, variant, recipe)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log = make_logger(work / "train_log.jsonl", progress)
    recipe = with_gct(recipe, variant)
    # Where and with what this run trained: its tokens/s and memory mean little without the card.
    # (The launcher's env, not torch.distributed: accelerate starts the process group in the first stage.)
    trained_on = {"machine": machine_line(), "processes": int(os.environ.get("WORLD_SIZE", 1)), "started": timestamp()}
    if int(os.environ.get("RANK", 0)) == 0:
        log({"run": variant.name, "recipe": recipe.name, "out": str(out), **trained_on})
    if max_users:
        recipe = replace(recipe, max_users=max_users)
    started = time.monotonic()
    index = index or variant_index(data, variant, artifacts, progress=progress)
    if model is None:
        model, tokenizer = load_backbone(base)
    vocab = prepare_backbone(model, tokenizer, index, recipe.token_init, data)
    trie = CodeTrie(index, vocab)
    projectors = None
    if variant.use_gct:
        tables = tables if tables is not None else embedding_tables(data, artifacts, progress=progress)
        projectors = DecompressionProjectors(model.config.hidden_size, gct_tables(index, data, tables),
                                             seed=recipe.training_seed)

    stages = []
    samples = stage_samples(data, index, recipe, "stage1")
    model, lora1, rows1, info1 = train_stage("stage1", model, tokenizer, index, trie, data, samples, recipe.stage1,
                                             recipe, projectors, work, log, progress, restart, warm_start)
    # Code rows go with the last stage only: AAT's rows supersede stage 1's (LoRA never touches them).
    main_process = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    stage_files = {"stage1": (lora1, None if variant.use_aat else rows1)}
    stages.append({"name": "stage1", "lora": asdict(recipe.stage1.lora), "samples": len(samples), **info1})
    if info1.get("sharded"):  # FSDP shards cannot be merged in place: stage 2 starts from base + stage 1
        model = rebuilt_after_stage(base, index, recipe.stage1.lora, lora1, rows1)
    else:
        model = model.merge_and_unload()
    if variant.use_aat:
        samples2 = stage_samples(data, index, recipe, "stage2")
        model, lora2, rows2, info2 = train_stage("stage2", model, tokenizer, index, trie, data, samples2,
                                                 recipe.stage2, recipe, None, work, log, progress, restart,
                                                 warm_start)
        stage_files["stage2"] = (lora2, rows2)
        stages.append({"name": "stage2", "lora": asdict(recipe.stage2.lora), "samples": len(samples2), **info2})
    if not main_process:  # under torchrun every process trained; one writes the checkpoint
        return {"out": str(out), "rank": torch.distributed.get_rank()}
    config, metrics = write_checkpoint(out, data.name, variant, recipe, index, len(tokenizer), base, stage_files, stages,
                                       {"train_minutes": round((time.monotonic() - started) / 60, 2),
                                        "trained_on": {**trained_on, "finished": timestamp()}})
    for state in work.glob("*_state.pt"):  # the run is complete: nothing left to resume
        state.unlink()
    # Each stage's own best validation with its per-user ranks, for paired comparisons (eager lab search):
    # the last is the checkpoint's; AAT's stage 1 is `wo_aat` at its steps.
    return {"out": str(out), **config, "selection": metrics["selection"], "history": metrics["history"],
            "stage_selections": {s["name"]: s["best"] for s in stages}}


