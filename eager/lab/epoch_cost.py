"""What a stage-1 epoch costs under each recipe, measured side by side in one run.

    EAGER_DATA_ROOT=../shared/data python -m eager.lab.epoch_cost --dataset beauty \
        --index checkpoints/beauty/full/index.json --recipes seqrec-compact-bf16,whole-history --steps 60

For each recipe: the stage-1 samples of the whole dataset and their exact tokens (every task the
recipe trains counted), the supervised items, then ``--steps`` real training steps of the real
backbone (LoRA, GCT on) through the trainer, whose steady tokens/s (after its calibration steps)
gives the extrapolated epoch time on this machine. GCT reads random tables of the real shapes
(384-d text, 64-d behaviour): their cost is in the shapes, not the values. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from eager.data import load_dataset
from eager.index.item_index import ItemIndex
from eager.lab.report import emit
from eager.model.variants import get_variant
from eager.train.batching import token_lengths
from eager.train.pipeline import stage_samples, train_variant
from eager.train.recipes import get_recipe
from eager.train.samples import HistorySample
from eager.utils import cpu_has_bf16, machine_line, timestamp

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> dict[str, bool]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = set(next((line for line in text.splitlines() if line.startswith("flags")), "").split())
    return {flag: flag in flags for flag in CPU_FLAGS}


def epoch_tokens(data, index, recipe, tokenizer) -> dict:
    samples = stage_samples(data, index, recipe, "stage1")
    lengths = token_lengths(tokenizer, samples, recipe.max_len)
    supervised = sum(len(s.targets) if isinstance(s, HistorySample) else 1 for s in samples)
    return {"samples": len(samples), "tokens": int(sum(lengths)), "supervised_predictions": supervised,
            "tokens_per_prediction": round(sum(lengths) / max(supervised, 1), 1)}


def measure(dataset: str, index_path: str, recipe_names: list[str], steps: int, data_root: str | None) -> dict:
    from eager.backbone import load_backbone

    data = load_dataset(dataset, data_root)
    index = ItemIndex.load(index_path)
    rng = np.random.default_rng(0)
    tables = {"semantic": rng.normal(size=(data.num_items, 384)).astype(np.float32),
              "behaviour": rng.normal(size=(data.num_items, 64)).astype(np.float32)}
    report = {"what": f"stage-1 epoch cost per recipe on {data.name}: tokens an epoch, then {steps} training "
                      "steps of the real backbone through the trainer", "dataset": data.name,
              "machine": machine_line(), "cpu_flags": cpu_flags(), "native_bf16": cpu_has_bf16(),
              "created": timestamp(), "recipes": {}}
    for name in recipe_names:
        recipe = get_recipe(name)
        recipe = replace(recipe, stage1=recipe.stage1.exact_steps(steps), eval_users=4, eval_beams=4)
        model, tokenizer = load_backbone()
        entry = {"prompt_style": recipe.prompt_style, "stage1_tasks": list(recipe.stage1.tasks),
                 "batch_size": recipe.stage1.batch_size}
        with tempfile.TemporaryDirectory() as work:
            train_variant(data, get_variant("wo_aat"), recipe, Path(work) / "ckpt", Path(work) / "artifacts",
                          progress=False, model=model, tokenizer=tokenizer, index=index, tables=tables)
            history = json.loads((Path(work) / "ckpt" / "metrics.json").read_text())["history"]
        entry.update(epoch_tokens(data, index, recipe, tokenizer))  # the tokenizer now holds the code tokens
        first = history[0]
        rate = first.get("tokens_per_s_steady") or first["tokens_per_s"]
        entry.update({"steps_timed": first["step"], "tokens_per_s": rate,
                      "tokens_per_step": round(first["tokens"] / first["step"]),
                      "epoch_minutes": round(entry["tokens"] / rate / 60, 1)})
        report["recipes"][name] = entry
        print(json.dumps({name: entry}), flush=True)
    names = list(report["recipes"])
    if len(names) >= 2:
        a, b = (report["recipes"][n] for n in names[:2])
        report["ratio"] = {"tokens": round(a["tokens"] / b["tokens"], 2),
                           "epoch_time": round(a["epoch_minutes"] / b["epoch_minutes"], 2)}
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--index", required=True, help="an index.json (e.g. a shipped checkpoint's)")
    parser.add_argument("--recipes", default="seqrec-compact-bf16,whole-history")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--data-root")
    parser.add_argument("--out", help="also write the report here (JSON)")
    args = parser.parse_args(argv)
    report = measure(args.dataset, args.index, args.recipes.split(","), args.steps, args.data_root)
    emit(report, args.out)


if __name__ == "__main__":
    main()
