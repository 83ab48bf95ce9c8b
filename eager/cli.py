"""The ``eager`` command: one subcommand per pipeline stage.

Errors a user can fix (missing data, unknown dataset or key, bad files) are printed as one clear
message with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eager.utils import artifacts_root


def _add_data_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="folder holding <Dataset>/ folders (default: $EAGER_DATA_ROOT or ./data)")


def _add_artifacts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", help="where outputs go (default: $EAGER_ARTIFACTS or ./artifacts)")


def _add_training_run(parser: argparse.ArgumentParser, recipe: str, variant_help: str) -> None:
    """What `train` and `search` share: which dataset, variant, recipe and backbone, and where things live."""
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--variant", default="full", help=variant_help)
    # Spelled out rather than read from eager.train.recipes, which would import torch for every `eager --help`.
    parser.add_argument("--recipe", default=recipe, help="a named recipe (eager/train/recipes.py): whole-history (the default: seqrec "
                        "on whole user histories in one pass), smollm2, "
                        "multitask-short (~4.5 GPU-minutes), multitask-quarter-epoch (the shipped Beauty models), "
                        "seqrec-compact (~1.5 h on a CPU), seqrec-compact-bf16 (the same, bf16 where the CPU has it), "
                        "seqrec-compact-2ep (the shipped Scientific model), check (a half-hour check of the real "
                        "backbone), smoke (tests) or paper (the authors' per-prefix LC-Rec recipe, for reference)")
    parser.add_argument("--eval-users", type=int, help="validation users for model selection")
    parser.add_argument("--base", help="another backbone: a .gguf file or a Hugging Face folder")
    parser.add_argument("--restart", action="store_true",
                        help="start from scratch even if an interrupted run left a state to resume "
                        "(the state is kept, renamed *.set-aside-<time>.pt)")
    parser.add_argument("--json", action="store_true")
    _add_data_root(parser)
    _add_artifacts(parser)


def _add_serving(parser: argparse.ArgumentParser, default_dtype: str = "auto") -> None:
    """How a checkpoint is rebuilt: serving precision and the backbone it was trained on."""
    # Spelled out (eager.serve.loader.DTYPES would import torch for every `eager --help`); a test ties them.
    parser.add_argument("--dtype", choices=["auto", "nf4", "nf4-mlp", "int4", "int4-mlp", "bf16", "fp32"],
                        default=default_dtype,
                        help=f"weights precision (default {default_dtype}; auto: nf4-mlp on CPU, bf16 on CUDA; "
                        "nf4: every Linear 4-bit (bitsandbytes); nf4-mlp: the MLPs 4-bit, attention unquantised; "
                        "int4, int4-mlp: the same on torch's CPU int4 kernel, CPU only: faster, rankings drift more)")
    parser.add_argument("--base", help="the backbone the checkpoint was trained on, if not the default")
    parser.add_argument("--no-cache", action="store_true",
                        help="rebuild the merged model from base + checkpoint instead of using the serving cache")


def _load_serving(args):
    """The checkpoint through the cached serving loader; the precision choice goes to stderr."""
    from eager.serve.loader import load_for_serving

    loaded, choice, timings = load_for_serving(args.checkpoint, args.dtype, args.base, use_cache=not args.no_cache)
    print(f"eager: serving as {choice.dtype} (compute {choice.compute_dtype}) on {choice.device}: {choice.reason}; "
          f"loaded in {timings['load_s']} s{' (cache built)' if timings['cold'] else ''}", file=sys.stderr)
    return loaded, choice, timings


def _print(payload: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(payload))
    else:
        for key, value in payload.items():
            print(f"{key}: {value}")


def cmd_data_stats(args) -> None:
    from eager.data import load_dataset

    data = load_dataset(args.dataset, args.data_root)
    _print(data.stats(), args.json)


def cmd_data_prepare(args) -> None:
    from eager.data.prepare import prepare_dataset

    data, account = prepare_dataset(args.dataset, args.data_root, args.source, force=args.force, quiet=args.json)
    if args.json:
        print(json.dumps({**data.stats(), "dataset": data.name, "action": account}))
    else:
        print(account)
        _print(data.stats(), False)


def _comma_list(text: str) -> list[str]:
    """A comma-separated argument's entries, stripped, empty ones dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _metrics_line(report: dict) -> dict:
    keys = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "recall@20", "ndcg@20", "coverage@10", "median_popularity@10",
            "history_items@10")
    return {k: round(report[k], 4) for k in keys if k in report} | {"users": report["users"]}


