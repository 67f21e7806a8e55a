"""README's "Beyond one process" service, run for real: its web app, two worker processes started
with the documented command, and the shutdown hook's flush (issue 14, "Done when").

The block is taken from README.md as it is (only its key prefix is swapped for this test's), so
the README cannot drift from what works.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 40


def _service_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Beyond one process\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    service = [b for b in blocks if b.startswith("# service.py\n")]
    assert len(service) == 1, "README's 'Beyond one process' has one `# service.py` block"
    return service[0]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Beyond one process\n", 1)[1].split("\n## ", 1)[0]
    sh = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [
        line.split("#", 1)[0].strip().rstrip("&").strip() for b in sh for line in b.splitlines()
    ]


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("service", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.asyncio
async def test_the_readme_service_runs_on_two_worker_processes(
    tmp_path: Path, redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _service_block()
    assert 'prefix="shop"' in body
    (tmp_path / "service.py").write_text(body.replace('prefix="shop"', f'prefix="{key_prefix}"'))
    worker_cmd = [c for c in _commands() if c.startswith("aioworkqueue worker ")]
    assert worker_cmd == ["aioworkqueue worker service:app --processes 2"]
    monkeypatch.setenv("REDIS_URL", redis_url)  # the web side, in this process, reads it too
    service = _load(tmp_path / "service.py")
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(tmp_path)}

    posted: list[bool] = []
    async with service.web.router.lifespan_context(service.web):
        transport = httpx.ASGITransport(app=service.web)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            for i in range(ORDERS):
                r = await client.post(f"/orders/{i}")
                assert r.status_code == 200, r.text
                assert r.json()["order"] == i
                posted.append(r.json()["queued"])
            # No worker runs yet, so the same order again is still pending: R1 across processes.
            again = await client.post("/orders/0")
            assert again.json()["queued"] is False
        # The workers start only now: the shutdown hook's flush must wait for all of them.
        # (Popen only starts them: it does not block the loop while they run)
        workers = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "aioworkqueue", *worker_cmd[0].split()[1:]],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    # The lifespan has ended: its flush_workqueue returned, so every receipt has been sent.
    try:
        assert posted == [True] * ORDERS
        workers.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(workers.communicate, timeout=60)
    finally:
        if workers.poll() is None:
            workers.kill()
            workers.wait()
    assert workers.returncode == 0, err
    sent = re.findall(r"receipt for order (\d+) sent by process (\d+)", out)
    assert sorted(int(o) for o, _ in sent) == list(range(ORDERS)), out
    pids = {p for _, p in sent}
    assert str(workers.pid) not in pids  # the items ran in the supervisor's children
