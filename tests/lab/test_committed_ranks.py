"""The rank files in docs/measurements/ranks/ are what the README's paired figures rerun from.

They must keep reading against the prepared data (a change to the split or the preparation would
otherwise silently break every paired claim), and where a shipped checkpoint records the very run a
file was written by, the two committed artifacts must tell the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eager.data import load_dataset
from eager.eval.metrics import metrics_from_ranks
from eager.eval.rank_file import read_rank_file, read_rank_header
from tests.conftest import shared_data_or_skip

ROOT = Path(__file__).resolve().parents[2]
RANKS = ROOT / "docs" / "measurements" / "ranks"
RANK_FILES = sorted(RANKS.glob("*.ranks.json"))

# rank file -> (checkpoint, train seed of the `eager lab rerun` entry, or None for its own test record):
# the runs that wrote both.
RECORDED_BY = {
    "scientific_test_cpufast_epochs2_cpu_2026-12-05.ranks.json": ("scientific/wo_aat", None),
    "scientific_test_cpufast_epochs2_seed7_cpu_2026-12-05.ranks.json": ("scientific/wo_aat", 7),
    "beauty_test_full_seed1_h200_2026-12-04.ranks.json": ("beauty/full", 1),
    "beauty_test_wo_gct_seed1_h200_2026-12-04.ranks.json": ("beauty/wo_gct", 1),
    "beauty_test_wo_dki_seed1_h200_2026-12-04.ranks.json": ("beauty/wo_dki", 1),
}


@pytest.fixture(scope="module")
def datasets():
    cache: dict = {}

    def load(name: str):
        if name not in cache:
            cache[name] = load_dataset(name, shared_data_or_skip())
        return cache[name]

    return load


def _recorded(checkpoint: str, rerun_seed: int | None) -> dict:
    metrics = json.loads((ROOT / "checkpoints" / checkpoint / "metrics.json").read_text())
    if rerun_seed is None:
        return metrics["test"]
    matches = [run["test"] for run in metrics.get("reruns", []) if run["train_seed"] == rerun_seed and "test" in run]
    assert len(matches) == 1, f"{checkpoint} records {len(matches)} test reruns of train_seed {rerun_seed}"
    return matches[0]


def test_the_rank_files_are_there():
    assert RANK_FILES, f"no rank files under {RANKS}"
    assert set(RECORDED_BY) <= {path.name for path in RANK_FILES}


@pytest.mark.parametrize("path", RANK_FILES, ids=lambda path: path.name)
def test_every_committed_rank_file_reads_against_the_prepared_data(path, datasets):
    header = read_rank_header(path)
    assert header is not None, f"{path.name} is not a rank file"
    evaluation = read_rank_file(path, datasets(header["dataset"]), record=header)  # checks the cases' digest
    assert len(evaluation.ranks) == header["users"]
    assert all(rank is None or 1 <= rank <= header["depth"] for rank in evaluation.ranks.values())


@pytest.mark.parametrize("name", sorted(RECORDED_BY))
def test_a_rank_file_repeats_what_its_checkpoint_records(name):
    header = read_rank_header(RANKS / name)
    from_ranks = metrics_from_ranks(header["ranks"])
    recorded = _recorded(*RECORDED_BY[name])
    assert recorded["users"] == header["users"]
    for metric in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
        assert from_ranks[metric] == pytest.approx(recorded[metric], abs=1e-12), (name, metric)
