"""Request and response bodies of `/v1/units`, `/v1/enterprises`, `/v1/categories`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

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
