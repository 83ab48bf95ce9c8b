"""Where a training step's time goes: torch.profiler over a window of steps, written as a table.

The trainer reads ``EAGER_PROFILE_STEPS=FIRST:LAST`` (1-based optimizer steps of each stage, say
``10:14``, past compiling and start-up) and writes ``profile_<stage>.txt`` beside the run's log: the
operators' key averages, sorted by the device's own time on CUDA (the host's on CPU), with the
window's wall time per step, so a short GPU lease hands back the breakdown and not only a rate.
Unset, nothing is recorded and a step pays nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

PROFILE_ENV = "EAGER_PROFILE_STEPS"
TABLE_ROWS = 40


def profile_window(text: str | None) -> tuple[int, int] | None:
    """``FIRST:LAST`` (or one step ``N``) as 1-based inclusive bounds; None when unset or empty."""
    if not text or not text.strip():
        return None
    parts = text.split(":")
    try:
        first, last = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        first = last = None
    if first is None or first < 1 or last < first:
        raise ValueError(f"{PROFILE_ENV}={text!r}: give the optimizer steps to profile as FIRST:LAST (1-based, "
                         "e.g. 10:14, past compiling) or one step N")
    return first, last


class StepProfiler:
    """Profiles the optimizer steps ``window`` of one stage. ``before_step``/``after_step`` bracket
    every step; ``close`` ends a window the stage stopped inside (writing what it recorded)."""

    def __init__(self, window: tuple[int, int] | None, out_file: Path, sync: Callable[[], None],
                 device: torch.device):
        self.window, self.out_file, self.sync, self.device = window, out_file, sync, device
        self.profiler: torch.profiler.profile | None = None
        self.started, self.tokens, self.first, self.last = 0.0, 0, 0, 0

    @classmethod
    def from_env(cls, out_file: Path, sync: Callable[[], None], device: torch.device,
                 enabled: bool = True) -> StepProfiler:
        return cls(profile_window(os.environ.get(PROFILE_ENV)) if enabled else None, out_file, sync, device)

    def before_step(self, step: int) -> None:
        """``step``: the 1-based number of the step about to run."""
        if self.window is None or self.profiler is not None or not self.window[0] <= step <= self.window[1]:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.sync()  # the window starts with an empty queue, so its wall time is its own
        self.profiler = torch.profiler.profile(activities=activities)
        self.profiler.__enter__()
        self.started, self.tokens, self.first, self.last = time.monotonic(), 0, step, step - 1

    def after_step(self, step: int, batch_tokens: int) -> None:
        """``step``: the 1-based number of the step just taken, on ``batch_tokens`` tokens."""
        if self.profiler is None:
            return
        self.tokens, self.last = self.tokens + batch_tokens, step
        if step >= self.window[1]:
            self.close()

    def close(self) -> None:
        if self.profiler is None:
            return
        self.sync()
        seconds = time.monotonic() - self.started
        self.profiler.__exit__(None, None, None)
        steps = max(1, self.last - self.first + 1)  # (none finished: the window's time is one attempt's)
        sort = "self_device_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        table = self.profiler.key_averages().table(sort_by=sort, row_limit=TABLE_ROWS)
        header = (f"steps {self.first}-{self.last} ({steps}) of {self.window[0]}-{self.window[1]} asked, "
                  f"{seconds / steps:.4f} s a step, {self.tokens / max(seconds, 1e-9):,.0f} tokens/s in the window "
                  f"(profiler overhead included); sorted by {sort}\n")
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        self.out_file.write_text(header + table + "\n")
        self.profiler, self.window = None, None  # one window a stage