def cmd_baseline(args) -> None:
    from eager.data import load_dataset

    data = load_dataset(args.dataset, args.data_root)
    out = Path(args.out) if args.out else artifacts_root(args.artifacts) / data.name / args.model
    if args.model == "pop":
        from eager.baselines.popularity import run_popularity

        if args.trained or args.max_history:
            raise ValueError("--trained and --max-history are for sasrec; popularity reads no history")
        reports = run_popularity(data, out)
    elif args.trained:
        from eager.baselines.sasrec import evaluate_sasrec, load_sasrec

        # Re-evaluate an exported model (say, reading fewer items) without training; it writes inside
        # the model's folder, never over the folder's own evaluation.
        model, meta = load_sasrec(args.trained, data)
        out = Path(args.out) if args.out else Path(args.trained) / f"history{args.max_history or model.config.max_len}"
        reports = evaluate_sasrec(model, data, out, config={"trained": str(args.trained), **meta.get("config", {})},
                                  max_history=args.max_history)
    else:
        from eager.baselines.sasrec import RECIPES, config_with, run_sasrec

        if args.max_history:
            raise ValueError("--max-history re-evaluates a trained SASRec: add --trained DIR "
                             "(e.g. artifacts/DATASET/sasrec)")
        if args.recipe not in RECIPES:
            raise KeyError(f"unknown SASRec recipe {args.recipe!r}; choose one of: {', '.join(RECIPES)}")
        config = config_with(
            RECIPES[args.recipe], epochs=args.epochs, lr=args.lr, hidden=args.hidden, dropout=args.dropout,
            max_minutes=args.max_minutes, seed=args.seed, loss=args.loss,
        )
        reports = run_sasrec(data, config, out, progress=not args.json, recipe=args.recipe)
    payload = {"model": args.model, "dataset": data.name, "out": str(out)}
    payload.update({split: _metrics_line(r) for split, r in reports.items()})
    _print(payload, args.json)


