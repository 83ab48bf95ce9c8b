"""The demo's first start: with no data root it prepares Beauty from the (here: local) source."""

from __future__ import annotations

import pytest

from eager.data.download import DownloadError
from eager.demo.setup import dataset_present, ensure_demo_data
from tests.test_raw_preprocess import _raw_2014


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    """A working directory with no data, no data root and no download source set."""
    work = tmp_path / "clone"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("EAGER_DATA_ROOT", "EAGER_DATA_SOURCE", "EAGER_DEMO_DATASET"):
        monkeypatch.delenv(name, raising=False)
    return work


def _serve_beauty(served, tmp_path) -> dict[str, bytes]:
    reviews, meta = _raw_2014(tmp_path)
    files = {"reviews_Beauty_5.json.gz": reviews.read_bytes(), "meta_Beauty.json.gz": meta.read_bytes()}
    for name, body in files.items():
        (served / name).write_bytes(body)
    return files


def test_first_start_prepares_beauty_then_finds_it(server, fresh_clone, tmp_path):
    served, base, requests = server
    _serve_beauty(served, tmp_path)
    assert not dataset_present("beauty")
    line = ensure_demo_data(source=base, quiet=True)
    assert "preprocessed raw files" in line and dataset_present("beauty")
    assert (fresh_clone / "data" / "Beauty" / "raw" / "reviews_Beauty_5.json.gz.sha256").exists()
    asked = len(requests)
    assert "found under" in ensure_demo_data(source=base, quiet=True)
    assert len(requests) == asked  # nothing fetched the second time


def test_an_interrupted_download_resumes_from_its_part_file(server, fresh_clone, tmp_path, monkeypatch):
    served, base, requests = server
    files = _serve_beauty(served, tmp_path)
    raw = fresh_clone / "data" / "Beauty" / "raw"
    raw.mkdir(parents=True)
    body = files["meta_Beauty.json.gz"]
    (raw / "meta_Beauty.json.gz.part").write_bytes(body[: len(body) // 2])  # what a killed start leaves
    monkeypatch.setenv("EAGER_DATA_SOURCE", base)
    ensure_demo_data(quiet=True)
    assert ("/meta_Beauty.json.gz", f"bytes={len(body) // 2}-") in requests
    assert (raw / "meta_Beauty.json.gz").read_bytes() == body
    assert not (raw / "meta_Beauty.json.gz.part").exists()


def test_a_failed_download_says_what_to_do_and_leaves_no_dataset(server, fresh_clone, tmp_path):
    served, base, _ = server
    reviews, _ = _raw_2014(tmp_path)
    (served / "reviews_Beauty_5.json.gz").write_bytes(reviews.read_bytes())  # the metadata is missing
    with pytest.raises(DownloadError, match="HTTP 404.*start it again to resume"):
        ensure_demo_data(source=base, quiet=True)
    assert not dataset_present("beauty")


def test_a_set_data_root_is_read_never_written(fresh_clone, tmp_path, monkeypatch):
    root = tmp_path / "elsewhere"
    root.mkdir()
    monkeypatch.setenv("EAGER_DATA_ROOT", str(root))
    with pytest.raises(FileNotFoundError, match="EAGER_DATA_ROOT"):
        ensure_demo_data(source="http://127.0.0.1:9/", quiet=True)
    assert list(root.iterdir()) == []


def test_the_shared_benchmark_files_are_found_in_place(shared_data, monkeypatch):
    monkeypatch.setenv("EAGER_DATA_ROOT", str(shared_data))
    assert "found under" in ensure_demo_data("beauty")
