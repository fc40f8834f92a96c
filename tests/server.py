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
Process = subprocess.Popen[bytes]


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
    with _start(env, 1, args, startup_timeout) as [(_, base)]:
        yield base


@contextmanager
def server_process(
    env: dict[str, str], *args: str, startup_timeout: float = 90
) -> Iterator[tuple[Process, str]]:
    """As `server`, also yielding the process (to kill it: crash tests)."""
    with _start(env, 1, args, startup_timeout) as [started]:
        yield started


@contextmanager
def servers(env: dict[str, str], count: int, *args: str, startup_timeout: float = 90) -> Iterator[list[str]]:
    """Start `count` server processes at once on the same database; yield their base URLs."""
    with _start(env, count, args, startup_timeout) as started:
        yield [base for _, base in started]


@contextmanager
def _start(
    env: dict[str, str], count: int, args: tuple[str, ...], startup_timeout: float
) -> Iterator[list[tuple[Process, str]]]:
    started: list[tuple[Process, str]] = []
    log = Path(env.get("SERVER_LOG", os.devnull))
    try:
        with log.open("ab") as out:
            for _ in range(count):
                port = free_port()
                command = [str(BIN / "dispatchroom"), "serve", "--host", "127.0.0.1", "--port", str(port),
                           "--log-level", "warning", *args]  # fmt: skip
                proc = subprocess.Popen(
                    command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
                )
                started.append((proc, f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + startup_timeout
        for proc, base in started:
            _wait_ready(proc, base, deadline, log)
        yield started
    finally:
        for proc, _ in started:
            stop_process(proc)


def _wait_ready(proc: Process, base: str, deadline: float, log: Path) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start")
        time.sleep(0.1)


def stop_process(proc: Process) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
