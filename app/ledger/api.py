"""`POST /v1/imports` (a ledger into problems, admin) and `GET /v1/problems/export` (problems
as a ledger). The upload is streamed to a temporary file and read a row at a time; the export is
written a batch at a time (CSV streamed to the client; Excel through a temporary file)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from app.core.deps import AdminDep, CallerDep, MetaDep, SettingsDep
from app.core.errors import AppError, responses
from app.core.security import Caller
from app.core.settings import Settings
from app.ledger import files
from app.ledger.columns import COLUMNS
from app.ledger.exporter import as_text, header, ledger_rows
from app.ledger.importer import LedgerImporter, Report
from app.problems.service import ProblemService
from app.projections.problem_view import ProblemFilter

router = APIRouter(prefix="/v1", tags=["ledgers"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CONTENT_TYPES = {"text/csv": "csv", XLSX: "xlsx"}


class ImportError_(BaseModel):
    row: int = Field(description="The row number in the file (the header is row 1).")
    ledger_id: str | None = Field(description="The row's 台账编号, if it has one.")
    reason: str


class ImportReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "rows": 3,
                "created": 1,
                "updated": 0,
                "unchanged": 1,
                "failed": 1,
                "errors": [{"row": 4, "ledger_id": "NG-2024-0031", "reason": "提交时间 is empty"}],
                "errors_truncated": False,
                "ignored_columns": ["备注"],
            }
        }
    )

    rows: int = Field(description="Data rows read.")
    created: int = Field(description="Rows that became new problems.")
    updated: int = Field(description="Rows of known problems that added steps (a corrected row).")
    unchanged: int = Field(description="Rows already imported (nothing new).")
    failed: int
    errors: list[ImportError_] = Field(description="Per-row errors (the first 1000).")
    errors_truncated: bool
    ignored_columns: list[str] = Field(description="Headers that are not ledger columns.")


def report_out(report: Report) -> ImportReport:
    return ImportReport(
        rows=report.rows,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        failed=report.failed,
        errors=[ImportError_(row=e.row, ledger_id=e.ledger_id, reason=e.reason) for e in report.errors],
        errors_truncated=report.failed > len(report.errors),
        ignored_columns=report.ignored_columns,
    )


def importer(request: Request) -> LedgerImporter:
    settings: Settings = request.app.state.settings
    return LedgerImporter(request.app.state.problems, request.app.state.directory, settings.tz)


async def _upload(request: Request, target: Path) -> str | None:
    """Write the uploaded file to `target`; returns the format its name or type says."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise AppError("bad_request", "a multipart upload carries the ledger in the field `file`")
        with target.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                out.write(chunk)
        name = (upload.filename or "").lower()
        return "xlsx" if name.endswith(".xlsx") else "csv" if name.endswith(".csv") else None
    with target.open("wb") as out:
        async for chunk in request.stream():
            out.write(chunk)
    return CONTENT_TYPES.get(content_type)


@router.post(
    "/imports",
    operation_id="import_ledger",
    summary="Import a ledger (台账)",
    response_model=ImportReport,
    responses=responses(400, 401, 403, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The ledger: the file itself (`text/csv` or the .xlsx type), or a "
            "multipart form with the field `file`.",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": ",".join(c.title for c in COLUMNS[:6])
                    + "\nNG-2024-0031,91220102MA17W1P07X,长春一汽富维汽车零部件有限公司,水电气暖,"
                    "新厂房双回路供电接入,申请已提交三个月未获答复\n",
                },
                XLSX: {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    },
)
async def import_ledger(
    request: Request,
    caller: AdminDep,
    meta: MetaDep,
    format: Annotated[
        Literal["csv", "xlsx"] | None,
        Query(description="The file's format, if the content type or file name does not say."),
    ] = None,
) -> ImportReport:
    """Admin only. Every row becomes a problem with its history: the dates (提交, 上交, 交办,
    签收, 办结, 回访, 销号, 撤回) become commands with `occurred_at`, through the same lifecycle
    rules as live commands. Importing the same file again creates nothing new (the 台账编号
    decides the problem id). A bad row is reported with its row number and reason and never
    stops the others. Columns: see `GET /v1/problems/export` (the same ones). Large ledgers
    are better imported with `dispatchroom import` (a progress bar, no HTTP timeout)."""
    descriptor, name = tempfile.mkstemp(prefix="ledger-", suffix=".upload")
    os.close(descriptor)
    path = Path(name)
    try:
        guessed = await _upload(request, path)
        fmt = format or guessed
        if fmt is None:
            raise AppError(
                "invalid_ledger", "say the format: ?format=csv|xlsx, a content type or a file name"
            )
        report = await importer(request).run(path, fmt, caller, meta=meta)
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)
    return report_out(report)


