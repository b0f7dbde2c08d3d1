"""Reconnecting with a capped exponential backoff: the one formula and the one retry count.

A live source's supervisor (`sources.live`) and a restarted cluster camera worker both count failed
attempts with `Backoff`: ``backoff_initial_s * 2 ** (failures - 1)``, capped at ``backoff_max_s``, for
ever or until ``max_retries`` failures in a row.
"""

from __future__ import annotations

import threading

from edumood_live.config import SourceConfig


def backoff_s(config: SourceConfig, failures: int) -> float:
    """Seconds to wait before the attempt after `failures` failures in a row (>= 1)."""
    return min(config.backoff_initial_s * 2.0 ** min(max(failures, 1) - 1, 60), config.backoff_max_s)


class Backoff:
    """Failures in a row of one connection, and how long to wait before the next attempt."""

    def __init__(self, config: SourceConfig, stop: threading.Event) -> None:
        self.config = config
        self.failures = 0
        self._stop = stop

    def fail(self, afresh: bool = False) -> float | None:
        """Count a failure (``afresh``: the first of a new series, after a connection that held); the delay
        before the next attempt, or None when ``max_retries`` is used up."""
        self.failures = 1 if afresh else self.failures + 1
        retries = self.config.max_retries
        if retries is not None and self.failures > retries:
            return None
        return backoff_s(self.config, self.failures)

    def wait(self, delay_s: float) -> bool:
        """Sleep `delay_s` unless stopped first; True when stopped."""
        return self._stop.wait(delay_s)
