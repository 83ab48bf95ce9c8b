"""The ``eager`` command: one subcommand per pipeline stage.

Errors a user can fix (missing data, unknown dataset or key, bad files) are printed as one clear
message with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eager.utils import artifacts_root


def _add_data_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="folder holding <Dataset>/ folders (default: $EAGER_DATA_ROOT or ./data)")


def _add_artifacts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", help="where outputs go (default: $EAGER_ARTIFACTS or ./artifacts)")


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


def _metrics_line(report: dict) -> dict:
    keys = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "recall@20", "ndcg@20")
    return {k: round(report[k], 4) for k in keys if k in report} | {"users": report["users"]}


def cmd_baseline(args) -> None:
    from eager.data import load_dataset

    data = load_dataset(args.dataset, args.data_root)
    out = Path(args.out) if args.out else artifacts_root(args.artifacts) / data.name / args.model
    if args.model == "pop":
        from eager.baselines.popularity import run_popularity

        reports = run_popularity(data, out)
    else:
        from eager.baselines.sasrec import RECIPES, config_with, run_sasrec

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


def cmd_eval(args) -> None:
    from eager.data import load_dataset
    from eager.eval.harness import evaluate_rankings, read_rankings

    data = load_dataset(args.dataset, args.data_root)
    rankings = read_rankings(args.rankings)
    report = evaluate_rankings(data, args.split, rankings, model=args.model, out_dir=args.out,
                               config={"rankings": str(args.rankings)})
    _print(_metrics_line(report) | {"invalid_rate": report["invalid_rate"], "missing_users": report["missing_users"]}, args.json)


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
    baseline.add_argument("--recipe", default="tuned", help="SASRec recipe: tuned, paper or smoke")
    baseline.add_argument("--epochs", type=int)
    baseline.add_argument("--lr", type=float)
    baseline.add_argument("--hidden", type=int)
    baseline.add_argument("--dropout", type=float)
    baseline.add_argument("--loss", choices=["ce", "bce"])
    baseline.add_argument("--max-minutes", type=float)
    baseline.add_argument("--seed", type=int)
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

    evaluate = stages.add_parser("eval", help="score any model's ranked item keys with the shared harness")
    evaluate.add_argument("--dataset", required=True)
    evaluate.add_argument("--split", choices=["valid", "test"], default="test")
    evaluate.add_argument("--rankings", required=True, help='jsonl of {"user": key, "ranked": [item keys]}')
    evaluate.add_argument("--model", default="external")
    evaluate.add_argument("--out", help="write predictions.jsonl and metrics.json here")
    evaluate.add_argument("--json", action="store_true")
    _add_data_root(evaluate)
    evaluate.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, KeyError, ValueError, PermissionError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"eager: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
