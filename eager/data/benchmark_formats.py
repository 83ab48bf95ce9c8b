"""Readers for the benchmark files as the literature distributes them (P5, LC-Rec, GRAM, RecBole).

Each reader takes the dataset's folder and returns an :class:`InteractionData`. The joins follow
each folder's SOURCE.md; item keys are ASINs wherever the files carry them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from eager.data.dataset import InteractionData, items_frame


def _read_p5_sequences(path: Path) -> list[tuple[str, list[str]]]:
    """P5 / S3-Rec ``user item item ...`` lines (1-based ids, CRLF line ends)."""
    rows = []
    with open(path, encoding="utf-8", newline=None) as f:
        for line in f:
            parts = line.split()
            if parts:
                rows.append((parts[0], parts[1:]))
    return rows


def _read_short_names(path: Path) -> dict[str, str]:
    """IDGenRec ``ASIN word word ...`` lines: generated short names, not real titles."""
    names = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\r\n").split(" ", 1)
            if parts[0]:
                names[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return names


def _from_p5(name: str, folder: Path, titles_by_asin: dict[str, str], text_fields, source) -> InteractionData:
    datamaps = json.loads((folder / "datamaps.json").read_text(encoding="utf-8"))
    id2item: dict[str, str] = datamaps["id2item"]
    id2user: dict[str, str] = datamaps["id2user"]
    # P5 ids are 1..n in numbering order; keep that order so internal index = P5 id - 1.
    item_ids = sorted(id2item, key=int)
    if [int(i) for i in item_ids] != list(range(1, len(item_ids) + 1)):
        raise ValueError(f"{folder / 'datamaps.json'}: id2item is not a dense 1-based numbering")
    asins = [id2item[i] for i in item_ids]
    items = items_frame(asins, title=[titles_by_asin.get(a, "") for a in asins])
    user_keys, sequences = [], []
    for user_id, item_list in _read_p5_sequences(folder / "sequential_data.txt"):
        user_keys.append(id2user[user_id])
        sequences.append(np.array([int(i) - 1 for i in item_list], dtype=np.int64))
    return InteractionData(name, items, user_keys, sequences, text_fields, source)


def load_p5_beauty(folder: Path) -> InteractionData:
    lookup = pd.read_csv(folder / "products_lookup.csv", keep_default_na=False, dtype={"name": str})
    title_by_gid = dict(zip(lookup["global_product_id"].astype(int), lookup["name"].astype(str)))
    asin_to_gid = json.loads((folder / "item_id_to_int.json").read_text(encoding="utf-8"))
    titles = {asin: title_by_gid.get(int(gid), "").strip() for asin, gid in asin_to_gid.items()}
    return _from_p5("beauty", folder, titles, ("title",), "P5 sequential_data.txt + products_lookup titles")


def load_p5_sports(folder: Path) -> InteractionData:
    names = _read_short_names(folder / "item_generative_indexing_phase_0.txt")
    return _from_p5(
        "sports", folder, names, ("title",),
        "P5 sequential_data.txt; titles are IDGenRec generated short names, not real titles",
    )


def load_gram_toys(folder: Path) -> InteractionData:
    names = _read_short_names(folder / "item_generative_indexing_phase_0.txt")
    user_keys, raw_sequences = [], []
    with open(folder / "user_sequence.txt", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts:
                user_keys.append(parts[0])
                raw_sequences.append(parts[1:])
    # Number items by first appearance, as P5 did for this data.
    index: dict[str, int] = {}
    for seq in raw_sequences:
        for asin in seq:
            index.setdefault(asin, len(index))
    asins = list(index)
    sequences = [np.array([index[a] for a in seq], dtype=np.int64) for seq in raw_sequences]
    items = items_frame(asins, title=[names.get(a, "") for a in asins])
    return InteractionData(
        "toys", items, user_keys, sequences, ("title",),
        "GRAM user_sequence.txt; titles are IDGenRec generated short names, not real titles",
    )


def _read_lcrec_inter(path: Path) -> tuple[list[str], list[np.ndarray]]:
    inter = json.loads(path.read_text(encoding="utf-8"))
    users = sorted(inter, key=int)
    return users, [np.asarray(inter[u], dtype=np.int64) for u in users]


def _check_dense(name: str, sequences: list[np.ndarray], num_items: int) -> None:
    seen = np.unique(np.concatenate(sequences))
    if seen.min() < 0 or seen.max() >= num_items:
        raise ValueError(f"{name}: item index out of range 0..{num_items - 1}")


def load_lcrec_scientific(folder: Path) -> InteractionData:
    users, sequences = _read_lcrec_inter(folder / "Scientific.inter.json")
    meta = json.loads((folder / "Scientific.item.json").read_text(encoding="utf-8"))
    ids = sorted(meta, key=int)
    if [int(i) for i in ids] != list(range(len(ids))):
        raise ValueError(f"{folder}: Scientific.item.json is not indexed 0..n-1")
    # No ASIN map ships with this file, so the LC-Rec item index is the external key.
    items = items_frame(
        [f"sci{i}" for i in ids],
        title=[meta[i].get("title", "") for i in ids],
        brand=[meta[i].get("brand", "") for i in ids],
        categories=[meta[i].get("categories", "") for i in ids],
        description=[meta[i].get("description", "") for i in ids],
    )
    _check_dense("scientific", sequences, len(items))
    return InteractionData(
        "scientific", items, [f"u{u}" for u in users], sequences,
        ("title", "brand", "categories", "description"), "LC-Rec Scientific.inter.json + item.json",
    )


def _read_tsv_map(path: Path) -> dict[int, str]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) == 2:
                out[int(parts[1])] = parts[0]
    return out


def load_lcrec_instruments(folder: Path) -> InteractionData:
    users, sequences = _read_lcrec_inter(folder / "Instruments.inter.json")
    idx_to_asin = _read_tsv_map(folder / "Instruments.item2id")
    idx_to_user = _read_tsv_map(folder / "Instruments.user2id")
    n = len(idx_to_asin)
    if sorted(idx_to_asin) != list(range(n)):
        raise ValueError(f"{folder}: Instruments.item2id does not cover 0..{n - 1}")
    items = items_frame([idx_to_asin[i] for i in range(n)])
    _check_dense("instruments", sequences, n)
    user_keys = [idx_to_user.get(int(u), f"u{u}") for u in users]
    return InteractionData("instruments", items, user_keys, sequences, (), "LC-Rec Instruments.inter.json")


def load_recbole_ml100k(folder: Path) -> InteractionData:
    inter = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    item_rows = []
    with open(folder / "ml-100k.item", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for row in reader:
            item_rows.append(row + [""] * (4 - len(row)))
    return sequences_from_ratings(
        "ml-100k",
        inter.rename(columns={"user_id": "user", "item_id": "item"}),
        {
            str(r[0]): {
                "title": f"{r[1]} ({r[2]})" if r[2] else r[1],
                "categories": ", ".join(r[3].split()),
            }
            for r in item_rows
        },
        ("title", "categories"),
        "RecBole ml-100k atomic files",
        item_order="id",
    )


def sequences_from_ratings(
    name: str,
    ratings: pd.DataFrame,
    item_text: dict[str, dict[str, str]],
    text_fields: tuple[str, ...],
    source: str,
    item_order: str = "first_appearance",
) -> InteractionData:
    """Ratings rows (user, item, timestamp) → time-ordered sequences.

    Ties in time keep file order (a stable sort), so the result is deterministic.
    ``item_order`` is "first_appearance" (the P5 convention) or "id" (numeric item ids).
    """
    ratings = ratings.assign(user=ratings["user"].astype(str), item=ratings["item"].astype(str))
    ratings = ratings.reset_index(drop=True).assign(_row=lambda d: np.arange(len(d)))
    ratings = ratings.sort_values(["timestamp", "_row"], kind="stable")
    if item_order == "id":
        item_keys = sorted(ratings["item"].unique(), key=lambda k: (len(k), k))
    else:
        user_first = ratings.groupby("user", sort=False)["_row"].min().sort_values(kind="stable")
        by_user = ratings.groupby("user", sort=False)["item"].apply(list)
        seen: dict[str, None] = {}
        for user in user_first.index:
            for item in by_user[user]:
                seen.setdefault(item, None)
        item_keys = list(seen)
    index = {k: i for i, k in enumerate(item_keys)}
    groups = ratings.groupby("user", sort=False)
    if item_order == "id":
        users = sorted(groups.groups, key=lambda k: (len(k), k))
    else:
        users = list(ratings.groupby("user", sort=False)["_row"].min().sort_values(kind="stable").index)
    item_lists = groups["item"].apply(list)
    sequences = [np.array([index[i] for i in item_lists[u]], dtype=np.int64) for u in users]
    texts = {f: [item_text.get(k, {}).get(f, "") for k in item_keys] for f in text_fields}
    return InteractionData(name, items_frame(item_keys, **texts), list(users), sequences, text_fields, source)
