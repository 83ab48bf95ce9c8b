"""Resumable, checksummed downloads with a progress bar (standard library HTTP).

A partial download lives in ``<name>.part`` and is continued with an HTTP Range request. When
the file is complete its sha256 is checked against the expected value if one is known, and is
written to ``<name>.sha256`` so a later run can verify the file without the network.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str | None) -> str:
    actual = sha256_of(path)
    if expected and actual != expected:
        raise DownloadError(
            f"checksum mismatch for {path.name}: expected sha256 {expected}, got {actual}. "
            f"The file was kept as {path} for inspection; delete it and run the command again."
        )
    return actual


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0, quiet: bool = False) -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is already there; resume partial files."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sidecar = dest.with_name(dest.name + ".sha256")
    if dest.exists():
        recorded = sidecar.read_text().split()[0] if sidecar.exists() else None
        _verify(dest, sha256 or recorded)
        if not sidecar.exists():
            sidecar.write_text(f"{sha256_of(dest)}  {dest.name}\n")
        return dest

    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "eager-data/0.1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the .part already holds the whole file
            response = None
        else:
            raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(
            f"could not reach {url} ({getattr(err, 'reason', err)}). Check the network, or download "
            f"the file by hand into {dest.parent} and pass --source {dest.parent}."
        ) from err

    if response is not None:
        with response:
            resumed = offset and response.status == 206
            if offset and not resumed:
                offset = 0  # the server ignored Range: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length else None
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, disable=quiet
            ) as bar:
                while block := response.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
            if total is not None and part.stat().st_size != total:
                raise DownloadError(
                    f"{url} ended early ({part.stat().st_size} of {total} bytes); run the command "
                    "again to resume from where it stopped."
                )
    digest = _verify(part, sha256)
    shutil.move(part, dest)
    sidecar.write_text(f"{digest}  {dest.name}\n")
    return dest
