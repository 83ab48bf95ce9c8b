"""Raw official files → canonical form, on small files in the official formats written here."""

import gzip
import json
import zipfile

import pandas as pd

from eager.data.dataset import InteractionData
from eager.data.raw_amazon import k_core, preprocess_amazon2014, preprocess_amazon2018
from eager.data.raw_movielens import preprocess_ml100k


def _write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def _raw_2014(tmp_path):
    """Six users × items A..F, plus a leaky user, an item with no metadata and a duplicate."""
    reviews, t = [], 1000
    users = [f"U{u}" for u in range(6)]
    items = list("ABCDEF")
    for u, user in enumerate(users):
        # Reverse file order for odd users so the time sort is visible.
        order = items if u % 2 == 0 else items[::-1]
        for k, item in enumerate(order):
            stamp = t + 10 * u + (k if u % 2 == 0 else -k + 5)
            reviews.append({"reviewerID": user, "asin": item, "overall": 5.0, "unixReviewTime": stamp})
    reviews.append({"reviewerID": "U0", "asin": "A", "unixReviewTime": 99999})  # duplicate, later
    reviews += [{"reviewerID": "U0", "asin": "NOMETA", "unixReviewTime": 5}]  # item without metadata
    # U9 has 5 interactions but one is with G, which has only 1 user: after G goes, U9 has 4 → dropped.
    reviews += [{"reviewerID": "U9", "asin": x, "unixReviewTime": 7000 + i} for i, x in enumerate("ABCDG")]
    _write_gz(tmp_path / "reviews_Cat_5.json.gz", [json.dumps(r) for r in reviews])
    meta = [
        repr({"asin": x, "title": f"Thing {x} &amp; co", "brand": "Acme", "categories": [["Cat", "Sub"]],
              "description": "<b>bold</b> text",
              **({"imUrl": f"http://ecx.images-amazon.com/images/I/{x}.jpg"} if x in "AB" else {}),
              **({"imUrl": "javascript:alert(1)"} if x == "C" else {})})
        for x in "ABCDEFG"
    ]
    _write_gz(tmp_path / "meta_Cat.json.gz", meta)
    return tmp_path / "reviews_Cat_5.json.gz", tmp_path / "meta_Cat.json.gz"


def test_amazon2014_preprocessing(tmp_path):
    data = preprocess_amazon2014(*_raw_2014(tmp_path), name="cat")
    assert data.stats() == {"users": 6, "items": 6, "interactions": 36}
    assert "NOMETA" not in data.item_keys and "G" not in data.item_keys and "U9" not in data.user_keys
    assert data.user_keys == [f"U{u}" for u in range(6)]
    # Items numbered by first appearance: U0 bought A..F in time order.
    assert data.item_keys == list("ABCDEF")
    assert [data.item_keys[i] for i in data.sequences[0]] == list("ABCDEF")
    # U1's file order was F..A but its timestamps run A..F: the sort used time, not file order.
    assert [data.item_keys[i] for i in data.sequences[1]] == list("ABCDEF")
    row = data.items.iloc[0]
    assert row["title"] == "Thing A & co" and row["categories"] == "Cat, Sub" and row["description"] == "bold text"
    # The picture's address is kept where the metadata has a web address, and never read as text.
    images = dict(zip(data.items["key"], data.items["image"]))
    assert images["A"] == "http://ecx.images-amazon.com/images/I/A.jpg" and images["C"] == images["D"] == ""
    assert "image" not in data.text_fields


def test_time_sort_not_file_order(tmp_path):
    reviews = []
    for u in range(5):
        stamps = [50, 40, 30, 20, 10]  # file order is newest first
        reviews += [{"reviewerID": f"U{u}", "asin": x, "unixReviewTime": s} for x, s in zip("VWXYZ", stamps)]
    _write_gz(tmp_path / "r.json.gz", [json.dumps(r) for r in reviews])
    _write_gz(tmp_path / "m.json.gz", [repr({"asin": x, "title": x}) for x in "VWXYZ"])
    data = preprocess_amazon2014(tmp_path / "r.json.gz", tmp_path / "m.json.gz", name="t")
    assert [data.item_keys[i] for i in data.sequences[0]] == list("ZYXWV")
    assert data.item_keys == list("ZYXWV")


