"""Bounded, seeded multi-thread stress of the per-CPU runtime: 8 threads x 50,000 operations.

Each thread queues (``queue_work[_on]``, ``queue_delayed_work[_on]``), re-arms
(``mod_delayed_work[_on]``) and cancels (``cancel_work``, ``cancel_delayed_work``) 64 shared
``DelayedWork`` items over three workqueues (per-CPU with ``max_active`` 4, ``WQ.UNBOUND``,
ordered) of a ``Runtime(cpus=2)``; the work itself sometimes queues its own item again. Checked
per item, exactly: R4 (runs == successful queues - successful cancels, counting a
``mod_delayed_work`` that returned False as a queue, R9) and R3 (no overlap of an item with
itself). The engine is ``benchmarks/stress.py`` (also a script), loaded here from its path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_STRESS = Path(__file__).resolve().parents[1] / "benchmarks" / "stress.py"


def _load() -> ModuleType:
    name = "aioworkqueue_benchmarks_stress"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, _STRESS)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look the module up while the class is made
        spec.loader.exec_module(mod)
    return mod


def _uvloop() -> object:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return pytest.param("uvloop", marks=pytest.mark.skip(reason="uvloop is not installed"))
    del uvloop
    return "uvloop"


@pytest.mark.stress
@pytest.mark.parametrize(
    ("loop_factory", "seed", "switch_interval"),
    [
        ("asyncio", 1, None),
        (_uvloop(), 2, None),
        # The same on uvloop with the threads switching every 10 us instead of every 5 ms.
        (_uvloop(), 3, 1e-5),
    ],
)
def test_threads_queue_cancel_mod_requeue_exactly_once(
    loop_factory: str, seed: int, switch_interval: float | None
) -> None:
    stress = _load()
    res = stress.run_stress(
        threads=8,
        ops=50_000,
        items=64,
        loop_factory=loop_factory,
        seed=seed,
        cpus=2,
        timeout=60.0,
        switch_interval=switch_interval,
    )
    report = res.line() + "".join(f"\n  {p}" for p in res.problems)
    assert res.ops_total == 400_000
    assert res.stuck == 0, report  # every item went idle in time (no lost wake-up, no hang)
    assert res.errors == 0, report  # nothing raised, in a work function or a producer
    assert res.unfinished == 0, report  # the runtime's shutdown found nothing left over
    assert res.lost == 0, report  # R4
    assert res.duplicated == 0, report  # R4
    assert res.overlaps == 0, report  # R3
    assert res.runs == res.successful_queues - res.successful_cancels, report
    # Every kind of operation succeeded often enough to have been exercised.
    assert res.runs > 1000, report
    assert res.successful_cancels > 100, report
    assert res.mod_rearms > 100, report  # R9: pending, re-armed
    assert res.mod_arms > 100, report  # R9: idle, armed
    assert res.requeues > 100, report  # R2: queued again from its own run
    assert res.pending_at_end > 100, report  # queued by others while running (R2, R3)
