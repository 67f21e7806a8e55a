"""Process-wide settings of the embedded mode (``aioworkqueue.configure``)."""

from __future__ import annotations

__all__ = ("CONFIG", "configure")

_DEFAULT_MAX_WORKERS = 1024


class _Config:
    __slots__ = ("max_workers",)

    def __init__(self) -> None:
        #: A (one int store by configure(); a pool reads it once, when it is made): the most
        #: items one pool runs at once over all its queues (docs/spec.md, "Workers").
        self.max_workers = _DEFAULT_MAX_WORKERS


CONFIG = _Config()


def configure(*, max_workers: int | None = None) -> None:
    """Set embedded-mode settings; pools created afterwards use them.

    Context: any; takes effect for event loops first used after the call.
    Raises: TypeError / ValueError for a ``max_workers`` that is not a positive int.
    """
    if max_workers is not None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"configure: max_workers must be an int, got {max_workers!r}")
        if max_workers < 1:
            raise ValueError(f"configure: max_workers must be >= 1, got {max_workers}")
        CONFIG.max_workers = max_workers
