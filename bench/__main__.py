"""Run every benchmark in turn: `python -m bench` (or `make bench`)."""

from __future__ import annotations

import asyncio
import importlib

BENCHMARKS = [
    "bench.store_append",
    "bench.http_append",
    "bench.commands",
    "bench.scheduler_due",
    "bench.webhooks",
    "bench.projections",
    "bench.reads",
    "bench.as_of",
    "bench.seed_cost",
]

for name in BENCHMARKS:
    print(f"\n## {name}")
    asyncio.run(importlib.import_module(name).main())
