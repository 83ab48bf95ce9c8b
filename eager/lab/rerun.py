"""Record another training seed's run of a checkpoint's variant into its metrics: the run-to-run noise floor."""

from __future__ import annotations

import json
from pathlib import Path

from eager.model.checkpoint import METRICS_FILE, _update_metrics


def record_rerun(checkpoint: str | Path, rerun: str | Path) -> dict:
    """Put another training run of the checkpoint's variant and recipe, on another training seed, into
    its metrics.json under ``reruns`` (and refresh its manifest): a variant's numbers are one draw of
    training's randomness, and the model card shows what a second draw moved beside them. The rerun
    checkpoint itself need not ship; what it recorded (its selection and any `eval --record` splits) is copied."""
    from eager.model.checkpoint import read_config

    folder, other = Path(checkpoint), Path(rerun)
    own_config, rerun_config = read_config(folder), read_config(other)  # both complete and unmodified
    for key, describe in (("dataset", lambda c: c["dataset"]), ("variant", lambda c: c["variant"]["name"])):
        if describe(own_config) != describe(rerun_config):
            raise ValueError(f"{other} is not a rerun of {folder}: its {key} is {describe(rerun_config)!r}, "
                             f"not {describe(own_config)!r}")
    differing = _recipe_differences(own_config["recipe"], rerun_config["recipe"])
    if differing:
        shown = "; ".join(f"{path} {theirs!r}, not {ours!r}" for path, ours, theirs in differing[:4])
        raise ValueError(f"{other} is not a rerun of {folder}: its recipe trains differently ({shown}"
                         f"{'; …' if len(differing) > 4 else ''})")
    own_seed, rerun_seed = (_training_seed(c["recipe"]) for c in (own_config, rerun_config))
    if own_seed == rerun_seed:
        raise ValueError(f"{other} trained on the same seed ({own_seed}) as {folder}: a rerun needs another "
                         "`--train-seed`")
    recorded = json.loads((other / METRICS_FILE).read_text()) if (other / METRICS_FILE).exists() else {}
    splits = {split: recorded[split] for split in ("selection", "valid", "test") if split in recorded}
    if not splits:
        raise ValueError(f"{other} has recorded no evaluation: run `eager eval --checkpoint {other} --split test "
                         "--record` first")
    entry = {"train_seed": rerun_seed, "train_minutes": rerun_config.get("train_minutes"),
             "trained_on": rerun_config.get("trained_on"), **splits}
    _update_metrics(folder, lambda metrics: metrics | {
        "reruns": [r for r in metrics.get("reruns", []) if r["train_seed"] != rerun_seed] + [entry]})
    return entry


def _recipe_differences(ours: dict, theirs: dict) -> list[tuple[str, object, object]]:
    """Where two recorded recipes differ, as (dotted path, ours, theirs), ignoring what a rerun may change:
    the name (a search trial names each seed's run apart, `epochs2` and `epochs2-seed7`) and the training
    seed."""
    from eager.train.resume import flatten_dotted

    ignored = {"name", "train_seed"}
    ours_flat, theirs_flat = (dict(flatten_dotted({k: v for k, v in r.items() if k not in ignored}))
                              for r in (ours, theirs))
    return [(path, ours_flat.get(path), theirs_flat.get(path)) for path in sorted(ours_flat.keys() | theirs_flat.keys())
            if ours_flat.get(path) != theirs_flat.get(path)]


def _training_seed(recipe: dict) -> int:
    """A recorded recipe's training seed (``train_seed``, else ``seed``), as ``TrainRecipe.training_seed``."""
    return recipe["seed"] if recipe.get("train_seed") is None else recipe["train_seed"]
