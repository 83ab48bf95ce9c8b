"""The stage's step count and learning-rate schedule, fitted to a clock when a stage has one."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class StepBudget:
    """The stage's step count: the epochs' steps, capped by ``max_steps``, then fitted to ``max_minutes``.

    The learning-rate schedule reads ``total`` on every step, so fitting it to the measured step
    time reshapes the cosine to end when the time does. The step time is re-measured over windows
    of doubling length (the first steps are slow: kernel selection, loader workers starting), and
    the count is never raised above the epochs' plan. Under data parallelism the count is rank 0's
    (``agree``), so every process stops at the same step. A resumed run gets a fresh budget.
    """

    CALIBRATE_AFTER = 3  # steps not timed (CUDA start-up, allocator warm-up)
    FIRST_FIT = 10  # timed steps before the first fit; the next windows are 20, 40, 80, ... steps

    def __init__(self, total: int, warmup_ratio: float, max_minutes: float | None,
                 agree: Callable[[int], int] = lambda n: n, single_process: bool = True):
        self.plan = self.total = total
        self.warmup_ratio, self.agree = warmup_ratio, agree
        self.seconds = None if max_minutes is None else 60.0 * max_minutes
        self.single_process = single_process
        self.fits = 0
        self._mark: tuple[int, float] | None = None
        self._next_fit = self.FIRST_FIT

    def lr_factor(self, step: int) -> float:
        warmup = int(self.warmup_ratio * self.total)
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, self.total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    def observe(self, step: int, run_steps: int, run_started: float, sync: Callable[[], None]) -> None:
        """After every optimizer step: ``step`` of the stage; ``run_steps`` taken since ``run_started``."""
        if self.seconds is None:
            return
        if self.single_process and time.monotonic() - run_started >= self.seconds:  # a hard stop
            self.total = min(self.total, step)
            return
        if run_steps < self.CALIBRATE_AFTER:
            return
        # The device queue is drained at each mark (a handful per stage) so the clock means something.
        if self._mark is None:
            sync()
            self._mark = (run_steps, time.monotonic())
        elif run_steps - self._mark[0] >= self._next_fit:
            sync()
            now = time.monotonic()
            per_step = (now - self._mark[1]) / (run_steps - self._mark[0])
            left = self.seconds - (now - run_started)
            self.total = self.agree(max(step, min(self.plan, step + int(left / per_step))))
            self.fits += 1
            self._mark, self._next_fit = (run_steps, now), self._next_fit * 2
