"""Request and response bodies of `/v1/units`, `/v1/enterprises`, `/v1/categories`,
`/v1/routing/rules` and `/v1/calendar`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.core.types import CategoryCode, DistrictId, Name, ShortText, Strict, UnitId
from app.directory import credit_code
from app.routing.tree import Tier, UnitKind


def _valid_credit_code(value: str) -> str:
    value = value.strip().upper()
    reason = credit_code.problem_with(value)
    if reason:
        raise ValueError(f"not a valid unified social credit code: {reason}")
    return value


CreditCode = Annotated[
    str, StringConstraints(min_length=18, max_length=18), AfterValidator(_valid_credit_code)
]


class UnitIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "220102-room",
                "name": "南关区助企行动调度室",
                "kind": "district_dispatch_room",
                "parent_id": "cc-command-room",
                "district_id": "220102",
            }
        }
    )

    id: UnitId
    name: Name
    kind: UnitKind
    parent_id: UnitId | None = Field(None, description="Required for every kind but the command room.")
    district_id: DistrictId | None = Field(
        None,
        description="A district dispatch room gives its district's code; units below it inherit it.",
    )


class UnitPatch(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"name": "南关区要素保障组", "active": True}}
    )

    name: Name | None = None
    active: bool | None = Field(None, description="Inactive units receive no new assignments.")


class UnitOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "220102-utilities",
                "name": "南关区要素保障组",
                "kind": "district_function_group",
                "tier": "district",
                "parent_id": "220102-room",
                "district_id": "220102",
                "path": "cc-command-room/220102-room/220102-utilities",
                "active": True,
                "created_at": "2026-11-01T09:00:00+08:00",
                "version": 1,
            }
        }
    )

    id: str
    name: str
    kind: UnitKind
    tier: Tier
    parent_id: str | None
    district_id: str | None
    path: str = Field(description="Ids from the root to this unit, '/'-separated.")
    active: bool
    created_at: datetime
    version: int


class Contact(Strict):
    name: Name | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^[0-9+\-() ]{3,30}$")] | None = None
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")] | None = None


class EnterpriseIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "91220102MA17W1P07X",
                "name": "长春一汽富维汽车零部件有限公司",
                "district_id": "220102",
                "service_unit_id": "220102-t1-g1",
                "address": "长春市南关区人民大街 1000 号",
            }
        }
    )

    id: CreditCode = Field(
        description="Unified social credit code (统一社会信用代码), check character validated."
    )
    name: Name
    district_id: DistrictId
    service_unit_id: UnitId = Field(description="The service group (服务组) that covers the enterprise.")
    address: ShortText
    contact: Contact | None = None


class EnterprisePatch(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "address": "长春市南关区人民大街 1200 号",
                "contact": {"name": "张伟", "phone": "0431-88888888"},
            }
        },
    )

    name: Name | None = None
    service_unit_id: UnitId | None = None
    address: ShortText | None = None
    contact: Contact | None = None


class EnterpriseOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "91220102MA17W1P07X",
                "name": "长春一汽富维汽车零部件有限公司",
                "district_id": "220102",
                "service_unit_id": "220102-t1-g1",
                "address": "长春市南关区人民大街 1000 号",
                "contact": {"name": "张伟", "phone": "0431-88888888", "email": None},
                "created_at": "2026-11-01T09:00:00+08:00",
                "version": 1,
            }
        }
    )

    id: str
    name: str
    district_id: str
    service_unit_id: str
    address: str
    contact: dict[str, str | None] | None
    created_at: datetime
    version: int


class CategoryIn(Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"code": "logistics", "name": "物流运输"}})

    code: CategoryCode
    name: Name
    description: ShortText | None = None


class CategoryPatch(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"name": "水电气暖", "active": True}}
    )

    name: Name | None = None
    description: ShortText | None = None
    active: bool | None = None


class CategoryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "code": "utilities",
                "name": "水电气暖",
                "description": "供电、供水、供气、供暖、通信接入",
                "active": True,
                "version": 1,
            }
        }
    )

    code: str
    name: str
    description: str
    active: bool
    version: int


# -- routing rules -----------------------------------------------------------------------------


class RouteIn(Strict):
    district_id: DistrictId
    category: CategoryCode | Literal["*"] = Field(
        description='A category code, or "*" for every category of the district without a rule of its own.'
    )
    lead_unit_id: UnitId = Field(description="A district function group of the district (牵头).")
    cooperating_unit_ids: Annotated[list[UnitId], Field(max_length=20)] = Field(
        default_factory=list, description="District function groups of the district (配合)."
    )


class Deadlines(Strict):
    local: int = Field(3, ge=1, le=365)
    district: int = Field(10, ge=1, le=365)
    city: int = Field(20, ge=1, le=365)


class AutoEscalate(Strict):
    local: bool = False
    district: bool = False


class RuleSetFields(Strict):
    """A whole rule set: what a request leaves out takes its default (not its current value)."""

    routes: Annotated[list[RouteIn], Field(max_length=10_000)] = Field(
        default_factory=list,
        description="(district, category) → the lead unit and cooperating units the room is "
        "proposed on `assign`. A problem arriving at a district room without a rule stays `open`, "
        "flagged `unrouted`.",
    )
    city_categories: Annotated[list[CategoryCode], Field(max_length=200)] = Field(
        default_factory=list,
        description="Categories of city jurisdiction: escalating from local goes straight to the "
        "city command room.",
    )
    deadlines: Deadlines = Field(
        default_factory=Deadlines, description="Working days per tier (urgent: times `urgent_factor`)."
    )
    urgent_factor: float = Field(0.5, gt=0, le=1, description="Urgent deadlines: days × factor, rounded up.")
    auto_escalate: AutoEscalate = Field(
        default_factory=AutoEscalate,
        description="Per tier: whether the system escalates a problem when its deadline passes.",
    )
    feedback_window_days: int = Field(
        5,
        ge=0,
        le=60,
        description="Working days after resolution without feedback before the system closes it.",
    )
    return_window_days: int = Field(
        1,
        ge=0,
        le=30,
        description="Working days after assignment during which the lead unit may return it.",
    )
    max_returns: int = Field(
        2, ge=0, le=100, description="A problem returned more often is flagged `returned_too_often`."
    )
    reminder_lead_days: int = Field(
        1, ge=0, le=60, description="The system reminds the holder when this many working days are left."
    )
    response_window_days: int = Field(1, ge=1, le=60, description="Working days to accept an assignment.")


class RuleSetIn(RuleSetFields):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "routes": [
                    {
                        "district_id": "220102",
                        "category": "utilities",
                        "lead_unit_id": "220102-utilities",
                        "cooperating_unit_ids": ["220102-approvals"],
                    },
                    {"district_id": "220102", "category": "*", "lead_unit_id": "220102-approvals"},
                ],
                "city_categories": ["environmental_assessment", "demolition"],
                "deadlines": {"local": 3, "district": 10, "city": 20},
                "urgent_factor": 0.5,
                "auto_escalate": {"local": True, "district": False},
                "feedback_window_days": 5,
                "return_window_days": 1,
                "max_returns": 2,
                "reminder_lead_days": 1,
                "note": "南关区要素保障组牵头水电气暖问题",
            }
        }
    )

    note: ShortText | None = Field(None, description="Why the rules change (kept in the history).")


class RuleSetOut(RuleSetFields):
    version: int = Field(description="The rule-set version (also the `ETag`); 0: the defaults.")
    note: str | None = None
    changed_at: datetime | None = None
    changed_by: str | None = Field(None, description="The key that made this version.")
    changed_by_name: str | None = None


class RuleChanges(BaseModel):
    settings: list[str] = Field(description="Settings whose value changed (`deadlines`, `max_returns` …).")
    routes_added: list[str] = Field(description='"district/category" of the routes added.')
    routes_removed: list[str]
    routes_changed: list[str]


class RuleVersionOut(BaseModel):
    version: int
    changed_at: datetime
    changed_by: str
    changed_by_name: str | None
    note: str | None
    changes: RuleChanges


# -- calendar ----------------------------------------------------------------------------------

Day = date  # fields below are called `date`


class OverrideIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"example": {"working": False, "note": "市政府决定：冰雪节放假一天"}}
    )

    working: bool = Field(description="true: an extra working day; false: an extra holiday.")
    note: ShortText = Field(description="The decision behind it.")


class OverrideOut(BaseModel):
    date: Day
    working: bool
    note: str
    updated_at: datetime
    updated_by: str


class CalendarDayOut(BaseModel):
    date: Day
    working: bool
    source: Literal["official", "fallback", "override"] = Field(
        description="`official`: the holiday data of `chinese-calendar`; `fallback`: Monday–Friday "
        "for a year that data does not cover; `override`: an admin's decision."
    )


class CalendarOut(BaseModel):
    days: list[CalendarDayOut]
    official_years: list[int] = Field(description="First and last year with official holiday data.")
    warnings: list[str]
