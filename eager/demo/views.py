"""How the demo shows things: tables and short markdown built from :mod:`eager.demo.service` results."""

from __future__ import annotations

import pandas as pd

from eager.decoding.engine import BeamStep
from eager.demo.service import DemoError, DemoService, RecommendOutcome
from eager.index.item_index import code_token

HISTORY_COLUMNS = ["#", "key", "title", "code"]
RESULT_COLUMNS = ["rank", "title", "key", "code", "score", "why"]


def history_table(service: DemoService, keys: list[str]) -> pd.DataFrame:
    try:
        index = service.index()
    except DemoError:
        index = None
    rows = []
    for n, key in enumerate(keys, start=1):
        try:
            code = index.text_of(key) if index is not None else "—"
        except KeyError:  # an item the index does not cover
            code = "—"
        rows.append([n, key, service.title(key), code])
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def step_markdown(step: BeamStep, index, service: DemoService, shown: int = 8) -> str:
    """One decoding step: the surviving partial codes, their scores and what lies under each."""
    lines = [f"**Token {step.level + 1} of {index.levels}** ({step.source} level "
             f"{index.level_sources[: step.level + 1].count(step.source)}): {len(step.beams[0])} beams alive"]
    for code, score in step.beams[0][:shown]:
        under = (index.codes[:, : len(code)] == code).all(1)
        example = service.title(index.keys[int(under.argmax())])
        tokens = "".join(code_token(level, value) for level, value in enumerate(code))
        lines.append(f"- `{tokens}` {score:.2f} · {int(under.sum())} items, e.g. {example[:60]}")
    return "\n".join(lines)


def why_text(shares: list[dict]) -> str:
    if not shares:
        return "no shared code prefix with the history"
    best = {}
    for share in shares:  # the deepest match per source
        if share["source"] not in best or share["depth"] > best[share["source"]]["depth"]:
            best[share["source"]] = share
    return "; ".join(f"{s['source']} prefix {s['prefix']} like “{s['title'][:40]}”" for s in best.values())


def results_table(outcome: RecommendOutcome) -> pd.DataFrame:
    rows = [[i.rank, i.title, i.key, i.code, round(i.score, 3), why_text(i.shares)] for i in outcome.items]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def outcome_markdown(outcome: RecommendOutcome) -> str:
    parts = [f"`{outcome.variant}` answered in **{outcome.seconds:.2f} s** from {len(outcome.history)} history items."]
    if outcome.held_out:
        if outcome.held_out_rank:
            parts.append(f"The held-out next purchase is at **rank {outcome.held_out_rank}**.")
        else:
            parts.append(f"The held-out next purchase ({outcome.held_out}) is not in the top {len(outcome.items)}.")
    if outcome.hid_history:
        parts.append("Items already in the basket are left out (untick “Leave out what's in the basket” for the "
                     "model's raw list, the one the evaluation scores).")
    if outcome.exact is not None:
        catalogue = "the catalogue less the history" if outcome.hid_history else "the whole catalogue"
        parts.append("This list is provably the model's exact top " + str(len(outcome.items)) + f" of {catalogue}."
                     if outcome.exact else
                     "Beam search dropped codes that could still outscore this list's last item, so the model's exact top "
                     + str(len(outcome.items)) + " may differ (`eager eval --exact` measures how often).")
    parts += outcome.notes
    return " ".join(parts)


def compare_tables(comparison: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    outcomes: dict[str, RecommendOutcome] = comparison["outcomes"]
    k = comparison["k"]
    lists = pd.DataFrame({"rank": range(1, k + 1)} | {
        name: [o.items[r].title[:50] if r < len(o.items) else "" for r in range(k)] for name, o in outcomes.items()})
    overlap = pd.DataFrame(comparison["overlap"]).T.reset_index().rename(columns={"index": f"shared of top {k}"})
    summary = pd.DataFrame([{"variant": name, "seconds": round(o.seconds, 2),
                             "held-out rank": o.held_out_rank if o.held_out_rank else ("—" if not o.held_out else f">{k}")}
                            for name, o in outcomes.items()]
                           + [{"variant": name, "seconds": "—", "held-out rank": f"not compared: {why}"}
                              for name, why in comparison.get("skipped", {}).items()])
    return lists, overlap, summary


def model_card_markdown(card: dict) -> str:
    lines = [f"### Results ({card['dataset']})"]
    if card["rows"]:
        columns = list(card["rows"][0])
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in card["rows"] + card.get("reruns", []):
            lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
        lines.append("\nValidation numbers are the trainer's model-selection scores on a sample of users; test numbers "
                     "appear once `eager eval --checkpoint DIR --split test --record` has stored a full evaluation. "
                     "`history read`: how many of a history's last items the model reads (what it trained on).")
        if card.get("reruns"):
            lines.append("\nEach variant is one training run. The rows with a train seed are the same variant and recipe "
                         "trained again on another seed (`eager lab rerun`): a gap between two variants smaller than the "
                         "gap between a variant and its rerun is not evidence that either is better.")
    else:
        lines.append("No checkpoints yet.")
    lines += ["", "### Data and its terms", card["terms"]]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
