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


@pytest.mark.asyncio
async def test_collector_exports_timing_as_counters_and_a_histogram(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aioworkqueue import _timing
    from aioworkqueue.prometheus import WorkqueueCollector

    wall, cpu = [0.0], [0.0]
    monkeypatch.setattr(_timing, "clock", lambda: wall[0])
    monkeypatch.setattr(_timing, "cpu_clock", lambda: cpu[0])

    def burn(w: aw.Work) -> None:
        cpu[0] += 0.25

    registry = prometheus_client.CollectorRegistry()
    async with aw.alloc_workqueue("untimed") as plain, aw.alloc_workqueue("timed") as wq:
        registry.register(WorkqueueCollector(workqueues=[plain, wq]))
        aw.queue_work(plain, aw.Work(burn))
        await plain.flush()
        aw.enable_timing()
        try:
            aw.queue_work(wq, aw.Work(burn))  # queued at 0: waits 3 ms
            wall[0] = 0.0027
            aw.queue_work(wq, aw.Work(burn))  # waits 300 us
            aw.queue_work(wq, aw.Work(burn))
            wall[0] = 0.003
            await wq.flush()
        finally:
            aw.disable_timing()
        text = prometheus_client.generate_latest(registry).decode()
    assert 'aioworkqueue_started_total{workqueue="timed"} 3.0' in text
    assert 'aioworkqueue_cpu_seconds_total{workqueue="timed"} 0.75' in text
    assert 'workqueue="untimed"' in text and 'started_total{workqueue="untimed"}' not in text
    buckets = {
        line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aioworkqueue_latency_seconds_bucket") and 'workqueue="timed"' in line
    }
    assert len(buckets) == 28  # 27 edges, 1 us .. 2**26 us, and +Inf
    assert buckets["0.000256"] == 0.0 and buckets["0.000512"] == 2.0  # 300 us, twice
    assert buckets["0.002048"] == 2.0 and buckets["0.004096"] == 3.0  # 3 ms
    assert buckets["+Inf"] == 3.0
    assert 'aioworkqueue_latency_seconds_count{workqueue="timed"} 3.0' in text
    (total,) = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('aioworkqueue_latency_seconds_sum{workqueue="timed"}')
    ]
    assert total == pytest.approx(0.0036)
    assert 'latency_seconds_count{workqueue="untimed"}' not in text
