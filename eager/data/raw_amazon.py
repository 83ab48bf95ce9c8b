"""Preprocess the *official* raw files into the canonical form.

Amazon 2014 (McAuley et al.): ``reviews_<Cat>_5.json.gz`` (JSON lines) + ``meta_<Cat>.json.gz``
(one Python literal per line, hence ``ast.literal_eval``). Amazon 2018 (Ni et al.):
``<Cat>.csv`` ratings (item,user,rating,timestamp; no header) + ``meta_<Cat>.json.gz`` (JSON
lines). MovieLens 100K: the GroupLens ``ml-100k.zip``.

Steps, as S3-Rec / P5 / LC-Rec do them: dedupe (user, item) keeping the earliest, drop items
without metadata, iterate the 5-core filter to a fixed point, sort each user's items by time,
number by first appearance.
"""

from __future__ import annotations

import ast
import gzip
import html
import io
import json
import re
from pathlib import Path
from typing import Iterator

import pandas as pd

from eager.data.benchmark_formats import sequences_from_ratings
from eager.data.dataset import IMAGE_FIELD, InteractionData


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _parse_line(line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        # 2014 meta lines are Python dict literals (single quotes), not JSON.
        return ast.literal_eval(line)


def iter_records(path: Path) -> Iterator[dict]:
    with _open_text(path) as f:
        for line in f:
            line = line.strip()
            if line:
                yield _parse_line(line)


_TAG = re.compile(r"<[^>]+>")


def clean_text(value) -> str:
    """Flatten lists, unescape HTML entities and strip tags; meta fields come in many shapes."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        parts = [clean_text(v) for v in value]
        return " ".join(p for p in parts if p)
    text = html.unescape(str(value))
    text = _TAG.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip()


def _categories(value) -> str:
    # 2014: [["Beauty", "Makeup", "Eyes"], ...]; 2018: ["Industrial & Scientific", ...]
    if not value:
        return ""
    if isinstance(value[0], (list, tuple)):
        value = value[0]
    return ", ".join(clean_text(v) for v in value if clean_text(v))


def read_meta(path: Path) -> dict[str, dict[str, str]]:
    meta = {}
    for rec in iter_records(path):
        asin = rec.get("asin")
        if not asin:
            continue
        meta[str(asin)] = {
            "title": clean_text(rec.get("title")),
            "brand": clean_text(rec.get("brand")),
            "categories": _categories(rec.get("categories") or rec.get("category")),
            "description": clean_text(rec.get("description")),
            "image": _image_url(rec),
        }
    return meta


def _image_url(rec: dict) -> str:
    # 2014: "imUrl"; 2018: "imageURLHighRes" / "imageURL" lists. Only web addresses are kept.
    value = rec.get("imUrl") or (rec.get("imageURLHighRes") or rec.get("imageURL") or [""])
    url = str(value[0] if isinstance(value, list) and value else value or "").strip()
    return url if url.startswith(("https://", "http://")) else ""


def read_reviews_2014(path: Path) -> pd.DataFrame:
    rows = [
        (r["reviewerID"], r["asin"], int(r.get("unixReviewTime", 0)))
        for r in iter_records(path)
    ]
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def read_ratings_2018(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, header=None, names=["item", "user", "rating", "timestamp"], dtype={0: str, 1: str})
    return frame[["user", "item", "timestamp"]]


def k_core(ratings: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Repeat dropping users and items with fewer than k interactions until none is left."""
    while True:
        user_counts = ratings["user"].map(ratings["user"].value_counts())
        item_counts = ratings["item"].map(ratings["item"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return ratings
        ratings = ratings[keep]


def preprocess_ratings(
    ratings: pd.DataFrame,
    meta: dict[str, dict[str, str]],
    name: str,
    source: str,
    k: int = 5,
) -> InteractionData:
    ratings = ratings.reset_index(drop=True)
    ratings = ratings.assign(_row=range(len(ratings)))
    # Dedupe: a repeated (user, item) keeps its earliest interaction.
    ratings = ratings.sort_values(["timestamp", "_row"], kind="stable")
    ratings = ratings.drop_duplicates(["user", "item"], keep="first").sort_values("_row")
    ratings = ratings[ratings["item"].isin(meta.keys())]
    ratings = k_core(ratings, k).drop(columns="_row")
    if ratings.empty:
        raise ValueError(f"{name}: nothing is left after dropping items without metadata and the {k}-core filter")
    fields = ("title", "brand", "categories", "description")
    data = sequences_from_ratings(name, ratings, meta, fields, source)
    data.items[IMAGE_FIELD] = [meta.get(k, {}).get(IMAGE_FIELD, "") for k in data.items["key"]]
    return data


def preprocess_amazon2014(reviews: Path, meta: Path, name: str, k: int = 5) -> InteractionData:
    return preprocess_ratings(
        read_reviews_2014(reviews), read_meta(meta), name, f"Amazon 2014 {reviews.name} + {meta.name}", k
    )


def preprocess_amazon2018(ratings_csv: Path, meta: Path, name: str, k: int = 5) -> InteractionData:
    return preprocess_ratings(
        read_ratings_2018(ratings_csv), read_meta(meta), name, f"Amazon 2018 {ratings_csv.name} + {meta.name}", k
    )


