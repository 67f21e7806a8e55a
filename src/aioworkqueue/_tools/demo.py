"""``aioworkqueue demo``: a small UDP service on the embedded default mode.

What it shows, with the kernel's vocabulary (``docs/spec.md``, vocabulary):

* **Interrupt context, top half.** The ``loop.add_reader`` callback of the UDP socket is the
  device's interrupt handler: the loop calls it synchronously from its select step, so it must not
  await and must not take long, because nothing else on the loop runs while it does. It does the
  minimum a top half does (drain the device, note the payload) and defers the real work to process
  context with ``queue_work``, which is synchronous and O(1) for exactly this reason.
* **De-duplication (R1).** Datagrams carry a key, and each key owns one work item. While that item
  is pending, ``queue_work`` returns False and changes nothing: the burst of datagrams coalesces
  into one run, which handles the newest payload. Every datagram is either queued or de-duplicated.
* **Process context, bottom half.** The work function is ``async def`` and may sleep. It fails for
  some payloads (decided up front from the seed), and retries them through the same item as a
  ``DelayedWork`` with a growing delay (R8), up to a bound. A newer datagram for the key supersedes
  an armed retry: the reader cancels it (R10) and queues the item again at once.
* **Ordered queue (R6).** Every outcome is written to an in-memory log by an ordered workqueue;
  at the end the log must hold the lines exactly in the order they were queued.
* **Exactly once (R4).** Every successful ``queue_*`` either ran once or was cancelled by a cancel
  that returned True, so ``lost = queued + retried - ran - cancelled`` must be 0.

Everything runs on the loop of ``asyncio.run``: no runtime is configured, so no thread is started.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import sys
import time

import aioworkqueue as aw

__all__ = ("run_demo",)

_KEYS = 32  # small on purpose: a burst hits the same key several times, so dedup happens
_BURST = 50  # datagrams sent between two yields to the loop
_WINDOW = 4 * _BURST  # most datagrams in flight: keeps the socket buffer far from overflowing
_RCVBUF = 1 << 20
_MAX_ATTEMPTS = 3
_RETRY_BASE = 0.01  # seconds; attempt n waits _RETRY_BASE * 2 ** (n - 1)
_MAX_ACTIVE = 16
_SHUTDOWN_LIMIT = 5.0  # seconds; a shutdown that takes longer is a bug worth reporting, not waiting
_WIRE = struct.Struct("!IH")  # sequence number, key


class Job(aw.DelayedWork):
    """The work item of one key; it carries the newest payload seen for that key."""

    __slots__ = ("attempts", "key", "retry_armed", "seq")

    def __init__(self, service: _Service, key: int) -> None:
        super().__init__(service.process)
        self.key = key
        self.seq = -1
        self.attempts = 0  # attempts made for ``seq``
        self.retry_armed = False  # a retry of ``seq`` is pending (armed, or fired and queued)


class LogLine(aw.Work):
    """One line for the ordered log; ``index`` is its place in queueing order."""

    __slots__ = ("index", "text")

    def __init__(self, service: _Service, index: int, text: str) -> None:
        super().__init__(service.write_log)
        self.index = index
        self.text = text


def _failures(rng: random.Random) -> int:
    """How many attempts of one payload fail; _MAX_ATTEMPTS means it never succeeds."""
    r = rng.random()
    if r < 0.70:
        return 0
    if r < 0.85:
        return 1
    if r < 0.93:
        return 2
    return _MAX_ATTEMPTS


class _Service:
    """The demo's state and counters; all of it is touched only from the loop's thread."""

    def __init__(self, datagrams: int, seed: int) -> None:
        rng = random.Random(seed)
        # Decided up front so that whether a payload fails does not depend on scheduling.
        self.plan = [_failures(rng) for _ in range(datagrams)]
        self.keys = [rng.randrange(_KEYS) for _ in range(datagrams)]
        self.expected = datagrams
        self.rx = aw.alloc_workqueue(
            "demo-rx", 0, max_active=_MAX_ACTIVE, exception_handler=self._on_error
        )
        self.logq = aw.alloc_ordered_workqueue("demo-log", exception_handler=self._on_error)
        self.jobs = [Job(self, k) for k in range(_KEYS)]
        self.all_in = asyncio.Event()
        self.room = asyncio.Event()  # set by the reader: the generator may send again
        self.log: list[tuple[int, str]] = []
        self.problems: list[str] = []
        self.sent = self.received = self.stray = self.irqs = 0
        self.queued = self.deduplicated = self.cancelled = 0
        self.ran = self.succeeded = self.retried = self.failed = self.superseded = 0
        self.errors = 0
        self.running = self.peak_running = 0
        self.log_queued = self.log_running = self.log_peak = 0

    # -- interrupt context: the socket's reader callback ---------------------------------------

    def on_readable(self, sock: socket.socket, sender: object) -> None:
        self.irqs += 1
        while True:
            try:
                data, addr = sock.recvfrom(64)
            except (BlockingIOError, InterruptedError):
                break
            if addr != sender or len(data) != _WIRE.size:
                # The port is open to anyone on this host; a foreign datagram is not ours to count.
                self.stray += 1
                continue
            seq, key = _WIRE.unpack(data)
            if seq >= self.expected or key >= _KEYS:
                self.stray += 1
                continue
            self.received += 1
            self.deliver(seq, self.jobs[key])
        self.room.set()
        if self.received >= self.expected:
            self.all_in.set()

    def deliver(self, seq: int, job: Job) -> None:
        if job.retry_armed:
            # The newer payload supersedes the one waiting to be retried; only a cancel that
            # returned True took a pending instance back, so only that one is counted.
            if aw.cancel_delayed_work(job):
                self.cancelled += 1
                self.log_line(f"seq={job.seq} key={job.key} retry cancelled by seq={seq}")
            job.retry_armed = False
        # Overwritten even when the item is already pending: the run that is coming then handles
        # the newest payload (coalescing), which is the point of de-duplicating by key.
        job.seq = seq
        job.attempts = 0
        if aw.queue_work(self.rx, job):
            self.queued += 1
        else:
            self.deduplicated += 1

    # -- process context: the work functions ---------------------------------------------------

    async def process(self, job: Job) -> None:
        seq = job.seq
        job.retry_armed = False
        attempt = job.attempts + 1
        self.ran += 1
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            # Stands for real I/O; it also lets the reader run in the middle of this item.
            await asyncio.sleep(0)
        finally:
            self.running -= 1
        if job.seq != seq:
            # A newer datagram arrived while this ran and queued the item again (R2): that run
            # takes over, so this payload is neither retried nor reported as done.
            self.superseded += 1
            self.log_line(f"seq={seq} key={job.key} attempt={attempt} superseded by seq={job.seq}")
            return
        job.attempts = attempt
        if attempt > self.plan[seq]:
            self.succeeded += 1
            self.log_line(f"seq={seq} key={job.key} attempt={attempt} ok")
        elif attempt >= _MAX_ATTEMPTS:
            self.failed += 1
            self.log_line(f"seq={seq} key={job.key} attempt={attempt} failed, giving up")
        elif aw.queue_delayed_work(self.rx, job, _RETRY_BASE * 2 ** (attempt - 1)):
            job.retry_armed = True
            self.retried += 1
            self.log_line(f"seq={seq} key={job.key} attempt={attempt} failed, retry armed")
        else:
            # Nothing but a newer datagram can make the item pending here, and that case
            # returned above; counted rather than assumed, so the accounting stays exact.
            self.superseded += 1
            self.log_line(f"seq={seq} key={job.key} attempt={attempt} retry already pending")

    def log_line(self, text: str) -> None:
        line = LogLine(self, self.log_queued, text)
        if aw.queue_work(self.logq, line):
            self.log_queued += 1

    async def write_log(self, line: LogLine) -> None:
        self.log_running += 1
        self.log_peak = max(self.log_peak, self.log_running)
        try:
            # A different number of yields per line: were two lines ever run at once, a later
            # one could overtake an earlier one, and the order check would see it.
            for _ in range(line.index % 3):
                await asyncio.sleep(0)
            self.log.append((line.index, line.text))
        finally:
            self.log_running -= 1

    def _on_error(self, wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        # The work functions never raise on purpose; if one does, the demo reports it as a
        # problem rather than letting the default handler log it and carry on.
        self.errors += 1
        self.problems.append(f"{work!r} on {wq.name} raised {exc!r}")

    # -- the load: a second socket --------------------------------------------------------------

    async def generate(self, tx: socket.socket, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for start in range(0, self.expected, _BURST):
            while self.sent - self.received > _WINDOW:
                self.room.clear()
                await self.room.wait()
            for seq in range(start, min(start + _BURST, self.expected)):
                await loop.sock_sendto(tx, _WIRE.pack(seq, self.keys[seq]), addr)
                self.sent += 1
            # One yield per burst, so the reader fires once per burst with many datagrams
            # waiting, and keys repeat within one call.
            await asyncio.sleep(0)

    # -- shutdown ---------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        # Retries armed when the load stops are fired at once instead of waited out; a retry that
        # fails again re-arms, so loop until no item is pending or running (attempts are bounded).
        while busy := [job for job in self.jobs if aw.work_busy(job)]:
            for job in busy:
                await aw.flush_delayed_work(job)
        await aw.flush_workqueue(self.rx)
        await aw.destroy_workqueue(self.rx)
        # Only now: the rx work items were the ones queueing log lines.
        await aw.flush_workqueue(self.logq)
        await aw.destroy_workqueue(self.logq)

    def check(self) -> None:
        if self.received != self.queued + self.deduplicated:
            self.problems.append("a received datagram was neither queued nor de-duplicated")
        outcomes = self.succeeded + self.retried + self.failed + self.superseded + self.errors
        if outcomes != self.ran:
            self.problems.append(f"ran={self.ran} but {outcomes} runs had an outcome")
        if self.peak_running > _MAX_ACTIVE:
            self.problems.append(f"{self.peak_running} rx items ran at once (max_active 16, R7)")
        if self.log_peak > 1:
            self.problems.append(f"{self.log_peak} log lines were written at once (R6)")
        stats = self.rx.stats()
        mine = (self.queued + self.retried, self.ran - self.errors, self.errors, self.cancelled)
        theirs = (stats.queued, stats.completed, stats.failed, stats.cancelled)
        if mine != theirs:
            self.problems.append(
                f"demo-rx statistics (queued, completed, failed, cancelled) = {theirs}, "
                f"the demo counted {mine}"
            )

    @property
    def lost(self) -> int:
        return self.queued + self.retried - (self.ran + self.cancelled)

    @property
    def log_in_order(self) -> bool:
        return self.log_peak <= 1 and [i for i, _ in self.log] == list(range(self.log_queued))


async def _serve(service: _Service, seconds: float, seed: int) -> str:
    """Run the service until the load is in, ``seconds`` pass, or it is cancelled (Ctrl-C).

    Returns: why it stopped: ``complete``, ``timeout`` or ``interrupt``.
    """
    loop = asyncio.get_running_loop()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx.bind(("127.0.0.1", 0))
        tx.setblocking(False)
        addr: tuple[str, int] = rx.getsockname()
        print(
            f"aioworkqueue demo: UDP service on {addr[0]}:{addr[1]}, embedded mode, "
            f"{service.expected} datagrams over {_KEYS} keys, seed {seed}, up to {seconds:g} s",
            flush=True,
        )
        loop.add_reader(rx.fileno(), service.on_readable, rx, tx.getsockname())
        stop = "complete"
        generator = asyncio.create_task(service.generate(tx, addr))
        try:
            if service.expected == 0:
                service.all_in.set()
            try:
                await asyncio.wait_for(service.all_in.wait(), timeout=seconds)
            except TimeoutError:
                stop = "timeout"
        except asyncio.CancelledError:
            stop = "interrupt"
            task = asyncio.current_task()
            if task is not None:
                # Taken as a request to stop serving: the shutdown below still has to await.
                task.uncancel()
        finally:
            loop.remove_reader(rx.fileno())
            generator.cancel()
            try:
                await generator
            except asyncio.CancelledError:
                pass
        try:
            async with asyncio.timeout(_SHUTDOWN_LIMIT):
                await service.shutdown()
        except TimeoutError:
            service.problems.append(f"shutdown did not finish within {_SHUTDOWN_LIMIT:g} s")
        return stop


# What each number of the summary means, printed under it: without it a reader sees ran > queued
# and lost=0 and cannot tell why. One entry per field, in the summary's order (a test checks it).
_LEGEND = (
    ("sent", "datagrams the load generator sent"),
    ("received", "datagrams the reader callback (the top half) took off the socket"),
    ("queued", "datagrams whose queue_work returned True (the key's item was not pending)"),
    ("deduplicated", "datagrams whose key's item was already pending: coalesced (R1)"),
    ("ran", "runs of the work function; a retry runs the same item again, so ran can exceed"),
    ("", "queued: ran = queued + retried - cancelled"),
    ("retried", "failed attempts re-queued as a delayed retry of the same item (R8)"),
    ("failed", "payloads given up after 3 failed attempts"),
    ("cancelled", "armed retries that a newer datagram took back (cancel returned True, R10)"),
    ("lost", "queued + retried - ran - cancelled: 0 means every True queue_* ran once or was"),
    ("", "cancelled, none vanished and none ran twice (R4)"),
    ("log_in_order", "the ordered queue wrote the log lines in the order they were queued (R6)"),
    ("succeeded", "payloads whose last run succeeded"),
    (
        "superseded",
        "runs whose payload a newer datagram replaced meanwhile; that one runs next (R2)",
    ),
    ("irqs", "calls of the reader callback; each drained every datagram waiting"),
    ("peak_active", "most rx items running at once (max_active is 16, R7)"),
    ("log_lines", "lines the ordered log holds at the end"),
    ("stop", "why serving stopped: complete (all received), timeout or interrupt (Ctrl-C)"),
    ("elapsed", "wall time of the whole run, shutdown included"),
)


def _print_legend() -> None:
    width = max(len(name) for name, _ in _LEGEND)
    print("where:")
    for name, meaning in _LEGEND:
        print(f"  {name:<{width}}  {meaning}")


def run_demo(seconds: float, datagrams: int, seed: int) -> int:
    """Run the UDP demo service and print a one-line summary of what happened, with a legend.

    It serves until all ``datagrams`` sent have been received, ``seconds`` have passed, or
    Ctrl-C, then shuts down cleanly (flush and destroy every queue it created).

    Returns: 0 if no work item was lost and the ordered log kept queueing order (and every other
    consistency check held), else 1; 130 when interrupted a second time during shutdown.
    """
    if datagrams < 0 or datagrams >= 1 << 32:
        raise ValueError(f"run_demo: datagrams must be in 0..2**32-1, got {datagrams}")
    started = time.perf_counter()
    service: _Service | None = None

    async def main() -> str:
        nonlocal service
        service = _Service(datagrams, seed)
        return await _serve(service, seconds, seed)

    try:
        stop = asyncio.run(main())
    except KeyboardInterrupt:
        print("aioworkqueue demo: interrupted again during shutdown; no summary", file=sys.stderr)
        return 130
    assert service is not None
    elapsed = time.perf_counter() - started
    s = service
    s.check()
    ok = s.lost == 0 and s.log_in_order and not s.problems
    print(
        f"sent={s.sent} received={s.received} queued={s.queued} deduplicated={s.deduplicated} "
        f"ran={s.ran} retried={s.retried} failed={s.failed} cancelled={s.cancelled} "
        f"lost={s.lost} log_in_order={s.log_in_order} succeeded={s.succeeded} "
        f"superseded={s.superseded} irqs={s.irqs} peak_active={s.peak_running} "
        f"log_lines={len(s.log)} stop={stop} elapsed={elapsed:.3f}s",
    )
    _print_legend()
    sys.stdout.flush()
    for problem in s.problems:
        print(f"aioworkqueue demo: {problem}", file=sys.stderr)
    if s.stray:
        print(f"aioworkqueue demo: ignored {s.stray} foreign datagrams", file=sys.stderr)
    return 0 if ok else 1