def _instant(value: datetime | date | None, settings: Settings, *, end: bool = False) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=settings.tz)
    return datetime.combine(value, time.max if end else time.min, tzinfo=settings.tz)


async def _subtree(request: Request, caller: Caller) -> frozenset[str]:
    """A handler's unit and the units below it (its scope); empty for other roles."""
    service: ProblemService = request.app.state.problems
    return (await service.actor(caller)).subtree


def _csv_bytes(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue().encode("utf-8")


@router.get(
    "/problems/export",
    operation_id="export_problems",
    summary="Export problems as a ledger (台账)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The ledger: CSV (UTF-8 with BOM) or Excel",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "\ufeff" + ",".join(c.title for c in COLUMNS) + "\n",
                },
                XLSX: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **responses(400, 401, 422),
    },
)
async def export_problems(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    format: Annotated[Literal["csv", "xlsx"], Query(description="`csv` or `xlsx`.")] = "csv",
    status: Annotated[list[str] | None, Query(description="Comma list or repeated.")] = None,
    district_id: Annotated[str | None, Query(max_length=12)] = None,
    category: Annotated[list[str] | None, Query(description="Comma list or repeated.")] = None,
    submitted_from: Annotated[datetime | date | None, Query(description="Inclusive.")] = None,
    submitted_to: Annotated[datetime | date | None, Query(description="A date includes that day.")] = None,
) -> Response:
    """The problems in the caller's scope as a ledger, oldest first, with the columns
    `POST /v1/imports` reads (Chinese titles): importing the file into an empty database (with
    the same units and enterprises) reproduces the problems, with the same ids. Times are the
    city's local time."""

    def split(values: list[str] | None) -> tuple[str, ...]:
        return tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())

    flt = ProblemFilter(
        status=split(status),
        district_id=district_id,
        category=split(category),
        submitted_from=_instant(submitted_from, settings),
        submitted_to=_instant(submitted_to, settings, end=True),
    )
    subtree = await _subtree(request, caller)
    now = request.app.state.clock.now()
    rows = ledger_rows(request.app.state.db, caller, subtree, flt, now=now, tz=settings.tz)
    stamp = now.astimezone(settings.tz).strftime("%Y%m%d-%H%M%S")
    if format == "csv":

        async def body() -> AsyncIterator[bytes]:
            yield "\ufeff".encode() + _csv_bytes(header())
            async for cells in rows:
                yield _csv_bytes(as_text(cells))

        return StreamingResponse(
            body(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="ledger-{stamp}.csv"'},
        )
    descriptor, name = tempfile.mkstemp(prefix="ledger-", suffix=".xlsx")
    os.close(descriptor)
    path = Path(name)
    try:
        writer = files.XlsxWriter()
        writer.append(header())
        async for cells in rows:
            writer.append(cells)
        await asyncio.to_thread(writer.save, path)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return FileResponse(
        path,
        media_type=XLSX,
        filename=f"ledger-{stamp}.xlsx",
        background=BackgroundTask(lambda: path.unlink(missing_ok=True)),
    )
