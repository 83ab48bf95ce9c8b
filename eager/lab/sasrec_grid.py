"""A SASRec grid chosen on validation only: each trial trains with early stopping on validation
NDCG@10 and is written with its whole curve; test is never read here.

``python -m eager.lab.sasrec_grid --dataset beauty --out DIR --trial NAME:field=value,...``;
trials already in ``DIR/trials.jsonl`` are skipped, so a stopped grid resumes by the same command.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from eager.baselines.sasrec import RECIPES, SASRecConfig, save_sasrec, train_sasrec
from eager.data import load_dataset
from eager.utils import machine_line, timestamp


def parse_trial(text: str, base: SASRecConfig) -> tuple[str, SASRecConfig]:
    """``name:field=value,field=value`` → (name, config); values are read with the field's type."""
    name, _, spec = text.partition(":")
    types = {f.name: type(getattr(base, f.name)) for f in fields(base)}
    overrides = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        if key not in types:
            raise KeyError(f"trial {name!r}: SASRecConfig has no field {key!r}; fields: {', '.join(types)}")
        kind = types[key]
        overrides[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return name, replace(base, **overrides)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-root")
    parser.add_argument("--base", default="tuned", choices=sorted(RECIPES))
    parser.add_argument("--trial", action="append", required=True, help="NAME:field=value,... (repeatable)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "trials.jsonl"
    done = {json.loads(line)["name"] for line in log.read_text().splitlines()} if log.exists() else set()
    data = load_dataset(args.dataset, args.data_root)
    for text in args.trial:
        name, config = parse_trial(text, RECIPES[args.base])
        if name in done:
            print(f"{name}: already in {log}, skipped")
            continue
        model, info = train_sasrec(data, config, progress=False)
        save_sasrec(model, data, out / name, {"recipe": f"grid:{name}", **info})
        record = {"name": name, "dataset": data.name, "config": asdict(config),
                  "best_valid_ndcg@10": info["best_valid_ndcg@10"],
                  "best_valid_recall@10": [r for r in info["history"] if r.get("best")][-1]["valid_recall@10"],
                  "epochs_run": len(info["history"]), "train_minutes": info["train_minutes"],
                  "curve": info["history"], "machine": machine_line(), "created": timestamp()}
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: record[k] for k in ("name", "best_valid_ndcg@10", "epochs_run", "train_minutes")}), flush=True)


if __name__ == "__main__":
    main()
