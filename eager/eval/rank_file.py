"""Per-user target ranks without the data: what a paired comparison needs, small enough to commit.

``predictions.jsonl`` names every user with their held-out item, which is the benchmark's split
itself and not ours to publish. A rank file keeps only the rank of each user's target, in the
harness's user order, and a digest of the (user, target) pairs it was scored on. Reading it back
rebuilds the users and targets from the dataset and checks the digest, so an evaluation run on a
leased GPU can be paired again later, by anyone with the data, from a file of ~100 KB.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

RANKS_FILE = "ranks.json"
FORMAT = "eager-ranks/1"


def cases_digest(users: Sequence[str], targets: Sequence[str]) -> str:
    """sha256 of the ordered (user, target) pairs: equal exactly when two runs scored the same cases."""
    digest = hashlib.sha256()
    for user, target in zip(users, targets, strict=True):
        digest.update(f"{user}\t{target}\n".encode())
    return digest.hexdigest()


def rank_record(dataset: str, split: str, model: str, users: Sequence[str], targets: Sequence[str],
                ranks: Sequence[int | None], depth: int | None) -> dict:
    """The rank file's content: ranks in the given user order (None: the target was not returned)."""
    if not dataset or not split:
        raise ValueError("a rank file needs the dataset and split the ranks were scored on (the evaluation's "
                         "metrics.json names them)")
    return {"format": FORMAT, "dataset": dataset, "split": split, "model": model, "users": len(users),
            "depth": depth, "cases_sha256": cases_digest(users, targets), "ranks": list(ranks)}


def write_rank_file(path: str | Path, record: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A field a line, the ranks compact on theirs: a Beauty test split is ~100 KB.
    lines = [f" {json.dumps(key)}: {json.dumps(value, separators=(',', ':'))}" for key, value in record.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return path


def evaluation_rank_record(evaluation) -> dict:
    """A rank record of an ``eager.eval.records.Evaluation`` read from a predictions file."""
    users = list(evaluation.targets)
    return rank_record(evaluation.dataset, evaluation.split, evaluation.name, users,
                       [evaluation.targets[u] for u in users], [evaluation.ranks[u] for u in users], evaluation.depth)


def read_rank_header(path: str | Path) -> dict | None:
    """The record of a rank file, or None when ``path`` is not one (any other file or folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RANKS_FILE
    if not path.is_file() or path.suffix != ".json":
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def read_rank_file(path: str | Path, data, name: str | None = None, record: dict | None = None):
    """An ``Evaluation`` from a rank file, its users and targets rebuilt from ``data`` (the dataset it
    names) and checked against the digest the file carries. ``record``: the file's content, where the
    caller has read it already (``read_rank_header``)."""
    from eager.data.split import eval_cases
    from eager.eval.records import Evaluation

    record = record or read_rank_header(path)
    if record is None:
        raise ValueError(f"{path}: not a rank file (written by `eager eval --out` as {RANKS_FILE}, or by `eager lab ranks`)")
    if record["dataset"] != data.name:
        raise ValueError(f"{path} holds ranks on {record['dataset']!r}, not {data.name!r}")
    cases = eval_cases(data, record["split"], max_history=None)
    users = [data.user_keys[c.user] for c in cases]
    targets = [data.item_keys[c.target] for c in cases]
    ranks = record["ranks"]
    if len(ranks) != len(users) or record["users"] != len(ranks):
        raise ValueError(f"{path} holds {len(ranks)} ranks, but {data.name}'s {record['split']} split has "
                         f"{len(users)} users: a rank file covers a whole split (not an `eager eval --limit` run)")
    if cases_digest(users, targets) != record["cases_sha256"]:
        raise ValueError(f"{path} was scored on other (user, target) pairs than this copy of {data.name}'s "
                         f"{record['split']} split: is it the same data, prepared the same way?")
    return Evaluation(name=name or record["model"], targets=dict(zip(users, targets)), ranks=dict(zip(users, ranks)),
                      dataset=record["dataset"], split=record["split"], source=str(path), depth=record["depth"])
