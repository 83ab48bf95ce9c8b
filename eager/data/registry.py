"""Named datasets: where they live under the data root, how to read them, where they come from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from eager.data import benchmark_formats as fmt
from eager.data import raw_amazon
from eager.data.dataset import ITEMS_FILE, SEQUENCES_FILE, InteractionData

DATA_ROOT_ENV = "EAGER_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("data")

AMAZON_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
AMAZON_2018 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"


@dataclass(frozen=True)
class RawSource:
    """The official raw files of a dataset: URLs, local file names, and the preprocessing."""

    urls: tuple[str, ...]
    kind: str  # "amazon2014", "amazon2018" or "ml100k"

    @property
    def filenames(self) -> tuple[str, ...]:
        return tuple(url.rsplit("/", 1)[-1] for url in self.urls)


# What users of each source agree to (shown on the demo's model card; SOURCE.md files say the same).
TERMS = {
    "amazon2014": "Amazon review data (2014), McAuley lab, UCSD: published for research; cite McAuley et al. "
                  "SIGIR'15 and He & McAuley WWW'16. No open licence is stated; product titles are Amazon "
                  "catalogue text. Research, testing and demos only; not redistributed by this project.",
    "amazon2018": "Amazon review data (2018), McAuley lab, UCSD: published for research; cite Ni, Li & McAuley "
                  "EMNLP'19. No open licence is stated. Research, testing and demos only; not redistributed.",
    "ml100k": "MovieLens 100K, GroupLens: research use under the GroupLens terms (no redistribution, no "
              "commercial use without permission; cite Harper & Konstan TiiS'15).",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str
    benchmark_reader: Callable[[Path], InteractionData]
    benchmark_files: tuple[str, ...]
    raw: RawSource
    expected: dict[str, int]  # the literature's counts (SPEC §3)


def _amazon2014(category: str) -> RawSource:
    return RawSource(
        (f"{AMAZON_2014}reviews_{category}_5.json.gz", f"{AMAZON_2014}meta_{category}.json.gz"), "amazon2014"
    )


def _amazon2018(category: str) -> RawSource:
    return RawSource(
        (f"{AMAZON_2018}categoryFilesSmall/{category}.csv", f"{AMAZON_2018}metaFiles2/meta_{category}.json.gz"),
        "amazon2018",
    )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("beauty", "Beauty", fmt.load_p5_beauty,
                    ("sequential_data.txt", "datamaps.json", "item_id_to_int.json", "products_lookup.csv"),
                    _amazon2014("Beauty"), {"users": 22363, "items": 12101, "interactions": 198502}),
        DatasetSpec("sports", "Sports", fmt.load_p5_sports,
                    ("sequential_data.txt", "datamaps.json", "item_generative_indexing_phase_0.txt"),
                    _amazon2014("Sports_and_Outdoors"), {"users": 35598, "items": 18357, "interactions": 296337}),
        DatasetSpec("toys", "Toys", fmt.load_gram_toys,
                    ("user_sequence.txt", "item_generative_indexing_phase_0.txt"),
                    _amazon2014("Toys_and_Games"), {"users": 19412, "items": 11924, "interactions": 167597}),
        DatasetSpec("scientific", "Scientific", fmt.load_lcrec_scientific,
                    ("Scientific.inter.json", "Scientific.item.json"),
                    _amazon2018("Industrial_and_Scientific"), {"users": 8317, "items": 4344, "interactions": 58492}),
        DatasetSpec("instruments", "Instruments", fmt.load_lcrec_instruments,
                    ("Instruments.inter.json", "Instruments.item2id", "Instruments.user2id"),
                    _amazon2018("Musical_Instruments"), {"users": 24772, "items": 9922, "interactions": 206153}),
        DatasetSpec("ml-100k", "ml-100k", fmt.load_recbole_ml100k,
                    ("ml-100k.inter", "ml-100k.item"),
                    RawSource(("https://files.grouplens.org/datasets/movielens/ml-100k.zip",), "ml100k"),
                    {"users": 943, "items": 1682, "interactions": 100000}),
    )
}


class DataNotFoundError(FileNotFoundError):
    pass


def get_spec(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("_", "-")
    if key == "ml100k":
        key = "ml-100k"
    if key not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[key]


def resolve_data_root(data_root: str | Path | None = None) -> tuple[Path, str]:
    """The data root and where it came from (flag, environment, or the default)."""
    if data_root:
        return Path(data_root).expanduser(), "--data-root"
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser(), f"${DATA_ROOT_ENV}"
    return DEFAULT_DATA_ROOT, "the default ./data"


def dataset_dir(spec: DatasetSpec, root: Path) -> Path:
    """``root/<Folder>``, matching the folder name case-insensitively."""
    exact = root / spec.folder
    if exact.is_dir() or not root.is_dir():
        return exact
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() == spec.folder.lower():
            return child
    return exact


def has_canonical(folder: Path) -> bool:
    return (folder / ITEMS_FILE).exists() and (folder / SEQUENCES_FILE).exists()


def has_benchmark_files(spec: DatasetSpec, folder: Path) -> bool:
    return all((folder / f).exists() for f in spec.benchmark_files)


def load_dataset(name: str, data_root: str | Path | None = None) -> InteractionData:
    """Load a named dataset: the canonical form if prepared, else the benchmark files in place."""
    spec = get_spec(name)
    root, origin = resolve_data_root(data_root)
    folder = dataset_dir(spec, root)
    if has_canonical(folder):
        return InteractionData.load(folder, name=spec.name)
    if has_benchmark_files(spec, folder):
        return spec.benchmark_reader(folder)
    raise DataNotFoundError(
        f"dataset {spec.name!r} not found: looked in {folder.resolve()} (data root from {origin}) for "
        f"the prepared files ({ITEMS_FILE}, {SEQUENCES_FILE}) or the benchmark files "
        f"({', '.join(spec.benchmark_files)}). Get it with:\n"
        f"    eager data prepare --dataset {spec.name} --data-root {root}\n"
        f"or point --data-root / ${DATA_ROOT_ENV} at a folder that holds {spec.folder}/."
    )


def preprocess_raw(spec: DatasetSpec, raw_dir: Path) -> InteractionData:
    paths = [raw_dir / f for f in spec.raw.filenames]
    if spec.raw.kind == "amazon2014":
        return raw_amazon.preprocess_amazon2014(paths[0], paths[1], spec.name)
    if spec.raw.kind == "amazon2018":
        return raw_amazon.preprocess_amazon2018(paths[0], paths[1], spec.name)
    return raw_amazon.preprocess_ml100k(paths[0])
