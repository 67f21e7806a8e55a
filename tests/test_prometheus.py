"""The optional Prometheus collector reads the statistics at scrape time."""

from __future__ import annotations

import pytest

import aioworkqueue as aw

prometheus_client = pytest.importorskip("prometheus_client")


@pytest.mark.asyncio
async def test_collector_reports_counters_and_gauges_per_workqueue() -> None:
    from aioworkqueue.prometheus import WorkqueueCollector

    def boom(w: aw.Work) -> None:
        raise RuntimeError("boom")

    registry = prometheus_client.CollectorRegistry()  # never the global one
    async with aw.alloc_workqueue("scraped", exception_handler=lambda *a: None) as wq:
        registry.register(WorkqueueCollector(workqueues=[wq]))
        for _ in range(3):
            aw.queue_work(wq, aw.Work(lambda w: None))
        aw.queue_work(wq, aw.Work(boom))
        aw.queue_delayed_work(wq, aw.DelayedWork(lambda w: None), 100)
        await wq.flush()
        text = prometheus_client.generate_latest(registry).decode()
        assert 'aioworkqueue_queued_total{workqueue="scraped"} 5.0' in text
        assert 'aioworkqueue_completed_total{workqueue="scraped"} 3.0' in text
        assert 'aioworkqueue_failed_total{workqueue="scraped"} 1.0' in text
        assert 'aioworkqueue_armed{workqueue="scraped"} 1.0' in text
        assert 'aioworkqueue_in_flight{workqueue="scraped"} 0.0' in text
    assert "aioworkqueue" not in prometheus_client.generate_latest().decode()  # nothing global