def _stage_steps(text: str) -> tuple[int, int]:
    """``--max-steps``: one cap for both stages (``300``) or one per stage (``274,188``)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"--max-steps {text!r}: give a positive step count, or two as STAGE1,STAGE2 (e.g. 274,188)")
    steps = [int(p) for p in parts]
    return steps[0], steps[-1]


def train_recipe_from_args(args):
    """The named recipe with ``eager train``'s overrides applied (each flag left unset keeps the recipe's)."""
    from dataclasses import replace

    from eager.train.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    if args.max_steps:
        first, second = _stage_steps(args.max_steps)
        recipe = replace(recipe, stage1=recipe.stage1.exact_steps(first), stage2=recipe.stage2.exact_steps(second))
    if args.eval_users:
        recipe = replace(recipe, eval_users=args.eval_users)
    if args.compile is not None:
        recipe = replace(recipe, compile=args.compile)
    if args.train_seed is not None:
        recipe = replace(recipe, train_seed=args.train_seed)
    if args.activation_checkpointing is not None:
        try:
            recipe = replace(recipe, activation_checkpointing=args.activation_checkpointing)
        except ValueError as error:
            raise SystemExit(f"--activation-checkpointing: {error}") from None
    if args.attention is not None:
        try:
            recipe = replace(recipe, attention=args.attention)
        except ValueError as error:  # e.g. varlen on a recipe that does not pack
            raise SystemExit(f"--attention: {error}") from None
    return recipe


def cmd_train(args) -> None:
    from eager.data import load_dataset
    from eager.model.variants import get_variant
    from eager.train.pipeline import train_variant

    recipe, variant = train_recipe_from_args(args), get_variant(args.variant)
    if args.snapshot_to:  # the saved state alone: no data, no model
        from eager.data.registry import get_spec
        from eager.train.pipeline import export_snapshots

        try:
            written = export_snapshots(args.artifacts, get_spec(args.dataset).name, variant, recipe, args.snapshot_to)
        except FileNotFoundError as err:
            raise SystemExit(f"eager train --snapshot-to: {err}") from None
        _print({"snapshots": written}, args.json)
        return
    if args.warm_start and not Path(args.warm_start).is_dir():
        raise SystemExit(f"eager train --warm-start: {args.warm_start} is not a folder of snapshots "
                         "(write one with --snapshot-to)")
    data = load_dataset(args.dataset, args.data_root)
    out = Path(args.out) if args.out else Path("checkpoints") / data.name / variant.name
    index = None
    if args.index:
        from eager.index.item_index import ItemIndex

        index = ItemIndex.load(args.index)
        if index.source != variant.index_source:
            raise ValueError(f"--index {args.index} is a {index.source} index; variant {variant.name} trains on a "
                             f"{variant.index_source} one")
        missing = set(data.item_keys) - set(index.keys)
        if missing:
            raise ValueError(f"--index {args.index} lacks {len(missing)} of {data.name}'s items (e.g. "
                             f"{next(iter(missing))!r}): it was built for another catalogue")
    if args.export_stage1:
        from eager.train.pipeline import export_stage1, variant_index

        index = index or variant_index(data, variant, args.artifacts, progress=not args.json)
        _print(export_stage1(data, variant, recipe, index, args.export_stage1, args.artifacts, args.warm_start,
                             args.base), args.json)
        return
    result = train_variant(data, variant, recipe, out, args.artifacts, args.base, args.max_users, progress=not args.json,
                           restart=args.restart, index=index, warm_start=args.warm_start)
    if "rank" in result:  # a non-main process of a data-parallel run: the main one reports
        return
    _print({"out": result["out"], "train_minutes": result["train_minutes"], "selection": result["selection"]}, args.json)


def cmd_search(args) -> None:
    from dataclasses import replace

    from eager.data import load_dataset
    from eager.lab.search import LEASE_TRIALS, parse_trial, planned_runs, run_search
    from eager.model.variants import get_variant
    from eager.train.recipes import get_recipe

    recipe, variant = get_recipe(args.recipe), get_variant(args.variant)
    try:
        trials = [parse_trial(t) for t in (args.trial or list(LEASE_TRIALS))]
        seeds = _seed_list(args.seeds) if args.seeds else None
        planned_runs(trials, variant, seeds)  # a trial that cannot run is refused before anything loads
    except ValueError as err:
        raise SystemExit(f"eager lab search: {err}") from None
    if args.eval_users:
        recipe = replace(recipe, eval_users=args.eval_users)
    data = load_dataset(args.dataset, args.data_root)
    out = Path(args.out) if args.out else artifacts_root(args.artifacts) / data.name / "search" / f"{variant.name}-{recipe.name}"
    results = run_search(data, variant, recipe, trials, out, args.artifacts, args.base, args.max_steps,
                         progress=not args.json, restart=args.restart, seeds=seeds)
    _print({"out": str(out), "trials": results}, args.json)


def _seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in _comma_list(text)]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated whole numbers, e.g. 42,7 (got {text!r})") from None


def cmd_recommend(args) -> None:
    from eager.data import load_dataset
    from eager.decoding.evaluate import recommend_keys

    loaded, _, _ = _load_serving(args)
    data = load_dataset(loaded.config["dataset"], args.data_root)
    history = _comma_list(args.history)
    recs = recommend_keys(loaded, data, history, args.k, args.beams, exclude_history=args.exclude_history)
    titles = dict(zip(data.item_keys, data.titles))
    rows = [{"rank": r + 1, "key": x.key, "code": x.code, "score": round(x.score, 4), "title": titles.get(x.key, "")}
            for r, x in enumerate(recs)]
    if args.json:
        print(json.dumps({"history": history, "recommendations": rows}))
    else:
        for row in rows:
            print(f"{row['rank']:>2}. {row['key']}  {row['code']}  {row['score']:.3f}  {row['title']}")


def cmd_eval(args) -> None:
    from eager.data import load_dataset
    from eager.data.split import DEFAULT_MAX_HISTORY
    from eager.eval.harness import evaluate_rankings, read_rankings

    if args.task == "item2index":
        return _probe_item2index(args)
    if args.checkpoint:
        from eager.decoding.evaluate import evaluate_checkpoint
        from eager.model.checkpoint import record_evaluation

        if args.record and args.exclude_history:
            raise ValueError("--record stores the protocol's evaluation, which keeps the users' earlier items; "
                             "--exclude-history is a diagnostic (keep it with --out)")
        if args.record and args.limit:
            raise ValueError("--record stores a full evaluation in the checkpoint; drop --limit")
        if args.record and args.exact:
            raise ValueError("--record stores the protocol's beam-search evaluation; --exact is a diagnostic "
                             "(keep it with --out)")
        if args.max_history is not None and args.max_history < 1:
            raise ValueError(f"--max-history must be at least 1 (got {args.max_history}): it is how many of the "
                             "last history items the prompt holds")
        loaded, choice, _ = _load_serving(args)
        if args.record and args.max_history not in (None, loaded.history_window):
            raise ValueError(f"--record stores the protocol's evaluation, in which this model reads the last "
                             f"{loaded.history_window} of the {DEFAULT_MAX_HISTORY} items it is given; "
                             f"--max-history {args.max_history} is a diagnostic (keep it with --out)")
        data = load_dataset(loaded.config["dataset"], args.data_root)
        out = args.out or str(artifacts_root(args.artifacts) / data.name / "eval" /
                              f"{Path(args.checkpoint).name}-{args.split}-{choice.dtype}")
        started = time.perf_counter()
        report = evaluate_checkpoint(loaded, data, args.split, args.limit, out, beams=args.beams,
                                     batch_size=args.batch_size, exact=args.exact, max_history=args.max_history,
                                     exclude_history=args.exclude_history)
        seconds = round(time.perf_counter() - started, 1)  # beam search + scoring, model load excluded
        keys = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "coverage@10", "median_popularity@10", "history_items@10",
                "invalid_rate", "users")
        if args.record:
            record_evaluation(args.checkpoint, args.split, report, choice.dtype)
        exact = {k: report[k] for k in ("beams_needed", "beam", "agreement_with_beam")} if args.exact else {}
        run = {k: report[k] for k in ("max_history", "exclude_history") if k in report} | {
            "seconds": seconds, "device": choice.device, "dtype": choice.dtype, "out": out}
        _print({k: report[k] for k in keys} | exact | run, args.json)
        return
    if not (args.dataset and args.rankings):
        raise ValueError("eager eval needs --checkpoint DIR, or --dataset NAME with --rankings FILE.jsonl")
    data = load_dataset(args.dataset, args.data_root)
    rankings = read_rankings(args.rankings)
    report = evaluate_rankings(data, args.split, rankings, model=args.model, out_dir=args.out,
                               config={"rankings": str(args.rankings)}, exclude_history=args.exclude_history)
    shown = ("invalid_rate", "missing_users", "exclude_history")
    _print(_metrics_line(report) | {k: report[k] for k in shown if k in report}, args.json)


def _probe_item2index(args) -> None:
    from eager.data import load_dataset
    from eager.decoding.engine import BeamSearchEngine
    from eager.eval.alignment import item2index_probe

    if not args.checkpoint:
        raise ValueError("--task item2index probes a model: give --checkpoint DIR")
    if args.record:
        raise ValueError("--record stores recommendation metrics; the item2index probe is printed (and written with --out)")
    loaded, choice, _ = _load_serving(args)
    data = load_dataset(loaded.config["dataset"], args.data_root)
    started = time.perf_counter()
    report = item2index_probe(BeamSearchEngine.from_loaded(loaded), data, args.limit, args.beams, args.batch_size or 8)
    report |= {"seconds": round(time.perf_counter() - started, 1), "device": choice.device, "dtype": choice.dtype,
               "checkpoint": str(args.checkpoint)}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    _print(report, args.json)


def cmd_compare(args) -> None:
    from eager.lab.compare import compare_evaluations, comparison_table

    names = args.names.split(",") if args.names else [None, None]
    if len(names) != 2:
        raise ValueError(f"--names takes two names, A,B (got {args.names!r})")
    # Several comma-separated evaluations on a side are runs of one system (e.g. training seeds).
    read = _evaluation_reader(args.data_root)
    a = [read(spec, names[0]) for spec in _comma_list(args.a)]
    b = [read(spec, names[1]) for spec in _comma_list(args.b)]
    metrics = _comma_list(args.metrics)
    if args.by:
        result = _compare_by_group(a, b, metrics, args)
    else:
        result = compare_evaluations(a, b, metrics, args.confidence, args.resamples, args.seed)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(comparison_table(result))
        if args.by:
            from eager.lab.breakdown import GROUPINGS, grouped_table

            print(f"\nWithin groups of users, by {GROUPINGS[args.by]}:\n")
            print(grouped_table(result))


def _evaluation_reader(data_root):
    """Reads an evaluation folder or file, a rank file (``ranks.json``, or a folder holding one and no
    predictions), or a search trial as ``SEARCH_DIR:TRIAL`` (its validation ranks). The last two name
    their dataset, which is loaded once, to rebuild their users and targets."""
    from dataclasses import replace

    from eager.data import load_dataset
    from eager.eval.harness import PREDICTIONS_FILE
    from eager.eval.rank_file import RANKS_FILE, read_rank_file, read_rank_header
    from eager.eval.records import read_evaluation
    from eager.lab.search import read_search_trial, trial_evaluation

    datasets: dict = {}

    def dataset(name: str):
        if name not in datasets:
            datasets[name] = load_dataset(name, data_root)
        return datasets[name]

    def read(spec: str, name: str | None):
        # A folder with predictions reads them; its ranks.json is their summary.
        header = None if (Path(spec) / PREDICTIONS_FILE).is_file() else read_rank_header(spec)
        if header is not None:
            path = Path(spec) / RANKS_FILE if Path(spec).is_dir() else spec
            return read_rank_file(path, dataset(header["dataset"]), name, header)
        search_dir, sep, trial = spec.rpartition(":")
        if Path(spec).exists() or not sep or not Path(search_dir).is_dir():
            return read_evaluation(spec, name)
        recorded = read_search_trial(search_dir, trial)  # a bad trial is named before data loads
        evaluation = trial_evaluation(search_dir, trial, dataset(recorded[0]["dataset"]), recorded)
        return replace(evaluation, name=name) if name else evaluation

    return read


def cmd_ranks(args) -> None:
    from eager.eval.rank_file import RANKS_FILE, evaluation_rank_record, write_rank_file
    from eager.eval.records import read_evaluation

    evaluation = read_evaluation(args.evaluation)
    source = Path(args.evaluation)
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / RANKS_FILE
    record = evaluation_rank_record(evaluation)
    write_rank_file(out, record)
    line = {k: record[k] for k in ("dataset", "split", "model", "users")}
    print(json.dumps({**line, "out": str(out), "bytes": out.stat().st_size}))


def cmd_rerun(args) -> None:
    from eager.lab.rerun import record_rerun

    entry = record_rerun(args.checkpoint, args.rerun)
    test = entry.get("test", {})
    print(json.dumps({"checkpoint": args.checkpoint, "train_seed": entry["train_seed"],
                      "recorded": [k for k in ("selection", "valid", "test") if k in entry],
                      "test recall@10": test.get("recall@10"), "test ndcg@10": test.get("ndcg@10")}))


def _compare_by_group(a, b, metrics, args) -> dict:
    from eager.data import load_dataset
    from eager.lab.breakdown import compare_by_group, group_users

    dataset = next((e.dataset for e in a + b if e.dataset), None)
    split = next((e.split for e in a + b if e.split), None)
    if dataset is None or split is None:
        raise ValueError("--by needs the dataset and split, which neither side's metrics.json names: compare "
                         "evaluation folders written by `eager eval` / `eager baseline`, not bare predictions files")
    data = load_dataset(dataset, args.data_root)
    groups, order = group_users(data, args.by, split, a[0].targets, args.groups)
    return compare_by_group(a, b, groups, order, metrics, args.confidence, args.resamples, args.seed) | {"by": args.by}


def cmd_bench(args) -> None:
    from eager.data import DataNotFoundError, load_dataset
    from eager.serve.bench import benchmark_histories, latency, machine, throughput

    loaded, choice, timings = _load_serving(args)
    try:
        data = load_dataset(loaded.config["dataset"], args.data_root)
    except DataNotFoundError:
        data = None  # random histories over the checkpoint's own items still measure speed
    count = args.requests if args.action == "latency" else args.users
    histories, drawn_from = benchmark_histories(loaded, data, count, args.history)
    if args.action == "latency":
        report = latency(loaded, histories, args.k, args.beams, baseline=not args.no_baseline, progress=not args.json)
    else:
        report = throughput(loaded, histories, args.batch, args.k, args.beams, baseline=not args.no_baseline,
                            progress=not args.json)
    report = {"bench": args.action, "checkpoint": str(args.checkpoint), "dtype": choice.dtype,
              "compute_dtype": choice.compute_dtype, "device": choice.device, "histories": drawn_from,
              "load_s": timings["load_s"], "load_cold": timings["cold"], **report, "machine": machine()}
    if args.json:
        print(json.dumps(report))
        return
    _print(report, False)
    if "speedup_p50" in report or "speedup" in report:
        print(f"speedup over HF generate: {report.get('speedup_p50', report.get('speedup'))}x")


def cmd_index_build(args) -> None:
    from dataclasses import replace

    from eager.data import load_dataset
    from eager.index.balanced_kmeans import BalancedKMeansConfig
    from eager.index.build import IndexConfig, build_index, index_dir
    from eager.index.meaning import meaning_report

    data = load_dataset(args.dataset, args.data_root)
    kmeans = replace(BalancedKMeansConfig(), k=args.k, seed=args.seed)
    config = IndexConfig(source=args.source, encoder=args.encoder, kmeans=kmeans)
    index = build_index(data, config, args.artifacts, args.behaviour_from, progress=not args.json)
    out = Path(args.out) if args.out else index_dir(args.artifacts, data, config)
    path = index.save(out)
    payload = {**index.stats(), "meaning": meaning_report(index, data), "index": str(path)}
    _print(payload, args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eager", description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)

    data = stages.add_parser("data", help="get, prepare and describe datasets")
    data_cmds = data.add_subparsers(dest="action", required=True)
    prepare = data_cmds.add_parser("prepare", help="download the official raw files and preprocess them")
    prepare.add_argument("--dataset", required=True)
    prepare.add_argument("--source", help="a folder holding the raw files, or a base URL serving them "
                         "(default: the official URLs)")
    prepare.add_argument("--force", action="store_true", help="rebuild even if the dataset is already there")
    prepare.add_argument("--json", action="store_true")
    _add_data_root(prepare)
    prepare.set_defaults(func=cmd_data_prepare)
    stats = data_cmds.add_parser("stats", help="users, items and interactions of a dataset")
    stats.add_argument("--dataset", required=True)
    stats.add_argument("--json", action="store_true")
    _add_data_root(stats)
    stats.set_defaults(func=cmd_data_stats)

    baseline = stages.add_parser("baseline", help="train and evaluate a baseline")
    baseline.add_argument("model", choices=["pop", "sasrec"])
    baseline.add_argument("--dataset", required=True)
    baseline.add_argument("--recipe", default="tuned", help="SASRec recipe: tuned (default), ce-38, sampled-softmax, paper or smoke")
    baseline.add_argument("--epochs", type=int)
    baseline.add_argument("--lr", type=float)
    baseline.add_argument("--hidden", type=int)
    baseline.add_argument("--dropout", type=float)
    baseline.add_argument("--loss", choices=["ce", "ss", "bce"])
    baseline.add_argument("--max-minutes", type=float)
    baseline.add_argument("--seed", type=int)
    baseline.add_argument("--trained", help="sasrec: evaluate this exported model instead of training one")
    baseline.add_argument("--max-history", type=int,
                          help="with --trained: read each user's last N items (a diagnostic of how much history it uses)")
    baseline.add_argument("--out", help="output folder (default: <artifacts>/<dataset>/<model>)")
    baseline.add_argument("--json", action="store_true")
    _add_data_root(baseline)
    _add_artifacts(baseline)
    baseline.set_defaults(func=cmd_baseline)

    index = stages.add_parser("index", help="build the dual-source item codes (DKI)")
    index_cmds = index.add_subparsers(dest="action", required=True)
    build = index_cmds.add_parser("build", help="embeddings → balanced hierarchical k-means → index.json")
    build.add_argument("--dataset", required=True)
    build.add_argument("--source", choices=["dual", "semantic", "behaviour"], default="dual")
    build.add_argument("--encoder", choices=["minilm", "backbone"], default="minilm",
                       help="semantic text encoder (README: chosen by the meaning check)")
    build.add_argument("--k", type=int, default=256, help="branches per node")
    build.add_argument("--seed", type=int, default=42)
    build.add_argument("--behaviour-from", help="SASRec artifact folder (default: <artifacts>/<dataset>/sasrec)")
    build.add_argument("--out", help="output folder (default: <artifacts>/<dataset>/index/<source>-<encoder>)")
    build.add_argument("--json", action="store_true")
    _add_data_root(build)
    _add_artifacts(build)
    build.set_defaults(func=cmd_index_build)

    train = stages.add_parser("train", help="train an EAGER-LLM variant and export its checkpoint")
    _add_training_run(train, "whole-history", "full, wo_dki, wo_gct or wo_aat")
    train.add_argument("--max-users", type=int, help="train on a random subset of users (bounded CPU runs)")
    train.add_argument("--max-steps", help="the optimizer steps of each stage (fewer only where its epochs end first): "
                       "N for both, or STAGE1,STAGE2 (e.g. 274,188 to repeat another run's step counts); drops the "
                       "recipe's clock budget, so the counts hold on a slower GPU too")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the decoder layers for the training steps (default: the recipe's)")
    train.add_argument("--attention", choices=("sdpa", "varlen"),
                       help="attention of the packed training steps: sdpa over whole rows, or varlen, each sample "
                       "over its own length (default: the recipe's)")
    train.add_argument("--activation-checkpointing", type=int, nargs="?", const=1, metavar="N",
                       help="recompute the activations of every N-th decoder layer in the backward pass (alone: every "
                       "layer; 0: none): the same gradients for a second forward pass through them, in far less GPU "
                       "memory (the multitask-short recipe on an 80 GB H100; default: the recipe's)")
    train.add_argument("--train-seed", type=int,
                       help="seed of training's randomness alone (LoRA start, sample order, GCT negatives); the "
                       "users trained and validated stay the recipe's, so two seeds pair user by user")
    train.add_argument("--index", help="train on this item index (an index.json, e.g. a shipped checkpoint's) "
                       "instead of the one built from the artifacts")
    train.add_argument("--out", help="checkpoint folder (default: checkpoints/<dataset>/<variant>)")
    train.add_argument("--warm-start", metavar="DIR",
                       help="where this machine has no saved state of the run, go on from the snapshots in DIR "
                       "(written by --snapshot-to on another machine; same settings)")
    train.add_argument("--snapshot-to", metavar="DIR",
                       help="do not train: write this run's saved state (the one it would resume) to DIR as "
                       "snapshots small enough to commit, then exit")
    train.add_argument("--export-stage1", metavar="DIR",
                       help="do not train: write the best validated stage-1 weights this run has saved so far as a "
                       "checkpoint in DIR (the run's wo_aat; where the run stood is in its config), then exit")
    train.set_defaults(func=cmd_train)

    # Experiment tools, apart from the stages a user runs (eager/lab/README.md).
    lab = stages.add_parser("lab", help="experiment tools: recipe search, paired comparisons, rank files, reruns")
    lab_cmds = lab.add_subparsers(dest="action", required=True)

    search = lab_cmds.add_parser("search", help="measure recipe levers: stage-1 trials ranked on validation")
    _add_training_run(search, "multitask-short", "whose stage 1 the trials train (default full; an aat=1 trial trains "
                      "its annealing adapter too)")
    search.add_argument("--trial", action="append", help="a named trial (see eager.lab.search.LEASE_TRIALS) or "
                        "NAME:field.path=value,...; repeat it; default: every named trial. aat=1 in a spec also "
                        "trains the annealing adapter after stage 1 and scores both (NAME, NAME.stage1)")
    search.add_argument("--max-steps", type=int, help="stage-1 steps of every trial that does not set its own (exact: "
                        "its clock budget goes, so trials compare at equal steps on any GPU)")
    search.add_argument("--seeds", help="train every trial once per training seed, e.g. 42,7 (runs NAME-seedN), "
                        "and also rank the trials pooled over their seeds, with an interval that resamples the seeds")
    search.add_argument("--out", help="results folder (default: <artifacts>/<dataset>/search/<variant>-<recipe>)")
    search.set_defaults(func=cmd_search)

    recommend = stages.add_parser("recommend", help="top-k items for a history of item keys")
    recommend.add_argument("--checkpoint", required=True)
    recommend.add_argument("--history", required=True, help="comma-separated item keys, oldest first")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--beams", type=int, default=20)
    recommend.add_argument("--exclude-history", action="store_true", help="never recommend an item the history holds")
    _add_serving(recommend)
    recommend.add_argument("--json", action="store_true")
    _add_data_root(recommend)
    recommend.set_defaults(func=cmd_recommend)

    evaluate = stages.add_parser("eval", help="evaluate a checkpoint, or score any model's ranked item keys")
    evaluate.add_argument("--checkpoint", help="an eager checkpoint folder (beam search over the code trie)")
    evaluate.add_argument("--dataset", help="with --rankings: the dataset the rankings are for")
    evaluate.add_argument("--split", choices=["valid", "test"], default="test")
    evaluate.add_argument("--rankings", help='jsonl of {"user": key, "ranked": [item keys]}')
    evaluate.add_argument("--task", choices=["seqrec", "item2index"], default="seqrec",
                          help="seqrec: recommend the split's next items (default); item2index: probe whether "
                          "the model gives each item's own code from its title (Hit@1/@10; --limit N items)")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N users (a partial evaluation)")
    evaluate.add_argument("--beams", type=int, default=20)
    evaluate.add_argument("--exact", action="store_true",
                          help="rank by the exact top-k of the whole catalogue: the beam widened per user from "
                               "--beams until no dropped code could enter the top k (how far from exact is the beam?)")
    evaluate.add_argument("--max-history", type=int,
                          help="prompts hold each user's last N items (default: what the model reads, its recipe's "
                               "max_history up to the protocol's 20); "
                               "a diagnostic of how the model uses long histories: same users, same held-out items")
    evaluate.add_argument("--batch-size", type=int, help="users per beam search (default 8 on CPU, 128 on CUDA)")
    evaluate.add_argument("--record", action="store_true",
                          help="store the result in the checkpoint's metrics.json (the demo's model card reads it)")
    _add_serving(evaluate, default_dtype="fp32")
    _add_artifacts(evaluate)
    evaluate.add_argument("--model", default="external")
    evaluate.add_argument("--exclude-history", action="store_true",
                          help="never count a user's earlier items: a checkpoint's search leaves them out (its "
                               "beams go to other items), --rankings drops them before scoring; a diagnostic of "
                               "what repeats cost (the protocol keeps them)")
    evaluate.add_argument("--out", help="write predictions.jsonl and metrics.json here")
    evaluate.add_argument("--json", action="store_true")
    _add_data_root(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    compare = lab_cmds.add_parser("compare", help="is B better than A? a paired test over the users both evaluated")
    compare.add_argument("a", help="evaluation A: a folder written by `eager eval` / `eager baseline` "
                         "(predictions.jsonl + metrics.json), a predictions.jsonl file, a rank file (ranks.json, "
                         "from `eager eval --out` or `eager lab ranks`; read against the dataset), or a search trial's "
                         "validation as SEARCH_DIR:TRIAL (an `eager lab search --out` folder); several, "
                         "comma-separated, are runs of one system (e.g. training seeds), averaged per user "
                         "before the pairing")
    compare.add_argument("b", help="evaluation B (one or several runs, as A), of the same split and users")
    compare.add_argument("--names", help="names for the table, A,B (default: the model each metrics.json names)")
    compare.add_argument("--metrics", default="recall@5,recall@10,ndcg@5,ndcg@10")
    compare.add_argument("--confidence", type=float, default=0.95)
    compare.add_argument("--resamples", type=int, default=9999, help="bootstrap and permutation resamples")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--out", help="also write the comparison here as JSON")
    compare.add_argument("--json", action="store_true")
    compare.add_argument("--by", choices=["target-popularity", "history-length"],
                         help="also compare within groups of users: by the train-split count of their held-out item, "
                              "or by how many items precede it (reads the dataset the evaluations name)")
    compare.add_argument("--groups", type=int, default=3, help="how many groups --by makes (about equal in users)")
    _add_data_root(compare)
    compare.set_defaults(func=cmd_compare)

    ranks = lab_cmds.add_parser("ranks", help="an evaluation's per-user target ranks, without the data: a file small "
                              "enough to commit that `eager lab compare` pairs again later")
    ranks.add_argument("evaluation", help="a folder written by `eager eval` / `eager baseline`, or its predictions.jsonl "
                       "(its metrics.json must name the dataset and split)")
    ranks.add_argument("--out", help="where to write it (default: ranks.json beside the predictions)")
    ranks.set_defaults(func=cmd_ranks)

    rerun = lab_cmds.add_parser("rerun", help="record another training seed's run of a checkpoint's variant into its "
                              "metrics.json, so the model card shows what a rerun moves")
    rerun.add_argument("--checkpoint", required=True, help="the checkpoint that ships (its metrics.json gains `reruns`)")
    rerun.add_argument("--from", dest="rerun", required=True, metavar="DIR",
                       help="the rerun's checkpoint: same dataset, variant and recipe, another --train-seed, "
                       "evaluated with `eager eval --record`")
    rerun.set_defaults(func=cmd_rerun)

    bench = stages.add_parser("bench", help="serving speed: the engine against HF generate, same run")
    bench_cmds = bench.add_subparsers(dest="action", required=True)
    for action, text in (("latency", "p50/p95 per single-user request and peak RSS"),
                         ("throughput", "users/s with batched requests (the evaluation setting)")):
        sub = bench_cmds.add_parser(action, help=text)
        sub.add_argument("--checkpoint", required=True)
        sub.add_argument("--k", type=int, default=10)
        sub.add_argument("--beams", type=int, default=20)
        sub.add_argument("--history", type=int, default=20, help="items per history")
        sub.add_argument("--no-baseline", action="store_true", help="time the engine only")
        if action == "latency":
            sub.add_argument("--requests", type=int, default=20)
        else:
            sub.add_argument("--users", type=int, default=256)
            sub.add_argument("--batch", type=int, default=32)
        _add_serving(sub)
        sub.add_argument("--json", action="store_true")
        _add_data_root(sub)
        sub.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, KeyError, ValueError, PermissionError, RuntimeError, NotImplementedError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"eager: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
