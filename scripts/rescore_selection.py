"""Score a checkpoint on a search trial's validation users and compare the two user by user.

    EAGER_DATA_ROOT=../shared/data python scripts/rescore_selection.py CHECKPOINT [SEARCH_DIR TRIAL] [--ranks FILE] [--out FILE.json]

`eager search` compares its trials with the first one in the same search. A trial run in another
search (another session, another variant) can still be paired with a shipped checkpoint when both
were selected on the same users: the checkpoint's recipe (seed, eval_users, max_users,
max_history) fixes them. This re-scores the checkpoint's model on those users with the trainer's
own validation (20-beam constrained search, fp32), prints its Recall/NDCG@10 (which should repeat
what its training recorded), then B − A for the trial (B) against the checkpoint (A) with the
bootstrap interval and sign-flip p-value of `eager compare`. Without SEARCH_DIR and TRIAL it only
scores the checkpoint. ``--ranks FILE`` keeps the checkpoint's per-user ranks: written when FILE
does not exist, read (instead of searching again) when it does.
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

from eager.data import load_dataset
from eager.eval.compare import compare_evaluations, comparison_table
from eager.eval.metrics import metrics_from_ranks
from eager.llm.checkpoint import load_checkpoint
from eager.llm.search import PAIRED_METRICS, selection_evaluation
from eager.llm.validation import recorded_selection_recipe, selection_cases, validation_ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("search_dir", nargs="?", help="an `eager search --out` folder (its valid_ranks.json)")
    parser.add_argument("trial", nargs="?")
    parser.add_argument("--ranks", help="the checkpoint's per-user ranks: read if it exists, else written")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", help="write the scores and the comparison here (JSON)")
    args = parser.parse_args()

    if (args.search_dir is None) != (args.trial is None):
        raise SystemExit("give both SEARCH_DIR and TRIAL, or neither (to score the checkpoint only)")
    trial_ranks = None
    if args.trial:
        trial_ranks = json.loads((Path(args.search_dir) / "valid_ranks.json").read_text())
        if args.trial not in trial_ranks:
            raise SystemExit(f"no trial {args.trial!r} in {args.search_dir}/valid_ranks.json (it has {sorted(trial_ranks)})")
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    data = load_dataset(config["dataset"])
    recipe = recorded_selection_recipe(config)
    cases = selection_cases(data, recipe)
    users = {data.user_keys[c.user] for c in cases}
    if trial_ranks is not None:
        missing = users - set(trial_ranks[args.trial])
        if missing:
            raise SystemExit(f"trial {args.trial!r} validated other users ({len(missing)} of the checkpoint's "
                             f"{len(users)} are missing): the two were selected with different seeds, eval_users or max_users")

    saved_ranks = Path(args.ranks) if args.ranks else None
    if saved_ranks is not None and saved_ranks.exists():
        by_user = json.loads(saved_ranks.read_text())
        ranks = [by_user[data.user_keys[c.user]] for c in cases]
    else:
        loaded = load_checkpoint(args.checkpoint, "fp32")
        ranks = validation_ranks(loaded.model, loaded.tokenizer, loaded.index, loaded.trie, data, cases,
                                 recipe.eval_beams, args.batch, loaded.prompt_style)
        if saved_ranks is not None:
            saved_ranks.write_text(json.dumps({data.user_keys[c.user]: r for c, r in zip(cases, ranks)}) + "\n")
    scores = metrics_from_ranks(ranks, (10,))
    print(f"{args.checkpoint} on {len(cases)} validation users:", {k: round(v, 4) for k, v in scores.items()})
    if trial_ranks is None:
        return
    a = replace(selection_evaluation(data, recipe, Path(args.checkpoint).name, ranks),
                source=f"checkpoint {args.checkpoint}")
    trial = [trial_ranks[args.trial][data.user_keys[c.user]] for c in cases]
    b = replace(selection_evaluation(data, recipe, args.trial, trial), source=f"{args.search_dir} trial {args.trial}")
    result = compare_evaluations(a, b, PAIRED_METRICS)
    print(comparison_table(result))
    if args.out:
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "checkpoint_scores": scores,
                                              "search_dir": args.search_dir, "trial": args.trial,
                                              "comparison": result}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
