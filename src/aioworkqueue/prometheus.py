"""A Prometheus collector for aioworkqueue (optional: needs ``prometheus_client``).

The collector reads the statistics at scrape time; nothing is counted twice and nothing is
registered for you::

    from prometheus_client import REGISTRY
    from aioworkqueue.prometheus import WorkqueueCollector

    REGISTRY.register(WorkqueueCollector(runtime=rt))

Metrics carry a ``workqueue`` label: counters ``aioworkqueue_{queued,completed,failed,cancelled,
cpu_hogs,max_active_hits,mayday,rescued}_total`` and gauges ``aioworkqueue_{in_flight,pending,
running,armed}``.

With :func:`aioworkqueue.enable_timing` on, also the counters ``aioworkqueue_started_total`` and
``aioworkqueue_cpu_seconds_total`` and the histogram ``aioworkqueue_latency_seconds`` (queue to
start), whose buckets are the timing histogram's own: power-of-two edges from 1 us to 2**26 us
(67 s), so ``histogram_quantile()`` is as exact as the buckets allow and series from several
processes add up. A queue that timing never saw has no sample in these three.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aioworkqueue.prometheus needs prometheus_client: pip install prometheus-client"
    ) from exc

from ._lock import LOCK
from ._observe import _pools_now
from ._runtime import Runtime
from ._timing import EDGES, histogram
from ._workqueue import Workqueue, WorkqueueStats

__all__ = ("WorkqueueCollector",)

_COUNTERS = (
    ("queued", "Successful queue_* calls"),
    ("completed", "Runs that returned normally"),
    ("failed", "Runs that raised"),
    ("cancelled", "Pending instances taken back"),
    ("cpu_hogs", "Runs that held their loop past cpu_intensive_thresh"),
    ("max_active_hits", "Items that waited for a max_active slot"),
    ("mayday", "Rescuers started because every worker was busy"),
    ("rescued", "Items run by a rescuer"),
)
_GAUGES = (
    ("in_flight", "Items queued or running"),
    ("pending", "Items waiting to start"),
    ("running", "Items running"),
    ("armed", "Delayed items whose timer is armed"),
)

_TIMED = (  # from enable_timing(): (WorkqueueStats field, metric name, help)
    ("started", "started", "Runs started while timing was on"),
    ("cpu_time", "cpu_seconds", "CPU seconds of the items' runs while timing was on"),
)
_LE = [repr(edge) for edge in EDGES]  # the bounded buckets' upper edges, as "le" labels


class WorkqueueCollector:
    """Collects the statistics of workqueues at scrape time.

    ``runtime``: report every workqueue bound to it; ``workqueues``: report these too. With
    neither, report the workqueues of the active runtime or of the embedded pools.
    """

    def __init__(
        self, runtime: Runtime | None = None, workqueues: Iterable[Workqueue] = ()
    ) -> None:
        self.runtime = runtime  # I
        self.workqueues = list(workqueues)  # I

    def _queues(self) -> list[Workqueue]:
        found: dict[int, Workqueue] = {id(q): q for q in self.workqueues}
        with LOCK:
            if self.runtime is not None:
                found.update((id(q), q) for q in self.runtime._wqs)
            elif not self.workqueues:
                for pool in _pools_now():
                    found.update((id(p.wq), p.wq) for p in pool.pwqs)
        return sorted(found.values(), key=lambda q: q.name)

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (prometheus_client's collector protocol)."""
        queues = self._queues()
        stats: list[WorkqueueStats] = [q.stats() for q in queues]
        for key, doc in _COUNTERS:
            c = CounterMetricFamily(f"aioworkqueue_{key}", doc, labels=["workqueue"])
            for s in stats:
                c.add_metric([s.name], getattr(s, key))
            yield c
        for key, doc in _GAUGES:
            g = GaugeMetricFamily(f"aioworkqueue_{key}", doc, labels=["workqueue"])
            for s in stats:
                g.add_metric([s.name], getattr(s, key))
            yield g
        for key, name, doc in _TIMED:
            c = CounterMetricFamily(f"aioworkqueue_{name}", doc, labels=["workqueue"])
            for s in stats:
                value = getattr(s, key)
                if value is not None:  # timing never on for this queue: no sample
                    c.add_metric([s.name], value)
            yield c
        h = HistogramMetricFamily(
            "aioworkqueue_latency_seconds",
            "Time from queue_* to the start of the run (a DelayedWork: from its activation), "
            "while timing is on",
            labels=["workqueue"],
        )
        for q in queues:
            found = histogram(q)
            if found is None:
                continue
            counts, total, seconds = found
            buckets, seen = [], 0
            for edge, count in zip(_LE, counts, strict=False):
                seen += count
                buckets.append((edge, seen))
            buckets.append(("+Inf", total))
            h.add_metric([q.name], buckets, seconds)
        yield h
