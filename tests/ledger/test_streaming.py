"""Ledgers are read a row at a time: memory does not grow with the number of rows, and the
per-row error report keeps a bounded number of errors however many rows fail."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

from app.core.security import Caller, Role
from app.ledger.columns import COLUMNS
from app.ledger.files import read_rows
from app.ledger.importer import KEPT_ERRORS, LedgerImporter
from app.main import Services

TITLES = [c.title for c in COLUMNS]
ADMIN = Caller(key_id="test", name="test", role=Role.admin)


def write_ledger(path: Path, rows: int, category: str = "水电气暖") -> None:
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        writer.writerow(TITLES)
        for i in range(rows):
            writer.writerow(
                [f"NG-{i:07d}", "91220102MA17W1P07X", "某企业", category, f"第{i}号问题：双回路供电接入"]
                + ["申请已提交三个月未获答复，" * 3, "一般", "", "张三", "", "", "2026-09-01 09:00"]
                + [""] * (len(TITLES) - 12)
            )


def peak_bytes_reading(path: Path) -> int:
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_rows(path, "csv"))
        return tracemalloc.get_traced_memory()[1] if count else 0
    finally:
        tracemalloc.stop()


def test_reading_a_csv_ledger_takes_the_same_memory_for_four_times_the_rows(tmp_path: Path) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    write_ledger(small, 10_000)
    write_ledger(large, 40_000)
    assert large.stat().st_size > 10_000_000
    small_peak, large_peak = peak_bytes_reading(small), peak_bytes_reading(large)
    assert large_peak < 1_000_000 and large_peak < small_peak * 1.5, (small_peak, large_peak)


async def test_many_bad_rows_keep_a_bounded_report(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    write_ledger(path, 5_000, category="不存在的类别")
    errors: list[int] = []
    importer = LedgerImporter(services.problems, services.directory, services.settings.tz)
    report = await importer.run(path, "csv", ADMIN, on_error=lambda e: errors.append(e.row))
    assert (report.rows, report.failed, len(report.errors)) == (5_000, 5_000, KEPT_ERRORS)
    assert errors == list(range(2, 5_002))  # every failure reaches the caller's report, in order
    assert report.errors[0].reason == "问题类别: no category '不存在的类别'"
