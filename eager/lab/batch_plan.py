"""A stage's first-epoch batches in tokens: what must fit a GPU's memory, known before a lease is spent.

    EAGER_DATA_ROOT=../shared/data python eager/lab/batch_plan.py --dataset beauty --recipe multitask-short \
        [--variant full | --index FILE] [--stage stage1] [--train-seed N] [--trial T] [--steps N] [--json]

The trainer's own plan for the first epoch of a stage on one process (eager.train.trainer's
batching_lengths, epoch_order and stage_batches, on eager.train.pipeline.stage_samples), each
batch measured in trained tokens and in its packed layout (rows x width, what attention and the
activations are laid out in). Summarised over the epoch and over its first --steps (a run's
--max-steps), with the batches past a few sizes. A step's memory grows about linearly with its
tokens (~1.1 MiB a token uncompiled with LoRA dropout, docs/training.md), so the largest batch is
the one that must fit: on Beauty the multitask-short recipe's reaches 98,304 tokens (256 samples at
max_len), which ran an 80 GB H100 out of memory and fits an H200. ``--trial`` plans a search
trial's recipe instead (a named one such as ``history-5``, or ``NAME:field=value,...`` as `eager
search` takes it); the epoch's total tokens then say what the trial saves in GPU time.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch

from eager.backbone import load_backbone
from eager.data import load_dataset
from eager.index.item_index import ItemIndex
from eager.lab.search import parse_trial, trial_recipe
from eager.model.assembly import prepare_backbone
from eager.model.variants import get_variant
from eager.train.batching import pack_rows, token_lengths
from eager.train.pipeline import stage_samples, variant_index
from eager.train.recipes import TrainRecipe, get_recipe
from eager.train.trainer import batching_lengths, epoch_order, stage_batches

THRESHOLDS = (32_768, 65_536, 98_304)


def batch_plan(tokenizer, samples, recipe: TrainRecipe, stage_name: str) -> list[dict]:
    """Per batch of the stage's first epoch, in training order: its sample ids, trained tokens, and
    packed layout (rows x width; with pack_len None, samples x the longest)."""
    stage = getattr(recipe, stage_name)
    lengths = batching_lengths(tokenizer, samples, stage, recipe)
    order = epoch_order(len(samples), torch.Generator().manual_seed(recipe.training_seed))
    exact = lengths if stage.batch_tokens else token_lengths(tokenizer, samples, recipe.max_len)
    plan = []
    for batch in stage_batches(order, lengths, stage, recipe, 0):
        sizes = [exact[i] for i in batch]
        if recipe.pack_len:
            rows = pack_rows(sizes, max(recipe.pack_len, recipe.max_len))
            layout = len(rows) * max(sum(sizes[i] for i in row) for row in rows)
        else:
            layout = len(sizes) * max(sizes)
        plan.append({"samples": batch, "tokens": sum(sizes), "layout": layout})
    return plan


def summarise(plan: list[dict], steps: int | None) -> dict:
    def stats(part: list[dict]) -> dict:
        tokens = np.array([b["tokens"] for b in part])
        return {"batches": len(part), "tokens_total": int(tokens.sum()), "tokens_median": int(np.median(tokens)), "tokens_p90": int(np.percentile(tokens, 90)),
                "tokens_max": int(tokens.max()), "layout_max": max(b["layout"] for b in part),
                **{f"batches_over_{t}": int((tokens > t).sum()) for t in THRESHOLDS}}

    report = {"epoch": stats(plan)}
    if steps:
        report[f"first_{min(steps, len(plan))}_steps"] = stats(plan[:steps])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--recipe", default="smollm2")
    parser.add_argument("--variant", default="full")
    parser.add_argument("--stage", choices=("stage1", "stage2"), default="stage1")
    parser.add_argument("--train-seed", type=int)
    parser.add_argument("--trial", help="plan this search trial's recipe (history-5, or NAME:field=value,...)")
    parser.add_argument("--steps", type=int, help="also summarise the first N steps (a run's --max-steps)")
    parser.add_argument("--base", help="GGUF file or HF folder (default: the packaged SmolLM2)")
    parser.add_argument("--artifacts", help="where the variant's item index is (default: $EAGER_ARTIFACTS or ./artifacts)")
    parser.add_argument("--index", help="an index.json instead (say, a checkpoint's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    recipe = get_recipe(args.recipe)
    if args.train_seed is not None:
        recipe = replace(recipe, train_seed=args.train_seed)
    if args.trial:
        try:
            recipe = trial_recipe(recipe, parse_trial(args.trial))
        except ValueError as error:
            raise SystemExit(f"--trial: {error}") from None
    data = load_dataset(args.dataset)
    if args.index:
        index = ItemIndex.load(args.index)
    else:
        index = variant_index(data, get_variant(args.variant), args.artifacts, progress=False)
    model, tokenizer = load_backbone(args.base)
    prepare_backbone(model, tokenizer, index, recipe.token_init, data)  # code tokens count as one token each
    samples = stage_samples(data, index, recipe, args.stage)
    report = {"dataset": data.name, "recipe": recipe.name, "variant": args.variant, "stage": args.stage,
              "train_seed": recipe.training_seed, "samples": len(samples),
              "batch_size": getattr(recipe, args.stage).batch_size, "batch_tokens": getattr(recipe, args.stage).batch_tokens,
              "pack_len": recipe.pack_len, "max_len": recipe.max_len,
              **summarise(batch_plan(tokenizer, samples, recipe, args.stage), args.steps)}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
