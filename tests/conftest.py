from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from eager.data.dataset import InteractionData, items_frame

REPO = Path(__file__).resolve().parents[1]
# The README's test command sets EAGER_DATA_ROOT; without it, the shared folder beside the clone.
SHARED_DATA = Path(os.environ.get("EAGER_DATA_ROOT") or REPO.parent / "shared" / "data").resolve()


def shared_data_or_skip() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    return shared_data_or_skip()


def make_cyclic_data(num_items: int = 50, num_users: int = 60, length: int = 8, seed: int = 0) -> InteractionData:
    """A catalogue where item i is always followed by item i+1 (mod n): easy to learn, hard to guess."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(num_users):
        start = int(rng.integers(num_items))
        sequences.append((start + np.arange(length)) % num_items)
    keys = [f"I{i:03d}" for i in range(num_items)]
    items = items_frame(keys, title=[f"item number {i}" for i in range(num_items)])
    return InteractionData("cyclic", items, [f"U{u:03d}" for u in range(num_users)], sequences, ("title",), "synthetic")


@pytest.fixture
def cyclic_data() -> InteractionData:
    return make_cyclic_data()


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    """A saved tiny random Llama (2 layers, hidden 32) with SmolLM2's real tokenizer."""
    from tests.tiny import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(autouse=True)
def _serving_cache_in_tmp(tmp_path_factory, monkeypatch):
    # The serving loader caches merged models; tests must never write into the working tree.
    monkeypatch.setenv("EAGER_SERVE_CACHE", str(tmp_path_factory.getbasetemp() / "serve_cache"))


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from ``directory`` and honours ``Range: bytes=N-`` (stdlib's handler does not)."""

    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        type(self).requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (_RangeHandler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/", handler.requests
    httpd.shutdown()
