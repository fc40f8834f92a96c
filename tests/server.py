"""Real server processes for tests: `dispatchroom serve` on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port

BIN = Path(sys.executable).parent


def dispatchroom(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dispatchroom"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def server(env: dict[str, str], *args: str, startup_timeout: float = 90) -> Iterator[str]:
    """Start `dispatchroom serve` (migrating first) and yield its base URL; stop it at the end."""
    with server_process(env, *args, startup_timeout=startup_timeout) as (_proc, base):
        yield base


@contextmanager
def server_process(
    env: dict[str, str], *args: str, startup_timeout: float = 90
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """As `server`, also yielding the process (to kill it: crash tests)."""
    port = free_port()
    log = Path(env.get("SERVER_LOG", os.devnull))
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "dispatchroom"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                *args,
            ],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
