"""Request bodies of `/v1/problems` and its commands.

Every command may carry `occurred_at` (keys with the import permission only, to load
historical ledgers); it may not lie more than 5 minutes in the future.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from app.core.types import CategoryCode, Name, ShortText, Strict, Text, UnitId
from app.directory.schemas import Contact
from app.problems.domain import Urgency


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a time zone offset (e.g. +08:00 or Z)")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
DeadlineValue = Annotated[
    AwareDatetime | date,
    Field(
        description="An ISO datetime with offset, or a date "
        "(due at the end of that day in the city's time zone)."
    ),
]
OccurredAt = Annotated[
    AwareDatetime | None,
    Field(description="Business time of a historical event (import permission only); default now."),
]


class CommandBody(Strict):
    occurred_at: OccurredAt = None


class LocationIn(Strict):
    """Where the problem is (Open311's location fields); all optional, `lat` and `long` together."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"address": "长春市南关区人民大街 1000 号", "lat": 43.8868, "long": 125.3245}
        },
    )

    address: ShortText | None = None
    address_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:/-]{1,100}$")] | None = Field(
        None, description="An id of the address in a portal's address register."
    )
    zipcode: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 -]{1,20}$")] | None = None
    lat: float | None = Field(None, ge=-90, le=90, description="WGS84 latitude.")
    long: float | None = Field(None, ge=-180, le=180, description="WGS84 longitude.")

    @model_validator(mode="after")
    def _both_coordinates(self) -> LocationIn:
        if (self.lat is None) != (self.long is None):
            raise ValueError("lat and long go together")
        return self


MediaUrl = Annotated[str, StringConstraints(max_length=1000, pattern=r"^https?://\S+$")]


class SubmitIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "enterprise_id": "91220102MA17W1P07X",
                "category": "utilities",
                "title": "新厂房双回路供电接入",
                "description": "新建厂房需要双回路供电，申请已提交三个月未获答复。",
                "urgency": "normal",
            }
        },
    )

    enterprise_id: Annotated[
        str, StringConstraints(min_length=18, max_length=18, pattern=r"^[0-9A-Za-z]{18}$")
    ] = Field(description="The enterprise's unified social credit code; it must be registered.")
    category: CategoryCode
    title: Name
    description: Text
    urgency: Urgency = Urgency.normal
    source: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] | None = Field(
        None,
        description="The portal or channel it came through (a portal key's own source by default).",
    )
    reported_by: Name | None = Field(None, description="Who recorded it (the cadre's name or id).")
    reporter_unit_id: UnitId | None = Field(
        None,
        description="The unit that found it "
        "(default: the caller's unit, else the enterprise's service group); a handler key names "
        "its own unit or one below it (else 403).",
    )
    location: LocationIn | None = Field(None, description="Where the problem is (optional).")
    media_url: MediaUrl | None = Field(None, description="A photo or document of the problem.")
    contact: Contact | None = Field(None, description="Who to contact (optional).")


class AcceptIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"note": "已签收，三日内反馈方案"}}
    )

    note: ShortText | None = None


class EscalateIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"reason": "涉及跨部门协调，服务组无法解决"}}
    )
    reason: Text


class AssignIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "lead_unit_id": "220102-utilities",
                "cooperating_unit_ids": ["220102-approvals"],
                "deadline": "2026-12-04",
                "note": "请于限期内办结",
            }
        },
    )
    lead_unit_id: UnitId | None = Field(None, description="Default: the routing rule's proposal.")
    cooperating_unit_ids: Annotated[list[UnitId], Field(max_length=20)] | None = None
    deadline: DeadlineValue | None = Field(None, description="Default: the tier's deadline.")
    note: ShortText | None = None


class ReturnIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"reason": "该事项属市场监管部门职责，非本单位管辖"}}
    )

    reason: Text


class DecideReturnIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"accept": True, "note": "同意退回，另行交办"}}
    )

    accept: bool = Field(description="true: back to `open` at the room; false: the unit keeps it.")
    note: ShortText | None = None


class ProgressIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"note": "已与供电公司现场踏勘，确定接入方案"}}
    )

    note: Text


class RequestExtensionIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"deadline": "2026-12-18", "reason": "需等待上级电网改造完成"}},
    )

    deadline: DeadlineValue
    reason: Text


class DecideExtensionIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"approve": True, "note": "同意延期至 12 月 18 日"}}
    )

    approve: bool
    deadline: DeadlineValue | None = Field(None, description="Approve a different deadline than requested.")
    note: ShortText | None = None


class PlanStepIn(Strict):
    step: ShortText
    due_on: date


class DeferIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "explanation": "需待年度用地指标下达后办理",
                "plan": [
                    {"step": "申报用地指标", "due_on": "2026-12-15"},
                    {"step": "完成土地出让", "due_on": "2027-03-31"},
                ],
                "review_on": "2026-12-20",
            }
        },
    )
    explanation: Text
    plan: Annotated[list[PlanStepIn], Field(min_length=1, max_length=20)]
    review_on: date


class ResumeIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"note": "用地指标已下达，恢复办理"}}
    )

    note: ShortText | None = None


class ResolveIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"resolution": "供电公司已完成双回路接入"}}
    )

    resolution: Text


class FeedbackIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"score": 5, "comment": "非常满意"}}
    )

    score: int = Field(
        ge=1, le=5, description="Satisfaction 1–5; 4 and 5 mean satisfied (closes the problem)."
    )
    comment: ShortText | None = None


class ReopenIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"reason": "企业反映接入后仍频繁停电"}}
    )

    reason: Text


class SuperviseIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"note": "请于本周内办结并报送结果"}}
    )

    note: Text


class WithdrawIn(CommandBody):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"reason": "企业已自行解决"}})

    reason: Text


class CloseIn(CommandBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"reason": "企业联系不上，按规定销号"}}
    )

    reason: ShortText


def body_fields(body: CommandBody) -> dict[str, Any]:
    return body.model_dump(exclude={"occurred_at"})
