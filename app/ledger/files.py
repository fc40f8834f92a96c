"""Reading and writing ledger files a row at a time (constant memory): CSV with the csv module,
Excel with openpyxl's read-only and write-only modes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook

from app.core.errors import AppError, register

register(
    "invalid_ledger",
    422,
    "Invalid ledger",
    "The ledger file cannot be read: unknown format, no header row, or required columns missing.",
)

FORMATS = ("csv", "xlsx")


def format_of(path: Path, explicit: str | None = None) -> str:
    fmt = (explicit or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise AppError("invalid_ledger", f"a ledger is .csv or .xlsx, not {fmt or 'unknown'!r}")
    return fmt


def _encoding(path: Path) -> str:
    """UTF-8 (with or without BOM), else GB18030 (what Excel in Chinese writes)."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return "gb18030"
    return "utf-8-sig"


def read_rows(path: Path, fmt: str) -> Iterator[tuple[int, list[Any]]]:
    """(row number, cells) for every row, the header first (row 1). Blank rows are skipped."""
    if fmt == "xlsx":
        # A file object, not a path: openpyxl would refuse a name without an Excel suffix.
        with path.open("rb") as handle:
            try:
                workbook = load_workbook(handle, read_only=True, data_only=True)
            except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
                raise AppError("invalid_ledger", f"not an Excel workbook: {type(exc).__name__}") from None
            try:
                sheet = workbook.active
                for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                    cells = list(values)
                    if any(c is not None and str(c).strip() != "" for c in cells):
                        yield number, cells
            finally:
                workbook.close()
        return
    encoding = _encoding(path)
    number = 0
    with path.open(encoding=encoding, newline="") as f:
        try:
            for number, cells in enumerate(csv.reader(f), start=1):
                if any(c.strip() for c in cells):
                    yield number, list(cells)
        except UnicodeDecodeError:
            raise AppError(
                "invalid_ledger", f"row {number + 1} is neither UTF-8 nor GB18030 text ({encoding} expected)"
            ) from None
        except csv.Error as exc:
            raise AppError("invalid_ledger", f"row {number + 1} is not valid CSV: {exc}") from None


def count_rows(path: Path, fmt: str) -> int | None:
    """About how many data rows the file has (for a progress bar), cheaply."""
    if fmt == "xlsx":
        try:
            with path.open("rb") as handle:
                workbook = load_workbook(handle, read_only=True)
                rows = workbook.active.max_row
                workbook.close()
        except Exception:
            return None
        return max(0, rows - 1) if rows else None
    lines = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines += block.count(b"\n")
    return max(0, lines - 1)


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def write_csv(rows: Iterable[list[Any]], out: io.TextIOBase) -> None:
    writer = csv.writer(out)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])


class XlsxWriter:
    """A write-only workbook: rows go to disk as they come."""

    def __init__(self) -> None:
        self.workbook = Workbook(write_only=True)
        self.sheet = self.workbook.create_sheet("台账")

    def append(self, row: list[Any]) -> None:
        self.sheet.append(row)

    def save(self, path: Path) -> None:
        self.workbook.save(path)
