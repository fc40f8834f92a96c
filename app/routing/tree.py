"""The routing tree: kinds of units, their tiers, and which kind may sit under which."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Tier(StrEnum):
    local = "local"  # service groups and teams (服务组、服务队)
    district = "district"  # the district dispatch room and its function groups (区调度室)
    city = "city"  # the city command room and city departments (市总调度室)


TIER_ORDER = (Tier.local, Tier.district, Tier.city)


class UnitKind(StrEnum):
    city_command_room = "city_command_room"
    city_department = "city_department"
    district_dispatch_room = "district_dispatch_room"
    district_function_group = "district_function_group"
    service_team = "service_team"
    service_group = "service_group"


TIER_OF_KIND: dict[UnitKind, Tier] = {
    UnitKind.city_command_room: Tier.city,
    UnitKind.city_department: Tier.city,
    UnitKind.district_dispatch_room: Tier.district,
    UnitKind.district_function_group: Tier.district,
    UnitKind.service_team: Tier.local,
    UnitKind.service_group: Tier.local,
}

# The kinds a unit of each kind may hang under (None: the root).
PARENT_KINDS: dict[UnitKind, tuple[UnitKind | None, ...]] = {
    UnitKind.city_command_room: (None,),
    UnitKind.city_department: (UnitKind.city_command_room,),
    UnitKind.district_dispatch_room: (UnitKind.city_command_room,),
    UnitKind.district_function_group: (UnitKind.district_dispatch_room,),
    UnitKind.service_team: (UnitKind.district_dispatch_room,),
    UnitKind.service_group: (UnitKind.service_team,),
}

ROOM_KINDS = frozenset({UnitKind.city_command_room, UnitKind.district_dispatch_room})
# Units that can be the lead unit (牵头单位) of a problem at each tier above local.
LEAD_KINDS: dict[Tier, frozenset[UnitKind]] = {
    Tier.local: frozenset({UnitKind.service_group, UnitKind.service_team}),
    Tier.district: frozenset({UnitKind.district_function_group}),
    Tier.city: frozenset({UnitKind.city_department}),
}


@dataclass(frozen=True, slots=True)
class UnitRef:
    """What routing needs to know of a unit."""

    id: str
    name: str
    kind: UnitKind
    district_id: str | None
    parent_id: str | None
    path: str
    active: bool = True

    @property
    def tier(self) -> Tier:
        return TIER_OF_KIND[self.kind]

    @property
    def is_room(self) -> bool:
        return self.kind in ROOM_KINDS

    def ancestors(self) -> list[str]:
        """Ids from the root down to this unit's parent."""
        return self.path.split("/")[:-1]


def next_tier(tier: Tier) -> Tier | None:
    i = TIER_ORDER.index(tier)
    return TIER_ORDER[i + 1] if i + 1 < len(TIER_ORDER) else None
