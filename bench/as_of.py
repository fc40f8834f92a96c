"""Figures as of a past instant: derived from the present against read from the intervals then in
force, side by side on the same database (PostgreSQL).

`Statistics._derived` takes the monthly tallies judged at T, less the current intervals begun after
T, plus the intervals in force at T that have ended since (`docs/statistics.md`); the direct way
(`Statistics._from_history`) reads every interval in force at T. For each instant (a day, a week, a
month, seven weeks, a quarter, half a year and a year back) and grouping, both run in turn,
`BENCH_REPEAT` times (default 5), alternating; it prints the medians, their ratio, which one
`Statistics` picks for an all-time cohort (the derivation, always: `_derives`), and checks that
both give the same figures.

Against `BENCH_READS_URL` (a database `dispatchroom seed` has filled, at its head), or else a
scratch database seeded here with `BENCH_PROBLEMS` problems (default 100,000).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from bench.common import machine
from bench.reads import seeded

REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
BACK = {
    "1 day": timedelta(days=1),
    "1 week": timedelta(days=7),
    "1 month": timedelta(days=30),
    "7 weeks": timedelta(days=49),
    "1 quarter": timedelta(days=91),
    "half a year": timedelta(days=182),
    "1 year": timedelta(days=365),
}


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = await call()
    return (time.perf_counter() - t) * 1000, out


async def main() -> None:
    from app.core.clock import SystemClock
    from app.core.settings import Settings
    from app.main import Services
    from app.projections.stats import Cohort, GroupBy

    async with seeded() as (url, _dsn):
        services = Services(Settings(database_url=url, background=False), SystemClock())
        stats = services.stats
        try:
            window = (await stats.rules.current()).response_window_days
            now = services.clock.now()
            print(f"# {machine()}; {REPEAT} calls each, alternating; medians")
            print(f"{'as of':12s} {'group by':9s} {'derived':>10s} {'direct':>10s} {'ratio':>7s}  same")
            for label, back in BACK.items():
                at = now - back
                cutoff = stats.response_cutoff(at, window)
                for group_by in (GroupBy.tier, GroupBy.unit):
                    derived: list[float] = []
                    direct: list[float] = []
                    same = True
                    for _ in range(REPEAT):
                        ms, a = await timed(
                            lambda at=at, c=cutoff, g=group_by: stats._derived(
                                None, g, Cohort(), at, window, c
                            )
                        )
                        derived.append(ms)
                        ms, b = await timed(
                            lambda at=at, c=cutoff, g=group_by: stats._from_history(
                                None, g, Cohort(), at, at, window, c
                            )
                        )
                        direct.append(ms)
                        same = same and a == b
                    d, r = statistics.median(derived), statistics.median(direct)
                    print(
                        f"{label:12s} {group_by.value:9s} {d:8.1f} ms {r:8.1f} ms {r / d:6.1f}×  {same}",
                        flush=True,
                    )
        finally:
            await services.db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
