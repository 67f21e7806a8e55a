"""Key names of one Redis queue (docs/redis.md, "Keys of queue Q").

Every key of a queue shares the hash tag ``{PREFIX:QUEUE}``, so each script touches one slot
(Redis Cluster) and never the keys of two queues.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The consumer group every worker of every queue reads through.
GROUP = "awq"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of queue ``queue`` under ``prefix``, in the order the scripts take them."""

    tag: str
    meta: str
    stream: str
    pend: str
    delayed: str
    dpay: str
    run: str
    defer: str
    inactive: str
    active: str
    last: str
    stats: str
    done: str

    def all(self) -> list[str]:
        """Return the keys as the scripts' ``KEYS`` (fixed order, see ``_scripts.PRELUDE``)."""
        return [
            self.meta,
            self.stream,
            self.pend,
            self.delayed,
            self.dpay,
            self.run,
            self.defer,
            self.inactive,
            self.active,
            self.last,
            self.stats,
            self.done,
        ]


def queue_keys(prefix: str, queue: str) -> QueueKeys:
    """Return the keys of ``queue`` under ``prefix``.

    Context: any. Returns: the :class:`QueueKeys`. Raises: ValueError if a name holds a brace,
    which would move the hash tag and split the queue over slots.
    """
    for what, s in (("prefix", prefix), ("queue name", queue)):
        if "{" in s or "}" in s:
            raise ValueError(f"aioworkqueue.redis: {what} {s!r} must not contain '{{' or '}}'")
    t = f"{{{prefix}:{queue}}}"
    return QueueKeys(
        tag=t,
        meta=f"{t}:meta",
        stream=f"{t}:stream",
        pend=f"{t}:pend",
        delayed=f"{t}:delayed",
        dpay=f"{t}:dpay",
        run=f"{t}:run",
        defer=f"{t}:defer",
        inactive=f"{t}:inactive",
        active=f"{t}:active",
        last=f"{t}:last",
        stats=f"{t}:stats",
        done=f"{t}:done",
    )
