"""MovieLens 100K from its official zip: ratings, titles, years and genres."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd

from eager.data.benchmark_formats import sequences_from_ratings
from eager.data.dataset import InteractionData


def preprocess_ml100k(zip_path: Path) -> InteractionData:
    """GroupLens ml-100k.zip: u.data (tab separated) and u.item (pipe separated, latin-1)."""
    with zipfile.ZipFile(zip_path) as archive:
        names = {Path(n).name: n for n in archive.namelist()}
        data = archive.read(names["u.data"]).decode("latin-1")
        item_text = archive.read(names["u.item"]).decode("latin-1")
    ratings = pd.read_csv(io.StringIO(data), sep="\t", header=None, names=["user", "item", "rating", "timestamp"])
    meta = {}
    for line in item_text.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        flags = parts[-len(_ML_GENRES):]
        genres = [g for g, flag in zip(_ML_GENRES, flags) if flag == "1"]
        meta[parts[0]] = {"title": parts[1], "categories": ", ".join(genres)}
    return sequences_from_ratings(
        "ml-100k", ratings, meta, ("title", "categories"), f"GroupLens {zip_path.name}", item_order="id"
    )


_ML_GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()
