"""``eager bench``: request latency and evaluation throughput, engine against HF ``generate``.

Both paths run in the same process on the same model and the same histories, so the speedup is a
like-for-like number. Peak RSS is read from ``/proc/self/status`` (VmHWM), reset before each path
where the kernel allows it (``/proc/self/clear_refs``), so each path's peak is its own.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm.auto import tqdm

from eager.data.dataset import InteractionData
from eager.data.split import eval_cases
from eager.decoding.engine import BeamSearchEngine
from eager.decoding.hf_generate import recommend_batch
from eager.decoding.loaded import LoadedModel
from eager.utils import machine_facts


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    found = _status_mb("VmHWM")
    if found is None:
        import resource

        found = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return found


def machine() -> dict:
    facts = machine_facts()
    return {"cpu": facts["cpu"], "threads": facts["threads"], "gpu": facts["gpu"],
            "torch": torch.__version__, "date": datetime.now(UTC).strftime("%Y-%m-%d")}


def benchmark_histories(loaded: LoadedModel, data: InteractionData | None, count: int, length: int = 20,
                        seed: int = 0) -> tuple[list[list[str]], str]:
    """``count`` histories of ``length`` items: real test users when the data is there, else random items."""
    rng = random.Random(seed)
    if data is not None:
        cases = [c for c in eval_cases(data, "test", length) if len(c.history) >= length]
        if len(cases) >= count:
            chosen = rng.sample(cases, count)
            return [[data.item_keys[i] for i in c.history[-length:]] for c in chosen], "test users"
    return [rng.sample(loaded.index.keys, min(length, len(loaded.index.keys))) for _ in range(count)], "random items"


def _percentiles(seconds: Sequence[float]) -> dict:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_s": round(statistics.median(ordered), 4), "p95_s": round(p95, 4), "mean_s": round(statistics.fmean(ordered), 4)}


def _timed(run: Callable[[list[str]], list[str]], histories, label: str, progress: bool) -> tuple[dict, list[list[str]]]:
    run(histories[0])  # warm-up: first-call allocations and kernels are not what a request pays
    reset_peak_rss()
    seconds, outputs = [], []
    for history in tqdm(histories, desc=label, disable=not progress):
        started = time.perf_counter()
        outputs.append(run(history))
        seconds.append(time.perf_counter() - started)
    return {**_percentiles(seconds), "requests": len(seconds), "peak_rss_mb": peak_rss_mb()}, outputs


def latency(loaded: LoadedModel, histories: list[list[str]], k: int = 10, beams: int = 20,
            baseline: bool = True, progress: bool = True) -> dict:
    """Per-request latency (one user at a time) of the engine and, optionally, HF generate."""
    engine = BeamSearchEngine.from_loaded(loaded)
    report: dict = {"k": k, "beams": beams, "history_items": len(histories[0])}
    # Prefill dominates a request's cost, so the prompt length says what the latency is for.
    report["prompt_tokens_mean"] = round(statistics.fmean(engine.prompt_lengths(histories)), 1)
    report["engine"], ours = _timed(lambda h: [r.key for r in engine.search([h], k, beams).recommendations[0]],
                                    histories, "engine", progress)
    if baseline:
        report["hf_generate"], theirs = _timed(
            lambda h: [r.key for r in recommend_batch(loaded.model, loaded.tokenizer, loaded.index, loaded.trie, [h], k, beams,
                                                   loaded.prompt_style)[0]],
            histories, "hf generate", progress)
        report["speedup_p50"] = round(report["hf_generate"]["p50_s"] / report["engine"]["p50_s"], 2)
        # Same model, same beams: the top-1 must agree (lower ranks may swap on floating-point near-ties).
        report["top1_agreement"] = round(sum(a[:1] == b[:1] for a, b in zip(ours, theirs)) / len(ours), 3)
    return report


def throughput(loaded: LoadedModel, histories: list[list[str]], batch: int, k: int = 10, beams: int = 20,
               baseline: bool = True, progress: bool = True) -> dict:
    """Users per second when histories are searched ``batch`` at a time (the evaluation setting)."""
    engine = BeamSearchEngine.from_loaded(loaded)
    paths = {"engine": lambda chunk: engine.search(chunk, k, beams).recommendations}
    if baseline:
        paths["hf_generate"] = lambda chunk: recommend_batch(loaded.model, loaded.tokenizer, loaded.index, loaded.trie, chunk, k, beams,
                                                             loaded.prompt_style)
    report: dict = {"k": k, "beams": beams, "batch": batch, "users": len(histories)}
    for name, run in paths.items():
        run(histories[:batch])
        started = time.perf_counter()
        for start in tqdm(range(0, len(histories), batch), desc=name, disable=not progress):
            run(histories[start : start + batch])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        report[name] = {"seconds": round(seconds, 2), "users_per_s": round(len(histories) / seconds, 2)}
    if baseline:
        report["speedup"] = round(report["engine"]["users_per_s"] / report["hf_generate"]["users_per_s"], 2)
    return report
