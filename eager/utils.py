"""Small shared helpers: seeding and artifact locations."""

from __future__ import annotations

import functools
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

ARTIFACTS_ENV = "EAGER_ARTIFACTS"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def artifacts_root(explicit: str | Path | None = None) -> Path:
    """Where trained baselines, embeddings and indices go: flag, $EAGER_ARTIFACTS, or ./artifacts."""
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get(ARTIFACTS_ENV, "artifacts")).expanduser()


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache  # the CPU does not change under a process: read /proc/cpuinfo once
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX); AVX2 only emulates it."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def timestamp() -> str:
    """When a number was measured, as reports and checkpoints record it (local time with its offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def machine_facts() -> dict:
    """Where a number was measured: architecture, CPU, torch threads and the GPU when one is visible."""
    return {"arch": platform.machine(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_line() -> str:
    """:func:`machine_facts` as the one line reports carry."""
    facts = machine_facts()
    # platform.processor() is often just the architecture again (Linux), so name it once.
    cpu = facts["arch"] if facts["cpu"] in (facts["arch"], "") else f"{facts['arch']} {facts['cpu']}"
    return f"{cpu} {facts['threads']} threads" + (f", {facts['gpu']}" if facts["gpu"] else "")
