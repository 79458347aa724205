"""When to try a provider again: exponential backoff with jitter, capped, limited attempts."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """`attempt` counts provider calls made so far (1 after the first call)."""

    max_attempts: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 300.0
    multiplier: float = 2.0
    # Fraction of each delay that is randomised, so retries from many messages do not move in step.
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay after `attempt` failed calls."""
        return min(self.max_seconds, self.base_seconds * self.multiplier ** max(attempt - 1, 0))

    def delay(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before the next call: in [ceiling * (1 - jitter), ceiling]."""
        ceiling = self.ceiling(attempt)
        return ceiling * (1.0 - self.jitter * rand())
