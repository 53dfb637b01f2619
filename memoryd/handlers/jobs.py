"""How a job handler tells the runner what became of a job."""

from __future__ import annotations


class RetryLater(Exception):
    """Try again after ``delay`` seconds (e.g. an outside service said 429 Retry-After)."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


class PermanentFailure(Exception):
    """Retrying cannot help (bad input, a 4xx that will not change): mark the job failed."""
