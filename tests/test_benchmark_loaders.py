"""The real shared benchmark files: exact counts, order and joins (SPEC §3 and each SOURCE.md)."""

import json

import numpy as np
import pandas as pd
import pytest

from eager.cli import main
from eager.data import DATASETS, load_dataset

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(DATASETS))
def test_counts_match_the_literature(name, shared_data, capsys):
    assert main(["data", "stats", "--dataset", name, "--json", "--data-root", str(shared_data)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == DATASETS[name].expected


def test_beauty_order_matches_lcrec_file_and_titles_join(shared_data):
    data = load_dataset("beauty", shared_data)
    lcrec = json.loads((shared_data / "Beauty" / "Beauty.inter.json").read_text())
    # The LC-Rec file is the same data 0-based: same users, same items, same chronological order.
    for user in ("0", "1", "500", str(len(lcrec) - 1)):
        assert data.sequences[int(user)].tolist() == lcrec[user]
    assert data.titles[0].startswith("OPI Nail Lacquer, Simmer and Shimmer")
    assert data.titles[4].startswith("Dr. Scholl's Quick Heat Paraffin Spa Bath")
    empty = set(data.items.loc[data.items["title"] == "", "key"])
    assert empty == {"B001S3I57S", "B000GZES7A", "B001DJ2USM", "B001MP0T2Q", "B00B4C35IW", "B00ALHISAQ", "B001RD37ZO"}
    assert all(key.strip() for key in data.item_keys)


def test_toys_follows_the_asin_file_in_order(shared_data):
    data = load_dataset("toys", shared_data)
    first = (shared_data / "Toys" / "user_sequence.txt").read_text().splitlines()[0].split()
    assert data.user_keys[0] == first[0]
    assert [data.item_keys[i] for i in data.sequences[0]] == first[1:]
    assert data.titles[data.key_to_index()["B009NFFYWM"]].startswith("thomas wooden railway")


def test_ml100k_sequences_are_time_ordered(shared_data):
    data = load_dataset("ml-100k", shared_data)
    inter = pd.read_csv(shared_data / "ml-100k" / "ml-100k.inter", sep="\t")
    inter.columns = ["user", "item", "rating", "timestamp"]
    stamp = {(str(u), str(i)): t for u, i, t in zip(inter.user, inter.item, inter.timestamp)}
    for u in (0, 10, 500):
        times = [stamp[(data.user_keys[u], data.item_keys[i])] for i in data.sequences[u]]
        assert times == sorted(times)
    assert data.titles[data.key_to_index()["1"]] == "Toy Story (1995)"


def test_scientific_has_all_text_fields_and_instruments_has_asins(shared_data):
    sci = load_dataset("scientific", shared_data)
    assert (sci.items["title"] != "").all()
    assert (sci.items["brand"] != "").sum() == 4332
    ins = load_dataset("instruments", shared_data)
    assert ins.item_keys[0] == "B000FFWZKI"
    assert all(len(s) >= 5 for s in ins.sequences)
    assert np.concatenate(ins.sequences).max() == ins.num_items - 1
