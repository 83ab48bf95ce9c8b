"""Evaluate a checkpoint on a split: beam search over the trie, scored by the shared harness."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from eager.data.dataset import InteractionData
from eager.data.split import eval_cases, train_item_counts
from eager.decoding.loaded import LoadedModel
from eager.eval.harness import evaluate_rankings
from eager.eval.metrics import ranking_agreement


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

    from eager.decoding.engine import BeamSearchEngine, exact_top_k

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


def recommend_keys(loaded: LoadedModel, data: InteractionData, history: Sequence[str], k: int = 10, beams: int = 20,
                   exclude_history: bool = False):
    """Recommendations for one history of item keys (unknown keys raise a KeyError naming them);
    ``exclude_history``: none of the history's own items."""
    if not history:
        raise ValueError("the history is empty: give at least one item key")
    data.indices_of(list(history))  # clear error for unknown keys
    for key in history:
        loaded.index.row(key)
    from eager.decoding.engine import BeamSearchEngine

    engine = BeamSearchEngine.from_loaded(loaded)
    exclude = [set(history)] if exclude_history else None
    prompt = list(history)[-loaded.history_window:]  # what the model reads, as evaluation gives it
    return engine.search([prompt], k, max(k, beams), exclude=exclude).recommendations[0]
