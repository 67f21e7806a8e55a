"""Helpers for testing code that uses aioworkqueue.

* :class:`VirtualClockLoop` and :func:`run_virtual`: a loop with a virtual clock that jumps to the
  next timer instead of sleeping, so delayed work fires at once and in deadline order.
* :class:`ManualClock`: read and advance the running virtual loop's clock.
* :func:`idle`: ``await idle()`` returns when nothing is queued, running or armed on any pool.
* :class:`ErrorGuard`: collects the ERROR reports of the ``aioworkqueue`` logger (an exception
  in a work item that no handler took), to fail a test on them.

The pytest plugin (installed with the package, fixtures ``aiowq_*``) wraps these; see
``docs/guide/integrations.md``.
"""

from __future__ import annotations

from ._testing import ErrorGuard, ManualClock, VirtualClockLoop, idle, run_virtual

__all__ = ("ErrorGuard", "ManualClock", "VirtualClockLoop", "idle", "run_virtual")
