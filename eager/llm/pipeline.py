"""``eager train`` / ``eager eval --checkpoint`` / ``eager recommend``: whole runs as functions."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from eager.data.dataset import InteractionData
from eager.data.split import eval_cases, train_item_counts
from eager.embeddings.semantic import semantic_embeddings
from eager.eval.harness import evaluate_rankings
from eager.eval.metrics import ranking_agreement
from eager.index.build import (
    IndexConfig,
    behaviour_dir,
    build_index,
    index_dir,
    load_behaviour,
    semantic_cache_dir,
)
from eager.index.item_index import INDEX_FILE, ItemIndex
from eager.llm.backbone import load_backbone, resolve_backbone_source
from eager.llm.checkpoint import (
    CONFIG_FILE,
    METRICS_FILE,
    LoadedModel,
    save_stage,
    write_manifest,
)
from eager.llm.decode import CodeTrie
from eager.llm.gct import DecompressionProjectors
from eager.llm.recipes import TrainRecipe, Variant, with_gct
from eager.llm.setup import backbone_for_index, merge_stage, prepare_backbone
from eager.llm.tasks import build_samples
from eager.llm.train import gct_tables, make_logger, train_stage
from eager.llm.validation import training_users
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
) -> dict:
    """Train stage 1 (+ AAT) and export the checkpoint; model/index/tables may be injected (tests).

    An interrupted run with the same settings resumes from its last epoch; ``restart`` sets its saved
    states aside (kept, renamed) and trains from scratch."""
    if recipe.stage1.full_finetune or recipe.stage2.full_finetune:
        raise NotImplementedError(
            f"recipe {recipe.name!r} fully fine-tunes the backbone (the paper's 7B setting); that cannot be "
            "exported as a ≤ 12 MiB checkpoint and is not implemented. Use --recipe smollm2 (LoRA + code rows)."
        )
    out = Path(out_dir)
    # Resumable state and logs live beside the artifacts, never inside the (git-tracked) checkpoint.
    work = artifacts_root(artifacts) / data.name / "train" / f"{variant.name}-{recipe.name}"
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
                                             recipe, projectors, work, log, progress, restart)
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
                                                 recipe.stage2, recipe, None, work, log, progress, restart)
        stage_files["stage2"] = (lora2, rows2)
        stages.append({"name": "stage2", "lora": asdict(recipe.stage2.lora), "samples": len(samples2), **info2})
    if not main_process:  # under torchrun every process trained; one writes the checkpoint
        return {"out": str(out), "rank": torch.distributed.get_rank()}
    for name, (lora, rows) in stage_files.items():
        save_stage(out, name, lora, rows)
    index.save(out)
    backbone = str(base) if base else resolve_backbone_source(None).name
    config = {
        "dataset": data.name, "variant": asdict(variant), "recipe": asdict(recipe), "backbone": backbone,
        "backbone_override": str(base) if base else None, "vocab_size": len(tokenizer),
        "max_users": recipe.max_users, "train_minutes": round((time.monotonic() - started) / 60, 2),
        "trained_on": {**trained_on, "finished": timestamp()},
        "stages": [{"name": s["name"], "lora": s["lora"], "samples": s["samples"]} for s in stages],
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    last = {k: v for k, v in stages[-1]["best"].items() if k != "ranks"}
    metrics = {"selection": {"split": "valid", **last},  # last holds the users it scored
               "history": [r for s in stages for r in s["history"]]}
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
    write_manifest(out)
    for state in work.glob("*_state.pt"):  # the run is complete: nothing left to resume
        state.unlink()
    # Each stage's own best validation with its per-user ranks, for paired comparisons (eager search):
    # the last is the checkpoint's; AAT's stage 1 is `wo_aat` at its steps.
    return {"out": str(out), **config, "selection": metrics["selection"], "history": metrics["history"],
            "stage_selections": {s["name"]: s["best"] for s in stages}}


def evaluate_checkpoint(
    loaded: LoadedModel,
    data: InteractionData,
    split: str,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    beams: int = 20,
    k: int = 20,
    exact: bool = False,
    exact_k: int = 10,
    max_history: int | None = None,
    exclude_history: bool = False,
) -> dict:
    """Constrained beam search for every (or the first ``limit``) user of ``split``, via the harness.

    ``exact``: rank by the exact top-``exact_k`` of the whole catalogue instead (:func:`exact_top_k`:
    the beam widened per user from ``beams`` until provably exact), scored at 5 and ``exact_k``, with
    the plain beam's lists of the same users beside them; the report says which widths the users
    needed, i.e. how often ``beams`` alone was not exact. Exact top-20s cost far wider beams than
    top-10s, so the cutoff the headline metrics use is the default.

    ``max_history``: how many of each user's last items the prompt holds (default: the model's own
    window, ``loaded.history_window``: the protocol's 20 unless it trained on shorter histories). A
    different value is a diagnostic of how the model uses long histories; the users and their
    held-out items stay the same, so its predictions pair with the default's.

    ``exclude_history``: never recommend a user's earlier items (all of them, not only those the
    prompt holds); the search leaves them out of the trie, so the beams go to other items. The
    protocol keeps them; this measures what the model's repeats cost.
    """
    from tqdm.auto import tqdm

    from eager.serve.engine import BeamSearchEngine, exact_top_k

    window = loaded.history_window
    max_history = max_history or window
    cases = eval_cases(data, split, max_history)
    if limit:
        cases = cases[:limit]
    # What each user already has (every earlier item, not just the prompt's): the same users, in order.
    uncapped = eval_cases(data, split, max_history=None)[: len(cases)] if exclude_history else []
    batch_size = batch_size or (128 if next(loaded.model.parameters()).is_cuda else 8)
    engine = BeamSearchEngine.from_loaded(loaded)
    keys = data.item_keys
    rankings, needed, beam_rankings = {}, [], {}
    first_width = max(exact_k, beams)  # the plain beam the exact lists are set beside
    for start in tqdm(range(0, len(cases), batch_size), desc=f"eval {split}" + (" (exact)" if exact else "")):
        chunk = cases[start : start + batch_size]
        histories = [[keys[i] for i in c.history] for c in chunk]
        exclude = ([{keys[i] for i in c.history} for c in uncapped[start : start + batch_size]]
                   if exclude_history else None)
        if exact:
            found = exact_top_k(engine, histories, k=exact_k, beams=first_width, max_beams=max(4096, beams),
                                exclude=exclude)
            recs = found.recommendations
            needed.extend(found.beams_needed)
            for case, rec in zip(chunk, found.at_first_width):
                beam_rankings[data.user_keys[case.user]] = [r.key for r in rec]
        else:
            recs = engine.search(histories, k=min(k, beams), beams=beams, exclude=exclude).recommendations
        for case, rec in zip(chunk, recs):
            rankings[data.user_keys[case.user]] = [r.key for r in rec]
    # Score only the users we ran (a --limit run is a partial evaluation, said so in the report).
    subset = replace(data, sequences=[data.sequences[c.user] for c in cases],
                     user_keys=[data.user_keys[c.user] for c in cases])
    counts = train_item_counts(data)  # popularity is the whole train split's, whatever the subset
    model = f"eager/{loaded.config['variant']['name']}"
    extra = {"limit": limit, "beams": beams, "checkpoint": str(loaded.directory)}
    if max_history != window:
        extra["model_history_window"] = window  # a diagnostic read: what the model reads by itself
    scoring = {"extra": extra, "item_counts": counts, "exclude_history": exclude_history}
    if exact:
        # The plain beam's lists of the same users, scored and written beside the exact ones, so
        # `eager compare OUT/beam OUT` pairs them; the agreement says how much the beam changed.
        ks = (5, exact_k)
        beam_dir = Path(out_dir) / "beam" if out_dir else None
        beam = evaluate_rankings(subset, split, beam_rankings, model=f"{model}/beam{first_width}",
                                 config=loaded.config, out_dir=beam_dir, ks=ks, max_history=max_history, **scoring)
        users = list(rankings)
        extra |= {"search": "exact", "beams_needed": beams_needed_summary(needed, first_width),
                  "beam": {f"{name}@{cut}": beam[f"{name}@{cut}"] for cut in ks for name in ("recall", "ndcg")},
                  "agreement_with_beam": ranking_agreement([beam_rankings[u] for u in users],
                                                           [rankings[u] for u in users], exact_k)}
        return evaluate_rankings(subset, split, rankings, model=f"{model}/exact", config=loaded.config,
                                 out_dir=out_dir, ks=ks, max_history=max_history, **scoring)
    return evaluate_rankings(subset, split, rankings, model=model, config=loaded.config, out_dir=out_dir,
                             max_history=max_history, **scoring)


def beams_needed_summary(needed: list[int | None], first: int) -> dict:
    """How wide the beam had to grow for exact results: users per width (``"full"``: full-catalogue scoring)."""
    counts = Counter("full" if width is None else str(width) for width in needed)
    order = sorted(counts, key=lambda w: float("inf") if w == "full" else int(w))
    return {"users_per_width": {w: counts[w] for w in order},
            "exact_at_first_width": counts.get(str(first), 0) / max(1, len(needed))}


def record_evaluation(checkpoint: str | Path, split: str, report: dict, dtype: str) -> dict:
    """Put a full evaluation's numbers into the checkpoint's metrics.json (and refresh its manifest)."""
    from eager.llm.checkpoint import read_config

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


def record_rerun(checkpoint: str | Path, rerun: str | Path) -> dict:
    """Put another training run of the checkpoint's variant and recipe, on another training seed, into
    its metrics.json under ``reruns`` (and refresh its manifest): a variant's numbers are one draw of
    training's randomness, and the model card shows what a second draw moved beside them. The rerun
    checkpoint itself need not ship; what it recorded (its selection and any `eval --record` splits) is copied."""
    from eager.llm.checkpoint import read_config

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
    from eager.llm.resume import flatten_dotted

    ignored = {"name", "train_seed"}
    ours_flat, theirs_flat = (dict(flatten_dotted({k: v for k, v in r.items() if k not in ignored}))
                              for r in (ours, theirs))
    return [(path, ours_flat.get(path), theirs_flat.get(path)) for path in sorted(ours_flat.keys() | theirs_flat.keys())
            if ours_flat.get(path) != theirs_flat.get(path)]


def _training_seed(recipe: dict) -> int:
    """A recorded recipe's training seed (``train_seed``, else ``seed``), as ``TrainRecipe.training_seed``."""
    return recipe["seed"] if recipe.get("train_seed") is None else recipe["train_seed"]


def recommend_keys(loaded: LoadedModel, data: InteractionData, history: Sequence[str], k: int = 10, beams: int = 20,
                   exclude_history: bool = False):
    """Recommendations for one history of item keys (unknown keys raise a KeyError naming them);
    ``exclude_history``: none of the history's own items."""
    if not history:
        raise ValueError("the history is empty: give at least one item key")
    data.indices_of(list(history))  # clear error for unknown keys
    for key in history:
        loaded.index.row(key)
    from eager.serve.engine import BeamSearchEngine

    engine = BeamSearchEngine.from_loaded(loaded)
    exclude = [set(history)] if exclude_history else None
    prompt = list(history)[-loaded.history_window:]  # what the model reads, as evaluation gives it
    return engine.search([prompt], k, max(k, beams), exclude=exclude).recommendations[0]
