"""A per-CPU runtime: one event loop per CPU, each in its own thread, and an unbound queue.

``aioworkqueue.running(runtime={"cpus": 2})`` starts ``Runtime(cpus=2)``: threads ``aiowq/0`` and
``aiowq/1``, each running a loop with its own worker pool. A ``WQ.UNBOUND`` workqueue is served by
whichever pool is idle (its ``max_active`` counts in total); a per-CPU queue takes
``queue_work_on(cpu, ...)``. Leaving the block flushes every queue and joins the threads.

The work here is hashing large buffers, which releases the GIL, so the pools really run at once.
Run it: ``python examples/per_cpu_runtime.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter

import aioworkqueue as aw

CHUNK = bytes(range(256)) * 2048  # 512 KiB: well under the 10 ms CPU-hog threshold
digests: dict[int, str] = {}
pools: Counter[str] = Counter()
lock = threading.Lock()  # work runs on two threads at once


def hash_chunk(i: int) -> None:
    digest = hashlib.sha256(CHUNK + i.to_bytes(4, "big")).hexdigest()[:8]
    with lock:
        digests[i] = digest
        pools[threading.current_thread().name] += 1


def hello(work: aw.Work) -> None:
    with lock:
        pools[f"{threading.current_thread().name} (queue_work_on)"] += 1


async def main() -> None:
    running = aw.running(runtime={"cpus": 2}, timeout=10.0)
    async with running:
        batch = aw.alloc_workqueue("batch", aw.WQ.UNBOUND, 2)  # any idle pool, 2 at a time
        percpu = aw.alloc_workqueue("percpu")  # one link per pool
        for i in range(16):
            batch.submit(hash_chunk, i)
        for cpu in range(2):
            aw.queue_work_on(cpu, percpu, aw.Work(hello))
        await aw.flush_workqueue(batch)
        await aw.flush_workqueue(percpu)
        print(f"runtime: {running.runtime}")
    print(f"hashed {len(digests)} chunks; runs per pool thread:")
    for name, n in sorted(pools.items()):
        print(f"  {name}: {n}")
    print(f"threads left: {sorted(t.name for t in threading.enumerate() if 'aiowq' in t.name)}")


if __name__ == "__main__":
    asyncio.run(main())
