"""Score a checkpoint on a search trial's validation users and compare the two user by user.

    EAGER_DATA_ROOT=../shared/data python eager/lab/rescore_selection.py CHECKPOINT [SEARCH_DIR TRIAL | --vs-ranks FILE]
        [--ranks FILE] [--out FILE.json] [--also-a SEARCH_DIR:TRIAL ...] [--also-b SEARCH_DIR:TRIAL ...]
        [--eval-users N] [--max-history N]

`eager lab search` compares its trials with the first one in the same search, and `eager lab compare
DIR:TRIAL ...` pairs trials of different searches. A trial can also be paired with a shipped checkpoint when both
were selected on the same users: the checkpoint's recipe (seed, eval_users, max_users,
max_history) fixes them. This re-scores the checkpoint's model on those users with the trainer's
own validation (20-beam constrained search, fp32), prints its Recall/NDCG@10 (which should repeat
what its training recorded), then B − A for the trial (B) against the checkpoint (A) with the
bootstrap interval and sign-flip p-value of `eager lab compare`. Without SEARCH_DIR and TRIAL it only
scores the checkpoint. ``--ranks FILE`` keeps the checkpoint's per-user ranks: written when FILE
does not exist, read (instead of searching again) when it does. ``--also-a`` / ``--also-b`` add
other runs of either side (say, a second training seed of each, validated by another search on
the same users): each user's scores are then averaged over a side's runs before the pairing. A
model reads the last items its recipe trained on (``max_history``, at most the protocol's 20), as
the search and training scored it; ``--max-history N`` prompts it with the last N instead (a
diagnostic: say, a model trained on 5-item histories read at 20); the users and held-out items stay
the same, so the pairing holds. ``--vs-ranks FILE`` pairs the checkpoint with another checkpoint
(say, an `eager train` run) instead of a trial: FILE is that checkpoint's ranks as ``--ranks`` wrote
them when this script scored it (``rescore_selection.py OTHER --ranks FILE``); the two must have
been selected on the same users (same seed, eval_users, max_users), which is checked.
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

from eager.data import load_dataset
from eager.eval.metrics import metrics_from_ranks
from eager.lab.compare import compare_evaluations, comparison_table
from eager.lab.search import PAIRED_METRICS, selection_evaluation
from eager.serve.loader import load_checkpoint
from eager.train.validation import (
    recorded_selection_recipe,
    selection_cases,
    validation_ranks,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("search_dir", nargs="?", help="an `eager lab search --out` folder (its valid_ranks.json)")
    parser.add_argument("trial", nargs="?")
    parser.add_argument("--ranks", help="the checkpoint's per-user ranks: read if it exists, else written")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-users", type=int,
                        help="score only this many of the checkpoint's validation users: a search run with a "
                             "smaller --eval-users (same seed) drew the first of them")
    parser.add_argument("--max-history", type=int,
                        help="prompt the checkpoint with the last N items (default: what it reads, its "
                             "recipe's max_history up to the protocol's 20)")
    parser.add_argument("--out", help="write the scores and the comparison here (JSON)")
    parser.add_argument("--vs-ranks", metavar="FILE",
                        help="B is another checkpoint: its per-user ranks as --ranks wrote them when this "
                             "script scored it (instead of SEARCH_DIR TRIAL)")
    parser.add_argument("--also-a", action="append", default=[], metavar="SEARCH_DIR:TRIAL",
                        help="another run of A (the checkpoint's system), e.g. its second training seed")
    parser.add_argument("--also-b", action="append", default=[], metavar="SEARCH_DIR:TRIAL",
                        help="another run of B (the trial's system)")
    args = parser.parse_args()

    if (args.search_dir is None) != (args.trial is None):
        raise SystemExit("give both SEARCH_DIR and TRIAL, or neither (to score the checkpoint only)")
    if args.vs_ranks and args.trial is not None:
        raise SystemExit("B is either SEARCH_DIR TRIAL or --vs-ranks FILE, not both")
    if (args.also_a or args.also_b) and args.trial is None and args.vs_ranks is None:
        raise SystemExit("--also-a / --also-b add runs to a comparison: give SEARCH_DIR and TRIAL (or --vs-ranks) too")
    if args.max_history is not None and args.max_history < 1:
        raise SystemExit(f"--max-history {args.max_history}: give at least 1 item")
    more_a = [_search_trial(spec) for spec in args.also_a]  # A's first run is the checkpoint itself
    runs_b = ([(args.search_dir, args.trial)] if args.trial else []) + [_search_trial(spec) for spec in args.also_b]
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    recipe = recorded_selection_recipe(config)
    max_history = args.max_history or recipe.history_window
    if args.ranks and max_history != recipe.history_window:
        raise SystemExit(f"--ranks keeps the ranks of the model reading its own {recipe.history_window} items; "
                         "with --max-history score afresh, without --ranks")
    data = load_dataset(config["dataset"])
    if args.eval_users:
        recipe = replace(recipe, eval_users=args.eval_users)
    cases = selection_cases(data, recipe, max_history)
    users = [data.user_keys[c.user] for c in cases]
    more_a_evaluations = [_trial_evaluation(data, recipe, run, _trial_ranks(*run, users)) for run in more_a]
    b = [_trial_evaluation(data, recipe, run, _trial_ranks(*run, users)) for run in runs_b]
    if args.vs_ranks:
        b.insert(0, _checkpoint_ranks_evaluation(data, recipe, Path(args.vs_ranks), users))

    saved_ranks = Path(args.ranks) if args.ranks else None
    if saved_ranks is not None and saved_ranks.exists():
        ranks = _saved_checkpoint_ranks(saved_ranks, users)
    else:
        loaded = load_checkpoint(args.checkpoint, "fp32")
        ranks = validation_ranks(loaded.model, loaded.tokenizer, loaded.index, loaded.trie, data, cases,
                                 recipe.eval_beams, args.batch, loaded.prompt_style)
        if saved_ranks is not None:
            saved_ranks.write_text(json.dumps(dict(zip(users, ranks))) + "\n")
    scores = metrics_from_ranks(ranks, (10,))
    read = "" if max_history == recipe.history_window else f", reading the last {max_history} items"
    print(f"{args.checkpoint} on {len(cases)} validation users{read}:", {k: round(v, 4) for k, v in scores.items()})
    if not b:
        return
    a = [replace(selection_evaluation(data, recipe, Path(args.checkpoint).name, ranks),
                 source=f"checkpoint {args.checkpoint}{read}"), *more_a_evaluations]
    result = compare_evaluations(a, b, PAIRED_METRICS)
    print(comparison_table(result))
    if args.out:
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "checkpoint_scores": scores,
                                              "checkpoint_max_history": max_history,
                                              "search_dir": args.search_dir, "trial": args.trial,
                                              "vs_ranks": args.vs_ranks,
                                              "also_a": args.also_a, "also_b": args.also_b,
                                              "comparison": result}, indent=1, default=str) + "\n")


def _search_trial(spec: str) -> tuple[str, str]:
    search_dir, sep, trial = spec.rpartition(":")
    if not sep or not search_dir or not trial:
        raise SystemExit(f"{spec!r}: give another run as SEARCH_DIR:TRIAL (an `eager lab search --out` folder and a trial name)")
    return search_dir, trial


def _trial_ranks(search_dir: str, trial: str, users: list[str]) -> list:
    """The trial's ranks in the checkpoint's user order."""
    ranks_file = Path(search_dir) / "valid_ranks.json"
    if not ranks_file.is_file():
        raise SystemExit(f"{ranks_file}: not found; give a folder written by `eager lab search --out`")
    trial_ranks = json.loads(ranks_file.read_text())
    if trial not in trial_ranks:
        raise SystemExit(f"no trial {trial!r} in {ranks_file} (it has {sorted(trial_ranks)})")
    return _ranks_in_order(trial_ranks[trial], users, f"trial {trial!r}")


def _ranks_in_order(by_user: dict, users: list[str], what: str) -> list:
    """Another run's ranks in the checkpoint's user order; a run validated on other users is refused."""
    missing = set(users) - set(by_user)
    if missing:
        raise SystemExit(f"{what} validated other users ({len(missing)} of the checkpoint's "
                         f"{len(users)} are missing): the two were selected with different seeds, eval_users or max_users")
    return [by_user[u] for u in users]


def _saved_checkpoint_ranks(ranks_file: Path, users: list[str]) -> list:
    """A checkpoint's ranks as ``--ranks`` wrote them, in the checkpoint's user order."""
    return _ranks_in_order(json.loads(ranks_file.read_text()), users, f"the checkpoint scored into {ranks_file}")


def _checkpoint_ranks_evaluation(data, recipe, ranks_file: Path, users: list[str]):
    """Another checkpoint's validation, from the ranks this script wrote when it scored that checkpoint."""
    if not ranks_file.is_file():
        raise SystemExit(f"{ranks_file}: not found; score the other checkpoint first, "
                         f"`rescore_selection.py OTHER_CHECKPOINT --ranks {ranks_file}`")
    ranks = _saved_checkpoint_ranks(ranks_file, users)
    return replace(selection_evaluation(data, recipe, ranks_file.stem, ranks), source=f"checkpoint ranks {ranks_file}")


def _trial_evaluation(data, recipe, run: tuple[str, str], ranks: list):
    search_dir, trial = run
    return replace(selection_evaluation(data, recipe, trial, ranks), source=f"{search_dir} trial {trial}")


if __name__ == "__main__":
    main()
