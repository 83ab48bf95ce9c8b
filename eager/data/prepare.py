"""``eager data prepare``: get a dataset's official raw files and turn them into the canonical form."""

from __future__ import annotations

import shutil
from pathlib import Path

from eager.data.dataset import InteractionData
from eager.data.download import download
from eager.data.registry import (
    dataset_dir,
    get_spec,
    has_benchmark_files,
    has_canonical,
    load_dataset,
    preprocess_raw,
    resolve_data_root,
)


def prepare_dataset(
    name: str,
    data_root: str | Path | None = None,
    source: str | None = None,
    force: bool = False,
    quiet: bool = False,
) -> tuple[InteractionData, str]:
    """Make ``name`` loadable under the data root; return it and a one-line account of what was done.

    ``source`` is a folder holding the raw files, or a base URL they are fetched from; by default
    the official URLs. Data already present (prepared, or benchmark files read in place) is left
    alone unless ``force`` or an explicit ``source`` is given.
    """
    spec = get_spec(name)
    root, _ = resolve_data_root(data_root)
    folder = dataset_dir(spec, root)
    if source is None and not force:
        if has_canonical(folder):
            return load_dataset(name, root), f"already prepared in {folder}"
        if has_benchmark_files(spec, folder):
            return load_dataset(name, root), f"benchmark files found in {folder}; read in place"

    raw_dir = folder / "raw"
    if source and not source.startswith(("http://", "https://")):
        given = Path(source).expanduser()
        missing = [f for f in spec.raw.filenames if not (given / f).exists()]
        if missing:
            raise FileNotFoundError(
                f"{given} lacks the raw file(s) {', '.join(missing)} for {spec.name}; "
                f"expected {', '.join(spec.raw.filenames)} (from {', '.join(spec.raw.urls)})"
            )
        raw_dir = given
    else:
        base = source.rstrip("/") + "/" if source else None
        try:
            raw_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PermissionError(
                f"cannot write to {raw_dir} ({err.strerror}); choose a writable --data-root"
            ) from err
        for url, filename in zip(spec.raw.urls, spec.raw.filenames):
            download(base + filename if base else url, raw_dir / filename, quiet=quiet)

    data = preprocess_raw(spec, raw_dir)
    try:
        data.save(folder)
    except OSError as err:
        raise PermissionError(f"cannot write to {folder} ({err}); choose a writable --data-root") from err
    return data, f"preprocessed raw files from {raw_dir} into {folder}"


def remove_raw(name: str, data_root: str | Path | None = None) -> None:
    """Delete downloaded raw files once the canonical form exists (they can be large)."""
    spec = get_spec(name)
    root, _ = resolve_data_root(data_root)
    shutil.rmtree(dataset_dir(spec, root) / "raw", ignore_errors=True)
