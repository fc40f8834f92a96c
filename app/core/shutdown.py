"""Knowing early that the server is stopping.

uvicorn waits for open responses to finish before it runs the application's lifespan shutdown,
so a response that never ends by itself (a Server-Sent Events stream) would hold a stopping
server up until its graceful-shutdown timeout. `on_server_exit` chains a callback onto the
signal handlers the server installed (uvicorn's `Server.handle_exit`, single process or one per
worker), so long-lived responses can end cleanly as soon as the signal arrives. Outside uvicorn
(tests in process, the CLI) it does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_server_exit(callback: Callable[[], object]) -> Callable[[], None]:
    """Call `callback` (then the server's own handler) on SIGINT/SIGTERM; returns an undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: list[tuple[int, Any, Any]] = []
    for sig in SIGNALS:
        previous = signal.getsignal(sig)
        owner = getattr(previous, "__self__", None)
        if owner is None or not type(owner).__module__.startswith("uvicorn") or not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            callback()
            previous(signum, frame)

        signal.signal(sig, handler)
        installed.append((sig, handler, previous))

    def undo() -> None:
        for sig, handler, previous in installed:
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)

    return undo