def test_duplicate_keeps_earliest(tmp_path):
    reviews = []
    for u in range(5):
        reviews += [{"reviewerID": f"U{u}", "asin": x, "unixReviewTime": 10 + i} for i, x in enumerate("VWXYZ")]
    reviews.append({"reviewerID": "U0", "asin": "V", "unixReviewTime": 100})
    _write_gz(tmp_path / "r.json.gz", [json.dumps(r) for r in reviews])
    _write_gz(tmp_path / "m.json.gz", [repr({"asin": x, "title": x}) for x in "VWXYZ"])
    data = preprocess_amazon2014(tmp_path / "r.json.gz", tmp_path / "m.json.gz", name="t")
    assert data.num_interactions == 25
    assert [data.item_keys[i] for i in data.sequences[0]] == list("VWXYZ")


def test_k_core_iterates_to_a_fixed_point():
    rows = [(f"u{u}", f"i{i}") for u in range(5) for i in range(5)]
    rows += [("x", f"i{i}") for i in range(4)] + [("x", "rare")]  # x loses 'rare', then has 4
    frame = pd.DataFrame(rows, columns=["user", "item"])
    out = k_core(frame, 5)
    assert set(out["user"]) == {f"u{u}" for u in range(5)}
    assert out["user"].value_counts().min() >= 5 and out["item"].value_counts().min() >= 5


def test_amazon2018_csv(tmp_path):
    lines = [f"{x},U{u},5.0,{100 * u + i}" for u in range(5) for i, x in enumerate("PQRST")]
    (tmp_path / "Cat.csv").write_text("\n".join(lines) + "\n")
    _write_gz(tmp_path / "meta_Cat.json.gz",
              [json.dumps({"asin": x, "title": f"T{x}", "category": ["Top", "Mid"], "description": ["a", "b"],
                           **({"imageURLHighRes": [f"https://images-na.ssl-images-amazon.com/{x}.jpg"]} if x == "P" else {})})
               for x in "PQRST"])
    data = preprocess_amazon2018(tmp_path / "Cat.csv", tmp_path / "meta_Cat.json.gz", name="c")
    assert data.stats() == {"users": 5, "items": 5, "interactions": 25}
    assert data.items.iloc[0].to_dict() == {
        "key": "P", "title": "TP", "brand": "", "categories": "Top, Mid", "description": "a b",
        "image": "https://images-na.ssl-images-amazon.com/P.jpg"}


def test_ml100k_zip(tmp_path):
    data_lines = ["1\t2\t5\t300", "1\t1\t4\t100", "2\t1\t3\t50", "1\t3\t2\t200"]
    item_lines = ["1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
                  "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
                  "3|Four Rooms (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0"]
    with zipfile.ZipFile(tmp_path / "ml-100k.zip", "w") as z:
        z.writestr("ml-100k/u.data", "\n".join(data_lines))
        z.writestr("ml-100k/u.item", "\n".join(item_lines).encode("latin-1"))
    data = preprocess_ml100k(tmp_path / "ml-100k.zip")
    assert data.user_keys == ["1", "2"]
    assert [data.item_keys[i] for i in data.sequences[0]] == ["1", "3", "2"]
    assert data.items.iloc[0]["categories"] == "Animation, Children's, Comedy"


def test_canonical_roundtrip(tmp_path):
    data = preprocess_amazon2014(*_raw_2014(tmp_path), name="cat")
    data.save(tmp_path / "out")
    again = InteractionData.load(tmp_path / "out")
    assert again.stats() == data.stats() and again.item_keys == data.item_keys
    assert all((a == b).all() for a, b in zip(again.sequences, data.sequences))
    assert again.items.equals(data.items)
