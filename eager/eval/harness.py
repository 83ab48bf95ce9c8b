"""The one evaluation path every model reports through.

A model hands over its top-K ranked item *keys* per user; the harness scores them against the
split's held-out items, writes ``predictions.jsonl`` (user, target, ranked list),
``metrics.json`` (metrics plus dataset, split, K, model and the config that produced them) and
``ranks.json`` (each user's target rank alone, to commit and pair again later).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from eager.data.dataset import InteractionData
from eager.data.split import DEFAULT_MAX_HISTORY, eval_cases, train_item_counts
from eager.eval.metrics import DEFAULT_KS, metrics_from_ranks, target_rank
from eager.eval.rank_file import RANKS_FILE, rank_record, write_rank_file
from eager.utils import machine_line, timestamp

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"


def evaluate_rankings(
    data: InteractionData,
    split: str,
    rankings: Mapping[str, Sequence[str]],
    model: str,
    config: Mapping | None = None,
    out_dir: str | Path | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    max_history: int = DEFAULT_MAX_HISTORY,
    extra: Mapping | None = None,
    item_counts: np.ndarray | None = None,
    exclude_history: bool = False,
) -> dict:
    """Score ``rankings`` ({user key: ranked item keys}) on ``split``; optionally write the report.

    Users with no ranking count as misses (``missing_users``). Keys not in the catalogue and
    repeated keys are dropped before ranking and counted in ``invalid_rate`` (the share of all
    returned entries that were unusable). ``item_counts``: the train-split counts popularity is read
    from, when ``data`` holds only some users (a partial run); by default ``data``'s own.

    ``exclude_history``: drop each user's earlier items from its list before scoring. The protocol
    keeps them (as the paper, LC-Rec and cornac's next-item evaluation do); this is a diagnostic of
    what a model's repeats cost, and the report says it was applied.
    """
    known = data.key_to_index()
    # Uncapped: "history" here is everything the split rule puts before the target, whatever the
    # model read (``max_history`` is only what the report says the prompts held).
    cases = eval_cases(data, split, max_history=None)
    keys = data.item_keys
    ranks, rows, histories = [], [], []
    returned = invalid = missing = 0
    for case in cases:
        user = data.user_keys[case.user]
        target = keys[case.target]
        history = {keys[i] for i in case.history}
        raw = rankings.get(user)
        if raw is None:
            missing += 1
            raw = []
        seen: set[str] = set()
        ranked = []
        for item in raw:
            item = str(item)
            if item in known and item not in seen:
                seen.add(item)
                ranked.append(item)
        returned += len(raw)
        invalid += len(raw) - len(ranked)
        if exclude_history:
            ranked = [item for item in ranked if item not in history]
        ranks.append(target_rank(ranked, target))
        rows.append({"user": user, "target": target, "ranked": ranked})
        histories.append(history)
    report = {
        "dataset": data.name,
        "split": split,
        "model": model,
        "k": list(ks),
        "users": len(cases),
        **metrics_from_ranks(ranks, ks),
        **list_diversity(data, [row["ranked"] for row in rows], ks, item_counts, histories),
        "invalid_rate": invalid / returned if returned else 0.0,
        "missing_users": missing,
        "max_history": max_history,
        **({"exclude_history": True} if exclude_history else {}),
        "config": dict(config or {}),
        "machine": machine_line(),
        "created": timestamp(),
        **dict(extra or {}),
    }
    if out_dir is not None:
        write_report(out_dir, rows, report, ranks)
    return report


def list_diversity(data: InteractionData, lists: Sequence[Sequence[str]], ks: Sequence[int],
                   item_counts: np.ndarray | None = None,
                   histories: Sequence[set[str]] | None = None) -> dict[str, float]:
    """What the lists recommend, beyond hits: ``coverage@k``, the share of the catalogue that appears
    in any user's top k, and ``median_popularity@k``, the median training-split count of the items
    recommended there. A model that sends everyone the same popular items scores low on the first
    and high on the second, whatever its recall. With ``histories`` (each list's user's earlier
    items), ``history_items@k``: how many of the top k the user already has, on average; on the
    Amazon benchmarks no held-out item repeats an earlier one, so each is a slot that cannot hit."""
    counts = train_item_counts(data) if item_counts is None else item_counts
    index = data.key_to_index()
    out = {}
    for k in ks:
        items = [index[key] for ranked in lists for key in ranked[:k]]
        out[f"coverage@{k}"] = len(set(items)) / data.num_items
        out[f"median_popularity@{k}"] = float(np.median(counts[items])) if items else float("nan")
        if histories is not None:
            repeats = [sum(key in history for key in ranked[:k]) for ranked, history in zip(lists, histories)]
            out[f"history_items@{k}"] = float(np.mean(repeats)) if repeats else float("nan")
    return out


def write_report(out_dir: str | Path, rows: list[dict], report: Mapping, ranks: Sequence[int | None]) -> Path:
    """``ranks``: each row's target rank, as scored (the rank file keeps them alone)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / PREDICTIONS_FILE, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out / METRICS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    # What a later paired comparison needs, without the users' held-out items (eager.eval.rank_file).
    record = rank_record(report["dataset"], report["split"], report["model"], [row["user"] for row in rows],
                         [row["target"] for row in rows], ranks, max((len(row["ranked"]) for row in rows), default=0))
    write_rank_file(out / RANKS_FILE, record)
    return out


def ranked_rows(path: str | Path, with_target: bool = False) -> Iterator[tuple[int, str, str | None, list[str]]]:
    """(line number, user, target or None, ranked keys) per row of a jsonl of ranked lists.

    ``with_target``: rows must also name the held-out item, as ``predictions.jsonl`` does.
    """
    fields = "'user', 'target' and 'ranked'" if with_target else "'user' and 'ranked'"
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                user, ranked = str(row["user"]), [str(k) for k in row["ranked"]]
                target = str(row["target"]) if with_target else None
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: expected a JSON object with {fields} (a list of item keys)") from err
            yield number, user, target, ranked


def read_rankings(path: str | Path) -> dict[str, list[str]]:
    """Rankings from a jsonl file of ``{"user": key, "ranked": [key, ...]}`` rows."""
    return {user: ranked for _, user, _, ranked in ranked_rows(path)}


def rankings_from_scores(
    data: InteractionData,
    users: Sequence[int],
    scores: np.ndarray | torch.Tensor,
    k: int,
) -> dict[str, list[str]]:
    """Turn a (users × items) score matrix into top-``k`` key lists (ties broken by item index)."""
    scores = torch.as_tensor(scores)
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.tolist()
    keys = data.item_keys
    return {data.user_keys[u]: [keys[i] for i in row] for u, row in zip(users, top)}
