"""What the demo needs before it starts: its dataset, prepared from the official source when absent.

The demo serves the shipped checkpoints over one dataset (Beauty by default). With a data root set
($EAGER_DATA_ROOT) it reads what is there and never downloads; without one it prepares the dataset
under ./data from the official raw files (resumable, checksummed, with a progress bar:
:mod:`eager.data.download`), once. $EAGER_DATA_SOURCE points the download elsewhere (a mirror, a
folder with the raw files, a local test server).
"""

from __future__ import annotations

import os
from pathlib import Path

from eager.data.download import DownloadError
from eager.data.prepare import prepare_dataset
from eager.data.registry import DATA_ROOT_ENV, dataset_dir, get_spec, has_benchmark_files, has_canonical, resolve_data_root

DATASET_ENV = "EAGER_DEMO_DATASET"
SOURCE_ENV = "EAGER_DATA_SOURCE"


def demo_dataset() -> str:
    return os.environ.get(DATASET_ENV, "beauty")


def dataset_present(name: str, data_root: str | Path | None = None) -> bool:
    spec = get_spec(name)
    root, _ = resolve_data_root(data_root)
    folder = dataset_dir(spec, root)
    return has_canonical(folder) or has_benchmark_files(spec, folder)


def ensure_demo_data(name: str | None = None, data_root: str | Path | None = None,
                     source: str | None = None, quiet: bool = False) -> str:
    """Make the demo's dataset loadable; return one line saying what was found or done.

    A data root given by the caller or the environment is read as it is: if the dataset is missing
    there, this says so and what to do rather than writing into someone's data folder. Otherwise the
    dataset is prepared under the default root. A failed or interrupted download raises with what to
    do; its partial file stays as ``*.part`` and is resumed by the next start, never read as data.
    """
    name = name or demo_dataset()
    root, origin = resolve_data_root(data_root)
    if dataset_present(name, data_root):
        return f"{name}: found under {root} ({origin})"
    if data_root or os.environ.get(DATA_ROOT_ENV):
        raise FileNotFoundError(
            f"{name} is not under {root} ({origin}). Point {DATA_ROOT_ENV} at a folder holding it, or unset "
            f"{DATA_ROOT_ENV} to have the demo download and prepare it under ./data "
            f"(or run `eager data prepare --dataset {name} --data-root {root}`).")
    source = source or os.environ.get(SOURCE_ENV) or None
    try:
        _, done = prepare_dataset(name, root, source=source, quiet=quiet)
    except DownloadError as err:
        raise DownloadError(f"{err} (the demo needs {name}; start it again to resume)") from err
    return f"{name}: {done}"
