"""Model selection: which validation users a run scores, and their ranks under constrained beam search.

The trainer scores a seeded sample of validation users after every epoch and keeps the best epoch;
a ``max_users`` recipe trains on, and is selected on, a seeded subset of users (the protocol
scores users whose history the model trained on). Under data parallelism the users are split
across processes and the ranks gathered, so every process keeps the same best epoch.
"""

from __future__ import annotations

import random
from dataclasses import replace

from eager.data.dataset import InteractionData
from eager.data.split import eval_cases
from eager.eval.metrics import metrics_from_ranks, target_rank
from eager.model.prompts import DEFAULT_PROMPT_STYLE
from eager.train.recipes import TrainRecipe, get_recipe
from eager.train.sharding import lockstep_rounds


def validation_ranks(model, tokenizer, index, trie, data, cases, beams: int, batch_size: int,
                     prompt_style: str = DEFAULT_PROMPT_STYLE, rounds: int | None = None,
                     filler=None) -> list[int | None]:
    """The held-out item's rank in constrained beam search for each of ``cases`` (None: not in the top 10).

    ``rounds``: run exactly this many search batches, padding with ``filler`` cases whose ranks are
    dropped (sharded models: every forward is a collective, so every process runs the same ones).
    """
    from eager.decoding.engine import BeamSearchEngine

    model.eval()
    engine = BeamSearchEngine(model, tokenizer, index, trie.vocab, trie, prompt_style)
    keys = data.item_keys
    ranks = []
    starts = range(0, len(cases), batch_size) if rounds is None else [i * batch_size for i in range(rounds)]
    for start in starts:
        chunk = cases[start : start + batch_size]
        search = chunk or [filler]  # a padding round searches one throw-away case
        recs = engine.search([[keys[i] for i in c.history] for c in search], k=min(10, beams), beams=beams).recommendations
        ranks += [target_rank([r.key for r in rec], keys[c.target]) for rec, c in zip(recs, chunk)]
    return ranks


def validation_score(model, tokenizer, index, trie, data, cases, beams: int, batch_size: int,
                     prompt_style: str = DEFAULT_PROMPT_STYLE) -> dict[str, float]:
    """Recall/NDCG@10 of constrained beam search on ``cases`` (used for model selection)."""
    ranks = validation_ranks(model, tokenizer, index, trie, data, cases, beams, batch_size, prompt_style)
    return metrics_from_ranks(ranks, (10,))


def shared_validation_score(model, tokenizer, index, trie, data, cases, beams: int, batch_size: int,
                            world: int, rank: int, prompt_style: str = DEFAULT_PROMPT_STYLE,
                            sharded: bool = False) -> dict[str, float]:
    """:func:`validation_score` with the cases split across the processes of a data-parallel run.

    Also returns ``ranks``, each case's rank in the order of ``cases``, so two runs can be compared
    user by user (:mod:`eager.lab.compare`).

    Each process searches its own stride; the ranks are then gathered, and every process gets the
    score of all the cases. Under DDP each searches with its own (identical, all-reduced) copy of the
    model, outside the wrapper, so no collective runs inside the search. Under FSDP every forward
    gathers weights from all processes, so all run the same number of search batches (``sharded``).
    """
    rounds = lockstep_rounds(len(cases), world, batch_size) if sharded else None
    ranks = validation_ranks(model, tokenizer, index, trie, data, cases[rank::world], beams, batch_size, prompt_style,
                             rounds=rounds, filler=cases[0] if cases else None)
    if world > 1:
        from accelerate.utils import gather_object

        shares, ranks = gather_object([ranks]), [None] * len(cases)  # one share per process, in process order
        for process, share in enumerate(shares):
            ranks[process::world] = share  # back in the order of the cases, for paired comparisons
    return {**metrics_from_ranks(ranks, (10,)), "users": len(ranks), "ranks": ranks}


def training_users(data: InteractionData, recipe: TrainRecipe) -> list[int] | None:
    """The users a ``max_users`` recipe trains on (seeded, so every stage and process agrees); None: all."""
    if not recipe.max_users:
        return None
    return sorted(random.Random(recipe.seed).sample(range(data.num_users), min(recipe.max_users, data.num_users)))


def selection_cases(data: InteractionData, recipe: TrainRecipe, max_history: int | None = None) -> list:
    """The validation cases model selection scores: a seeded sample of the users the recipe trains on,
    each prompt the last items the recipe's model reads (``recipe.history_window``).

    ``max_history`` cuts the prompts elsewhere (a diagnostic); the users and targets stay the same."""
    cases = eval_cases(data, "valid", max_history or recipe.history_window)
    users = training_users(data, recipe)
    if users is not None:
        trained = set(users)
        cases = [c for c in cases if c.user in trained]
    rng = random.Random(recipe.seed)
    return sorted(rng.sample(cases, min(recipe.eval_users, len(cases))), key=lambda c: c.user)


def recorded_selection_recipe(config: dict) -> TrainRecipe:
    """A recipe that selects the same validation users as the run a checkpoint's ``config.json`` records.

    Only the seed, ``eval_users``, ``max_users`` and ``max_history`` decide them; the rest is the named
    recipe's (a search trial's name is ``recipe+trial``).
    """
    saved = config["recipe"]
    return replace(get_recipe(saved["name"].split("+")[0]), seed=saved["seed"], eval_users=saved["eval_users"],
                   max_history=saved["max_history"], max_users=saved.get("max_users") or config.get("max_users"))
