"""Soak the reliability tests: the same checks as ``tests/reliability``, far bigger, new seeds.

Rounds, until the time is up or something fails (then it stops and prints the command that
reproduces the failing round):

* the runtime state machine with a random hypothesis seed and ``--examples`` examples per loop;
* the flush stress with ``--ops`` operations per producer thread and a new seed offset;
* the SIGTERM ledger with three new seeds.

    python tools/soak.py --minutes 30
    python tools/soak.py --minutes 5 --only model --examples 2000

Exit status 0 if every round passed.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/reliability"


def rounds(args: argparse.Namespace, rng: random.Random) -> list[tuple[str, dict[str, str], str]]:
    out = []
    if args.only in (None, "model"):
        out.append(
            (
                "model",
                {
                    "AIOWQ_MODEL_EXAMPLES": str(args.examples),
                    "AIOWQ_MODEL_RANDOM": "1",
                },
                f"{TESTS}/test_model_runtime.py",
            )
        )
    if args.only in (None, "stress"):
        out.append(
            (
                "stress",
                {
                    "AIOWQ_STRESS_OPS": str(args.ops),
                    "AIOWQ_STRESS_SEED": str(rng.randrange(1, 1 << 30)),
                },
                f"{TESTS}/test_flush_stress.py::test_threads_and_flushes_nothing_lost_nothing_twice_no_early_flush",
            )
        )
    if args.only in (None, "ledger"):
        seeds = ",".join(str(rng.randrange(1, 1 << 30)) for _ in range(3))
        out.append(("ledger", {"AIOWQ_LEDGER_SEEDS": seeds}, f"{TESTS}/test_shutdown_ledger.py"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--examples", type=int, default=500, help="state machine examples per loop")
    p.add_argument("--ops", type=int, default=100_000, help="stress operations per thread")
    p.add_argument("--only", choices=("model", "stress", "ledger"), default=None)
    p.add_argument("--seed", type=int, default=None, help="seed of the seeds (default: random)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"soak: seed {seed}, {args.minutes} minutes", flush=True)
    deadline = time.monotonic() + args.minutes * 60
    n = 0
    while time.monotonic() < deadline:
        for name, env, target in rounds(args, rng):
            n += 1
            cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", target]
            t0 = time.monotonic()
            r = subprocess.run(
                cmd,
                check=False,
                cwd=ROOT,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
            )
            took = time.monotonic() - t0
            last = (r.stdout.strip().splitlines() or ["?"])[-1]
            print(f"round {n} {name} ({took:.0f}s): {last}", flush=True)
            if r.returncode != 0:
                print(r.stdout[-20000:], r.stderr[-5000:], sep="\n")
                envs = " ".join(f"{k}={v}" for k, v in env.items())
                print(f"reproduce: cd {ROOT} && {envs} {' '.join(cmd)}")
                return 1
            if time.monotonic() >= deadline:
                break
    print(f"soak: {n} rounds passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
