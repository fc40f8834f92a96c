"""Importing a ledger: each row becomes a problem with its history, through the command service.

A row's dates (submitted, escalated, assigned, accepted, resolved, feedback, closed, withdrawn)
become commands with `occurred_at`, applied in time order by the same `ProblemService` that
serves `/v1/problems`, so every rule of the lifecycle applies and every step is an event.

Idempotent: the problem id follows from the row's 台账编号 (the id itself when it is a UUID, as
in an exported ledger; else a UUID derived from it), and a step is applied only if the problem
has no event of that kind at that instant yet. Importing the same file twice creates nothing;
a row that failed halfway continues where it stopped once corrected.

A bad row never stops the import: it is reported with its row number and the reason, and the
next row goes on. Rows are validated before anything is written; a step the lifecycle refuses
leaves the steps before it in place (they are facts) and is reported.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from app.core.errors import AppError
from app.core.requestmeta import RequestMeta
from app.core.security import Caller
from app.directory.service import Directory
from app.directory.tables import categories, units
from app.ledger.columns import COLUMNS, DATE_KEYS, REQUIRED, TITLES, URGENCY
from app.ledger.files import cell_text, read_rows
from app.problems import domain
from app.problems.schemas import SubmitIn
from app.problems.service import ProblemService

log = logging.getLogger("dispatchroom")

LEDGER_NAMESPACE = uuid.UUID("3c9e5d0a-6b7f-4e21-9d3a-5f8b2c1e7a44")
KEPT_ERRORS = 1000
_SPLIT = re.compile(r"[、,，;；\s]+")
_CHINESE_DATE = re.compile(
    r"^(\d{4})年(\d{1,2})月(\d{1,2})日?(?:\s*(\d{1,2})[:：时](\d{1,2})(?:[:：分](\d{1,2}))?)?"
)
_TITLE_OF = {c.key: c.title for c in COLUMNS}


def problem_id_for(ledger_id: str) -> str:
    try:
        return str(uuid.UUID(ledger_id))
    except ValueError:
        return str(uuid.uuid5(LEDGER_NAMESPACE, ledger_id))


@dataclass
class RowError:
    row: int
    ledger_id: str | None
    reason: str


@dataclass
class Report:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def add_error(self, error: RowError) -> None:
        self.failed += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(error)


class RowProblem(Exception):
    """Why a row cannot be imported."""


@dataclass(frozen=True)
class Step:
    at: datetime
    order: int
    name: str
    event_type: str
    command: domain.Command
    units: tuple[str, ...] = ()


@dataclass(frozen=True)
class LedgerRow:
    ledger_id: str
    problem_id: str
    submission: SubmitIn
    steps: tuple[Step, ...]


class LedgerImporter:
    def __init__(self, problems: ProblemService, directory: Directory, tz: Any) -> None:
        self.problems = problems
        self.directory = directory
        self.tz = tz
        self._units: dict[str, str] = {}
        self._categories: dict[str, str] = {}

    async def _load_names(self) -> None:
        """Units and categories by id and by (unique) name: ledgers are written by people."""
        async with self.problems.db.read() as conn:
            unit_rows = (await conn.execute(sa.select(units.c.id, units.c.name))).all()
            category_rows = (await conn.execute(sa.select(categories.c.code, categories.c.name))).all()
        names = Counter(r.name for r in unit_rows)
        self._units = {r.name: r.id for r in unit_rows if names[r.name] == 1} | {
            r.id: r.id for r in unit_rows
        }
        self._categories = {r.name: r.code for r in category_rows} | {r.code: r.code for r in category_rows}

    # -- running --------------------------------------------------------------------------

    async def run(
        self,
        path: Path,
        fmt: str,
        caller: Caller,
        *,
        meta: RequestMeta | None = None,
        on_row: Callable[[int], None] | None = None,
        on_error: Callable[[RowError], None] | None = None,
    ) -> Report:
        await self._load_names()
        report = Report()
        rows = read_rows(path, fmt)
        header = next(rows, None)
        if header is None:
            raise AppError("invalid_ledger", "the ledger is empty (no header row)")
        keys = self._header(header[1], report)
        for number, cells in rows:
            report.rows += 1
            values = {key: cells[i] for i, key in enumerate(keys[: len(cells)]) if key}
            ledger_id = cell_text(values.get("ledger_id")) or None
            try:
                outcome = await self.import_row(self.parse(values), caller, meta)
            except RowProblem as exc:
                error = RowError(number, ledger_id, str(exc))
                report.add_error(error)
                if on_error:
                    on_error(error)
            except Exception as exc:  # a bad row never stops the rest
                log.exception("ledger row %s failed unexpectedly", number)
                error = RowError(number, ledger_id, f"unexpected error: {type(exc).__name__}")
                report.add_error(error)
                if on_error:
                    on_error(error)
            else:
                setattr(report, outcome, getattr(report, outcome) + 1)
            if on_row:
                on_row(number)
        return report

    def _header(self, cells: Sequence[Any], report: Report) -> list[str | None]:
        keys: list[str | None] = []
        for cell in cells:
            title = cell_text(cell).rstrip("*＊ ")
            key = TITLES.get(title)
            if key is None and title:
                report.ignored_columns.append(title)
            keys.append(key)
        missing = [_TITLE_OF[k] for k in REQUIRED if k not in keys]
        if missing:
            raise AppError("invalid_ledger", f"required columns missing: {', '.join(missing)}")
        return keys

    # -- one row --------------------------------------------------------------------------

    def _instant(self, key: str, value: Any) -> datetime | date | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=self.tz)
        if isinstance(value, date):
            return value
        text = cell_text(value)
        match = _CHINESE_DATE.match(text)
        if match:
            y, m, d, hh, mm, ss = (int(g) if g else 0 for g in match.groups())
            try:
                parsed = datetime(y, m, d, hh, mm, ss) if match.group(4) else date(y, m, d)
            except ValueError:
                raise RowProblem(f"{_TITLE_OF[key]}: {text!r} is not a date") from None
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("/", "-"))
            except ValueError:
                raise RowProblem(f"{_TITLE_OF[key]}: {text!r} is not a date or datetime") from None
            if len(text) <= 10:
                parsed = parsed.date()
        if isinstance(parsed, datetime) and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.tz)
        return parsed

    def _at(self, value: datetime | date | None) -> datetime | None:
        """An event's instant; a bare date means the start of that day in the city."""
        if value is None or isinstance(value, datetime):
            return value
        return datetime.combine(value, time.min, tzinfo=self.tz)

    def _unit(self, key: str, value: str) -> str:
        unit = self._units.get(value)
        if unit is None:
            raise RowProblem(f"{_TITLE_OF[key]}: no unit {value!r} (or the name is not unique)")
        return unit

    def parse(self, values: dict[str, Any]) -> LedgerRow:
        text = {k: cell_text(v) for k, v in values.items()}
        for key in REQUIRED:
            if not text.get(key):
                raise RowProblem(f"{_TITLE_OF[key]} is empty")
        ledger_id = text["ledger_id"]
        if len(ledger_id) > 100:
            raise RowProblem("台账编号 has more than 100 characters")
        raw = {key: self._instant(key, values.get(key)) for key in DATE_KEYS}
        at = {key: self._at(value) for key, value in raw.items() if key != "deadline"}
        category = self._categories.get(text["category"])
        if category is None:
            raise RowProblem(f"问题类别: no category {text['category']!r}")
        urgency = URGENCY.get(text.get("urgency", ""))
        if urgency is None:
            raise RowProblem(f"紧急程度: {text['urgency']!r} is neither 一般 nor 紧急")
        reporter = (
            self._unit("reporter_unit_id", text["reporter_unit_id"]) if text.get("reporter_unit_id") else None
        )
        try:
            submission = SubmitIn.model_validate(
                {
                    "enterprise_id": text["enterprise_id"].upper(),
                    "category": category,
                    "title": text["title"],
                    "description": text.get("description") or text["title"],
                    "urgency": urgency,
                    "source": text.get("source") or None,
                    "reported_by": text.get("reported_by") or None,
                    "reporter_unit_id": reporter,
                    "location": {"address": text["address"]} if text.get("address") else None,
                    "occurred_at": at["submitted_at"],
                }
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            name = _TITLE_OF.get(where.split(".")[0], where)
            raise RowProblem(f"{name}: {first.get('msg')}") from None
        self._check_order(at)
        return LedgerRow(ledger_id, problem_id_for(ledger_id), submission, tuple(self._steps(text, at, raw)))

    def _check_order(self, at: dict[str, datetime | None]) -> None:
        sequence = (
            "submitted_at",
            "escalated_at",
            "escalated_again_at",
            "assigned_at",
            "resolved_at",
            "feedback_at",
        )
        previous: tuple[str, datetime] | None = None
        for key in sequence:
            value = at.get(key)
            if value is None:
                continue
            if previous is not None and value < previous[1]:
                raise RowProblem(f"{_TITLE_OF[key]} lies before {_TITLE_OF[previous[0]]}")
            previous = (key, value)
        if at.get("escalated_again_at") and not at.get("escalated_at"):
            raise RowProblem("再次上交时间 without 上交时间")
        submitted = at["submitted_at"]
        assert submitted is not None
        for key in ("accepted_at", "closed_at", "withdrawn_at"):
            value = at.get(key)
            if value is not None and value < submitted:
                raise RowProblem(f"{_TITLE_OF[key]} lies before 提交时间")

    def _steps(
        self, text: dict[str, str], at: dict[str, datetime | None], raw: dict[str, Any]
    ) -> Iterator[Step]:
        lead = self._unit("lead_unit_id", text["lead_unit_id"]) if text.get("lead_unit_id") else None
        named = _SPLIT.split(text.get("cooperating_unit_ids", ""))
        coops = tuple(self._unit("cooperating_unit_ids", v) for v in named if v)
        if (lead or coops) and not at.get("assigned_at"):
            raise RowProblem("牵头单位 or 配合单位 without 交办时间")
        score = text.get("score", "")
        if bool(score) != bool(at.get("feedback_at")):
            raise RowProblem("回访时间 and 满意度评分 go together")
        if score and (not score.isdigit() or not 1 <= int(score) <= 5):
            raise RowProblem(f"满意度评分: {score!r} is not 1–5")
        comment = text.get("comment") or None
        if comment and len(comment) > 500:
            raise RowProblem("回访意见 has more than 500 characters")

        def later() -> dict[str, tuple[str, str, domain.Command, tuple[str, ...]]]:
            assign = domain.Assign(
                lead_unit_id=lead,
                cooperating_unit_ids=coops,
                deadline=self.problems.deadline_from(raw.get("deadline")),
                note="台账导入",
            )
            return {
                "escalated_at": ("上交", domain.ESCALATED, domain.Escalate(reason="台账导入：上交"), ()),
                "escalated_again_at": (
                    "再次上交",
                    domain.ESCALATED,
                    domain.Escalate(reason="台账导入：再次上交"),
                    (),
                ),
                "assigned_at": ("交办", domain.ASSIGNED, assign, tuple(u for u in (lead, *coops) if u)),
                "accepted_at": ("签收", domain.ACCEPTED, domain.Accept(), ()),
                "resolved_at": (
                    "办结",
                    domain.RESOLVED,
                    domain.Resolve(resolution=text.get("resolution") or "已办结"),
                    (),
                ),
                "feedback_at": (
                    "回访",
                    domain.FEEDBACK_RECEIVED,
                    domain.Feedback(score=int(score or 0), comment=comment),
                    (),
                ),
                "closed_at": ("销号", domain.CLOSED, domain.Close(reason="台账导入"), ()),
                "withdrawn_at": (
                    "撤回",
                    domain.WITHDRAWN,
                    domain.Withdraw(reason=text.get("withdraw_reason") or "台账导入"),
                    (),
                ),
            }

        for order, (key, (name, event_type, command, involved)) in enumerate(later().items()):
            when = at.get(key)
            if when is not None:
                yield Step(when, order, name, event_type, command, involved)

    async def import_row(self, row: LedgerRow, caller: Caller, meta: RequestMeta | None) -> str:
        """'created', 'updated' (new steps on a known problem) or 'unchanged'; RowProblem if not."""
        service = self.problems
        state, events = await service.load(row.problem_id)
        outcome = "unchanged"
        body = row.submission
        if state is None:
            try:
                state, created = await service.submit(caller, body, meta, problem_id=row.problem_id)
            except AppError as exc:
                raise RowProblem(f"提交: {exc.code}: {exc.detail}") from None
            outcome = "created" if created else "unchanged"
            events = []
        else:
            assert body.occurred_at is not None
            same = (
                state.enterprise_id == body.enterprise_id
                and state.category == body.category
                and state.title == body.title
                and state.submitted_at == body.occurred_at
            )
            if not same:
                raise RowProblem(
                    f"台账编号 {row.ledger_id} was imported before with other content "
                    "(enterprise, category, title or 提交时间 differ)"
                )
        present = Counter((e.type, e.occurred_at) for e in events)
        for step in sorted(row.steps, key=lambda s: (s.at, s.order)):
            if present[(step.event_type, step.at)] > 0:
                present[(step.event_type, step.at)] -= 1
                continue
            if isinstance(step.command, domain.Close) and state.status is domain.Status.closed:
                continue  # closed by satisfied feedback already
            command = step.command
            try:
                state = await service.execute(
                    caller,
                    row.problem_id,
                    lambda _, command=command: command,  # type: ignore[misc]
                    occurred_at=step.at,
                    meta=meta,
                    units=step.units,
                )
            except AppError as exc:
                raise RowProblem(f"{step.name}: {exc.code}: {exc.detail}") from None
            if outcome == "unchanged":
                outcome = "updated"
        return outcome
