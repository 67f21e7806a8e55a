"""The virtual-time event loop of the suite: ``aioworkqueue.testing``'s, re-exported.

Imported from the private module so that importing this file does not add the ``testing``
submodule to the package namespace (``tests/test_api.py`` checks that namespace).
"""

from __future__ import annotations

from aioworkqueue._testing import VirtualClockLoop, run_virtual

__all__ = ("VirtualClockLoop", "run_virtual")
