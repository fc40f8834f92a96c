"""The garbage collector of a long-running process (an API server, `dispatchroom worker`).

CPython's defaults suit short scripts: a young collection every 700 net allocations, and full
collections that traverse every object of the process. A server holds a few hundred thousand
long-lived objects from start-up (modules, the application and its routes, pydantic models,
SQLAlchemy's tables and compiled statements), and under load each full collection traversed them
all again (about a quarter of a second on a loaded machine: a pause in every request in flight).
Measured at 8 clients on `POST /v1/problems`: about one young collection per 9 submissions and a
full one every few seconds."""

from __future__ import annotations

import gc

# Net allocations of tracked objects between young collections (CPython's default: 700). A
# submission allocates thousands; most are garbage before the next collection either way.
YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Once start-up is done: collect, move every surviving object to the collector's permanent
    generation (`gc.freeze`: full collections no longer traverse them; they are not freed while
    the process lives), and collect young objects less often. Not in tests, which build many
    applications in one process (what is frozen would stay)."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
