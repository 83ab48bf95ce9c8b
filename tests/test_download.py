"""The downloader and `eager data prepare --source URL` against a local HTTP server on 127.0.0.1."""

import hashlib
import json

import pytest

from eager.cli import main
from eager.data.download import DownloadError, download
from tests.test_raw_preprocess import _raw_2014


def test_download_verifies_and_records_checksum(server, tmp_path):
    served, base, _ = server
    payload = bytes(range(256)) * 5000
    (served / "f.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    out = download(base + "f.bin", tmp_path / "dl" / "f.bin", sha256=digest, quiet=True)
    assert out.read_bytes() == payload
    assert (tmp_path / "dl" / "f.bin.sha256").read_text().split()[0] == digest
    assert not (tmp_path / "dl" / "f.bin.part").exists()


def test_download_resumes_a_partial_file(server, tmp_path):
    served, base, requests = server
    payload = b"0123456789" * 100_000
    (served / "f.bin").write_bytes(payload)
    dest = tmp_path / "dl" / "f.bin"
    dest.parent.mkdir()
    (dest.parent / "f.bin.part").write_bytes(payload[:123_456])
    download(base + "f.bin", dest, quiet=True)
    assert dest.read_bytes() == payload
    assert requests[-1] == ("/f.bin", "bytes=123456-")


def test_download_rejects_a_wrong_checksum(server, tmp_path):
    served, base, _ = server
    (served / "f.bin").write_bytes(b"hello")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(base + "f.bin", tmp_path / "f.bin", sha256="0" * 64, quiet=True)
    assert not (tmp_path / "f.bin").exists()


def test_a_corrupted_local_copy_is_detected(server, tmp_path):
    served, base, requests = server
    (served / "f.bin").write_bytes(b"hello world")
    dest = download(base + "f.bin", tmp_path / "f.bin", quiet=True)
    download(base + "f.bin", dest, quiet=True)  # verified from the sidecar, no new request
    assert len(requests) == 1
    dest.write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(base + "f.bin", dest, quiet=True)


def test_unreachable_or_missing_url_says_what_to_do(server, tmp_path):
    _, base, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(base + "nope.bin", tmp_path / "nope.bin", quiet=True)
    with pytest.raises(DownloadError, match="could not reach"):
        download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", quiet=True, timeout=2)


def test_prepare_from_a_url_then_stats(server, tmp_path, capsys):
    served, base, _ = server
    reviews, meta = _raw_2014(tmp_path)
    (served / "reviews_Beauty_5.json.gz").write_bytes(reviews.read_bytes())
    (served / "meta_Beauty.json.gz").write_bytes(meta.read_bytes())
    root = tmp_path / "root"
    assert main(["data", "prepare", "--dataset", "beauty", "--source", base, "--data-root", str(root), "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert prepared["users"] == 6 and prepared["items"] == 6
    assert (root / "Beauty" / "raw" / "meta_Beauty.json.gz.sha256").exists()
    assert main(["data", "stats", "--dataset", "beauty", "--data-root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"users": 6, "items": 6, "interactions": 36}


def test_prepare_from_a_folder_and_missing_files(tmp_path, capsys):
    reviews, meta = _raw_2014(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "reviews_Toys_and_Games_5.json.gz").write_bytes(reviews.read_bytes())
    assert main(["data", "prepare", "--dataset", "toys", "--source", str(raw), "--data-root", str(tmp_path / "r")]) == 2
    assert "meta_Toys_and_Games.json.gz" in capsys.readouterr().err
    (raw / "meta_Toys_and_Games.json.gz").write_bytes(meta.read_bytes())
    assert main(["data", "prepare", "--dataset", "toys", "--source", str(raw), "--data-root", str(tmp_path / "r")]) == 0


def test_missing_data_names_where_it_looked_and_the_command(tmp_path, capsys):
    assert main(["data", "stats", "--dataset", "sports", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "Sports") in err and "eager data prepare --dataset sports" in err
    assert main(["data", "stats", "--dataset", "nosuch", "--data-root", str(tmp_path)]) == 2
    assert "choose one of" in capsys.readouterr().err
