"""The authorisation matrix: every route of the application × every role × a resource inside and
outside the key's scope, as real requests with real keys against a database holding a small city.

`MATRIX` classifies each route and method explicitly; the route table is read from the running
application (`app.routes`, Open311 and the documentation pages included), and a route that
`MATRIX` does not classify fails the test, so a new endpoint cannot arrive unclassified. A cell
is either `OK` (the request passes authorisation: a 2xx, or a refusal by the state or the input
that only an authorised caller can reach: 400, 409, 412, 422) or the exact status expected (401
no key, 403 the role may not, 404 outside the scope: existence does not leak).

Inside/outside: a problem of district D1, covered by the handler's service group, submitted by the
portal's key, against one of district D2 submitted by another portal; the same for enterprises
(D1/D2), webhook subscriptions (a unit of D1/D2) and their deliveries. Admins, commanders and
unbound viewers have no outside: for them both are inside.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi.routing import iter_route_contexts

from app.core.settings import Settings
from app.main import Services, create_app
from tests.conftest import ADMIN_KEY
from tests.factories import D1, D2, City, auth, build_city, enterprise_code, make_key

OK = "ok"
Outcome = str | int
ROLES = ("anonymous", "portal", "handler", "dispatcher", "commander", "admin", "viewer", "district_viewer")
KEYED = ROLES[1:]
# Roles whose scope is everything: for them "outside" is inside too.
UNBOUND = frozenset({"commander", "admin", "viewer"})
BOUND = frozenset({"portal", "handler", "dispatcher", "district_viewer"})
DENIALS = (401, 403, 404)


@dataclass(frozen=True)
class Access:
    inside: Mapping[str, Outcome]
    outside: Mapping[str, Outcome] | None = None  # None: the route addresses nothing scoped


def only(*roles: str, anonymous: Outcome = 401, **special: Outcome) -> dict[str, Outcome]:
    """`roles` pass, the other keys get 403, no key 401; `special` overrides single roles."""
    cells: dict[str, Outcome] = {role: (OK if role in roles else 403) for role in KEYED}
    return {"anonymous": anonymous, **cells, **special}


def public(outcome: Outcome = OK) -> Access:
    return Access(dict.fromkeys(ROLES, outcome))


ANY_KEY = Access(only(*KEYED))
ADMIN = Access(only("admin"))


def scoped(inside: dict[str, Outcome], hidden: frozenset[str] = BOUND, **outside: Outcome) -> Access:
    """Outside the scope the `hidden` roles get 404; the others as inside (unless `outside`)."""
    out = {role: (404 if role in hidden else cell) for role, cell in inside.items()}
    return Access(inside, {**out, **outside})


# -- the data ----------------------------------------------------------------------------------


@dataclass
class World:
    client: httpx.AsyncClient
    services: Services
    city: City
    keys: dict[str, str]
    problems: dict[str, str] = field(default_factory=dict)  # scope -> a problem nobody changes
    enterprises: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)  # scope -> a service group
    function_groups: dict[str, str] = field(default_factory=dict)
    webhooks: dict[str, str] = field(default_factory=dict)
    deliveries: dict[str, str] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def admin(self, method: str, path: str, **kw: Any) -> Any:
        response = await self.client.request(method, path, headers=auth(ADMIN_KEY), **kw)
        assert response.status_code < 300, f"set-up {method} {path}: {response.text}"
        return response.json() if response.content else None

    async def problem(self, scope: str) -> str:
        """A new problem: inside, of D1 by the portal; outside, of D2 by another portal."""
        portal = self.keys["portal"] if scope == "inside" else self.keys["other_portal"]
        body = {
            "enterprise_id": self.enterprises[scope],
            "category": "utilities",
            "title": "供电接入",
            "description": "新厂房需要双回路供电",
        }
        response = await self.client.post("/v1/problems", json=body, headers=auth(portal))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def n(self) -> int:
        return next(self.counter)


async def build_world(client: httpx.AsyncClient, services: Services) -> World:
    city = await build_city(services)
    keys = {
        "admin": ADMIN_KEY,
        "portal": await make_key(client, "portal", source="portal-in"),
        "other_portal": await make_key(client, "portal", source="portal-out"),
        "handler": await make_key(client, "handler", unit_id=city.groups[D1][0]),
        "dispatcher": await make_key(client, "dispatcher", district_id=D1),
        "commander": await make_key(client, "commander"),
        "viewer": await make_key(client, "viewer"),
        "district_viewer": await make_key(client, "viewer", district_id=D1),
    }
    world = World(client, services, city, keys)
    world.enterprises = {"inside": city.enterprise(D1, 0), "outside": city.enterprise(D2, 0)}
    world.units = {"inside": city.groups[D1][0], "outside": city.groups[D2][0]}
    world.function_groups = {"inside": city.function_groups[D1][0], "outside": city.function_groups[D2][0]}
    for scope in ("inside", "outside"):
        world.problems[scope] = await world.problem(scope)
        hook = await world.admin(
            "POST",
            "/v1/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "unit_id": world.units[scope]},
        )
        world.webhooks[scope] = hook["id"]
        world.deliveries[scope] = (await world.admin("POST", f"/v1/webhooks/{hook['id']}/test"))["id"]
    await world.admin("POST", "/v1/categories", json={"code": "matrix", "name": "矩阵"})
    return world


# -- the requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    scope: str  # "inside" or "outside"
    role: str
    expected: Outcome

    @property
    def changes(self) -> bool:
        """The request may change what it addresses: give it a resource of its own."""
        return self.expected == OK or self.expected not in DENIALS


Build = Callable[[World, Cell], Awaitable[dict[str, Any]]]


def fixed(**request: Any) -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        return dict(request)

    return build


def on_problem(command: str | None = None, body: dict[str, Any] | None = None, **params: Any) -> Build:
    """A request on a problem: a fresh one where the command may succeed, else the shared one."""

    async def build(world: World, cell: Cell) -> dict[str, Any]:
        fresh = command is not None and cell.changes and cell.role != "anonymous"
        pid = await world.problem(cell.scope) if fresh else world.problems[cell.scope]
        data = dict(body or {})
        if command == "assign":
            data["lead_unit_id"] = world.function_groups[cell.scope]
        path = f"/v1/problems/{pid}" + (f"/{command}" if command else "")
        return {"path": path, "json": data if command else None, "params": params or None}

    return build


def events_of_problem() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        return {"path": f"/v1/problems/{world.problems[cell.scope]}/events"}

    return build


def on_enterprise(json: dict[str, Any] | None = None) -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        return {"path": f"/v1/enterprises/{world.enterprises[cell.scope]}", "json": json}

    return build


def new_enterprise() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        district = D1 if cell.scope == "inside" else D2
        body = {
            "id": enterprise_code(district, 9000 + world.n()),
            "name": "矩阵测试企业",
            "district_id": district,
            "service_unit_id": world.units[cell.scope],
            "address": "测试路1号",
        }
        return {"json": body}

    return build


def new_problem() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        body = {
            "enterprise_id": world.enterprises[cell.scope],
            "category": "utilities",
            "title": "矩阵",
            "description": "矩阵测试",
        }
        return {"json": body}

    return build


def on_webhook(suffix: str = "", json: dict[str, Any] | None = None, fresh: bool = False) -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        hook = world.webhooks[cell.scope]
        if fresh and cell.changes and cell.role != "anonymous":
            made = await world.admin(
                "POST",
                "/v1/webhooks",
                json={
                    "url": "http://127.0.0.1:9/hook",
                    "event_types": ["*"],
                    "unit_id": world.units[cell.scope],
                },
            )
            hook = made["id"]
        return {"path": f"/v1/webhooks/{hook}{suffix}", "json": json}

    return build


def on_delivery(suffix: str = "") -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        hook, delivery = world.webhooks[cell.scope], world.deliveries[cell.scope]
        return {"path": f"/v1/webhooks/{hook}/deliveries/{delivery}{suffix}", "json": {} if suffix else None}

    return build


def new_webhook() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        body = {"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "unit_id": world.units[cell.scope]}
        return {"json": body}

    return build


def on_key(revoke: bool = False) -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        if revoke and cell.changes and cell.role != "anonymous":
            key_id = (await world.admin("POST", "/v1/api-keys", json={"name": "spare", "role": "viewer"}))[
                "id"
            ]
        else:
            key_id = (await world.client.get("/v1/me", headers=auth(world.keys["viewer"]))).json()["id"]
        return {"path": f"/v1/api-keys/{key_id}"}

    return build


def override(remove: bool = False) -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        if remove:
            await world.admin(
                "PUT", "/v1/calendar/overrides/2027-01-01", json={"working": False, "note": "元旦"}
            )
            return {"path": "/v1/calendar/overrides/2027-01-01"}
        return {"path": "/v1/calendar/overrides/2027-01-01", "json": {"working": False, "note": "元旦"}}

    return build


def open311_request() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        return {"path": f"/open311/v2/requests/{world.problems[cell.scope]}.json"}

    return build


def open311_post() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        form = {
            "service_code": "utilities",
            "address_string": "测试路1号",
            "attribute[enterprise_id]": world.enterprises[cell.scope],
            "description": "矩阵测试",
        }
        return {"path": "/open311/v2/requests.json", "data": form}

    return build


def open311_update() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        pid = await world.problem(cell.scope) if cell.changes else world.problems[cell.scope]
        form = {"service_request_id": pid, "description": "矩阵进展"}
        return {"path": "/open311/v2/servicerequestupdates.json", "data": form}

    return build


# -- the matrix --------------------------------------------------------------------------------

# Problems: who sees a problem (SPEC §6: outside the scope it does not exist, 404).
SEES = only(*KEYED)
# Problem commands on a problem at the local tier, held (as lead) by the handler's service group,
# submitted by the portal, in the dispatcher's district: the relations of `domain.relations` and
# the rights of `domain.RIGHTS`, written out per role.
LEAD = "handler"
ROOM = "dispatcher"  # the room of the local and district tiers is the district's
COMMANDS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "accept": ({}, ("admin", LEAD)),
    "escalate": ({"reason": "矩阵"}, ("admin", LEAD, ROOM)),
    "assign": ({}, ("admin", "commander", ROOM)),
    "return": ({"reason": "矩阵"}, ("admin", LEAD)),
    "decide-return": ({"accept": True}, ("admin", "commander", ROOM)),
    "progress": ({"note": "矩阵"}, ("admin", "commander", ROOM, LEAD)),
    "request-extension": ({"deadline": "2026-12-31", "reason": "矩阵"}, ("admin", LEAD)),
    "decide-extension": ({"approve": False}, ("admin", "commander", ROOM)),
    "defer": (
        {"explanation": "矩阵", "plan": [{"step": "一", "due_on": "2026-12-31"}], "review_on": "2026-12-31"},
        ("admin", "commander", ROOM, LEAD),
    ),
    "resume": ({}, ("admin", "commander", ROOM, LEAD)),
    "resolve": ({"resolution": "矩阵"}, ("admin", "commander", ROOM, LEAD)),
    # the enterprise's side: its portal, the reporting unit (谁发现谁跟踪), the rooms
    "feedback": ({"score": 5}, ("admin", "commander", ROOM, LEAD, "portal")),
    "reopen": ({"reason": "矩阵"}, ("admin", "commander", ROOM, LEAD, "portal")),
    "supervise": ({"note": "矩阵"}, ("admin", "commander", ROOM)),
    "withdraw": ({"reason": "矩阵"}, ("admin", "commander", ROOM, LEAD, "portal")),
    "close": ({"reason": "矩阵"}, ("admin",)),
}
PROBLEM_COMMANDS: dict[tuple[str, str], tuple[Access, Build]] = {
    ("POST", f"/v1/problems/{{problem_id}}/{name}"): (scoped(only(*roles)), on_problem(name, body))
    for name, (body, roles) in COMMANDS.items()
}
# Webhooks are for admin, commander, dispatcher and handler keys; a dispatcher's and a handler's
# subscriptions are those of its district or units (others: 404).
WEBHOOK_ROLES = ("admin", "commander", "dispatcher", "handler")
WEBHOOK = scoped(only(*WEBHOOK_ROLES), hidden=frozenset({"dispatcher", "handler"}))
# Enterprises: district roles see their district's, portals none (they name them by credit code).
ENTERPRISE = scoped(only(*KEYED, portal=404))


# The wall board: viewer, dispatcher, commander and admin keys (and board tokens, which are
# viewer keys); a district's key shows its district only (another's: 403; its problems: 404).
BOARD_ROLES = ("viewer", "district_viewer", "dispatcher", "commander", "admin")
BOARD_ISSUERS = ("admin", "commander", "dispatcher")
DISTRICT_BOUND = frozenset({"dispatcher", "district_viewer"})


def board_page(path: str) -> Build:
    """A board page narrowed to the district of the scope (D1 inside, D2 outside)."""

    async def build(world: World, cell: Cell) -> dict[str, Any]:
        return {"path": path, "params": {"district": D1 if cell.scope == "inside" else D2}}

    return build


def board_problem() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        return {"path": f"/board/problems/{world.problems[cell.scope]}"}

    return build


def board_session() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        return {"json": {"token": world.keys.get(cell.role, "")}}

    return build


def new_board_token() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        return {"json": {"name": "矩阵大屏", "district_id": D1 if cell.scope == "inside" else D2}}

    return build


def on_board_token() -> Build:
    async def build(world: World, cell: Cell) -> dict[str, Any]:
        district = D1 if cell.scope == "inside" else D2
        made = await world.admin(
            "POST", "/v1/board/tokens", json={"name": "矩阵大屏", "district_id": district}
        )
        return {"path": f"/v1/board/tokens/{made['id']}"}

    return build


BOARD = Access(
    only(*BOARD_ROLES, anonymous=401),
    only(*BOARD_ROLES, anonymous=401, dispatcher=403, district_viewer=403),
)

MATRIX: dict[tuple[str, str], tuple[Access, Build]] = {
    # operations and documentation: public
    ("GET", "/healthz"): (public(), fixed()),
    ("GET", "/readyz"): (public(), fixed()),
    ("GET", "/metrics"): (public(), fixed()),
    ("GET", "/errors"): (public(), fixed()),
    ("GET", "/errors/{code}"): (public(), fixed(path="/errors/not_found")),
    ("GET", "/openapi.json"): (public(), fixed()),
    ("GET", "/docs"): (public(), fixed()),
    ("GET", "/docs/oauth2-redirect"): (public(), fixed()),
    ("GET", "/redoc"): (public(), fixed()),
    # keys
    ("GET", "/v1/me"): (ANY_KEY, fixed()),
    ("GET", "/v1/api-keys"): (ADMIN, fixed()),
    ("POST", "/v1/api-keys"): (ADMIN, fixed(json={"name": "x", "role": "viewer"})),
    ("GET", "/v1/api-keys/{key_id}"): (ADMIN, on_key()),
    ("DELETE", "/v1/api-keys/{key_id}"): (ADMIN, on_key(revoke=True)),
    # the directory: any key reads the tree and the categories; admins change them; enterprises
    # are read in the district's scope and written by admins and the district's dispatcher
    ("GET", "/v1/units"): (ANY_KEY, fixed()),
    ("POST", "/v1/units"): (
        ADMIN,
        fixed(
            json={
                "id": "matrix-team",
                "name": "矩阵服务队",
                "kind": "service_team",
                "parent_id": "220102-room",
            }
        ),
    ),
    ("GET", "/v1/units/{unit_id}"): (ANY_KEY, fixed(path="/v1/units/220102-t1-g1")),
    ("PATCH", "/v1/units/{unit_id}"): (
        ADMIN,
        fixed(path="/v1/units/220102-t1-g2", json={"name": "矩阵服务组"}),
    ),
    ("GET", "/v1/enterprises"): (ANY_KEY, fixed()),
    ("POST", "/v1/enterprises"): (
        Access(only("admin", "dispatcher"), {**only("admin")}),
        new_enterprise(),
    ),
    ("GET", "/v1/enterprises/{enterprise_id}"): (ENTERPRISE, on_enterprise()),
    ("PATCH", "/v1/enterprises/{enterprise_id}"): (
        scoped(only("admin", "dispatcher"), hidden=frozenset({"dispatcher"})),
        on_enterprise({"address": "测试路2号"}),
    ),
    ("GET", "/v1/categories"): (ANY_KEY, fixed()),
    ("POST", "/v1/categories"): (ADMIN, fixed(json={"code": "matrix2", "name": "矩阵二"})),
    ("PATCH", "/v1/categories/{code}"): (ADMIN, fixed(path="/v1/categories/matrix", json={"name": "矩阵"})),
    # routing rules and the calendar: any key reads, admins change
    ("GET", "/v1/routing/rules"): (ANY_KEY, fixed()),
    ("PUT", "/v1/routing/rules"): (ADMIN, fixed(json={"note": "矩阵"})),
    ("GET", "/v1/routing/rules/history"): (ANY_KEY, fixed()),
    ("GET", "/v1/calendar"): (ANY_KEY, fixed(params={"from": "2026-11-01", "to": "2026-11-30"})),
    ("GET", "/v1/calendar/overrides"): (ANY_KEY, fixed()),
    ("PUT", "/v1/calendar/overrides/{day}"): (ADMIN, override()),
    ("DELETE", "/v1/calendar/overrides/{day}"): (ADMIN, override(remove=True)),
    # problems: submitted by portals, handlers, dispatchers, commanders, admins (viewers read
    # only); a district role submits for its district's enterprises only (else the enterprise
    # is unknown to it: 422 unknown_enterprise)
    ("POST", "/v1/problems"): (
        Access(
            only("portal", "handler", "dispatcher", "commander", "admin"),
            only("portal", "commander", "admin", handler=422, dispatcher=422),
        ),
        new_problem(),
    ),
    ("GET", "/v1/problems"): (ANY_KEY, fixed()),
    ("GET", "/v1/problems/{problem_id}"): (scoped(SEES), on_problem()),
    ("GET", "/v1/problems/{problem_id}/events"): (scoped(SEES), events_of_problem()),
    **PROBLEM_COMMANDS,
    # ledgers: admins import; every key exports what it sees
    ("POST", "/v1/imports"): (ADMIN, fixed(files={"file": ("ledger.csv", b"", "text/csv")})),
    ("GET", "/v1/problems/export"): (ANY_KEY, fixed(params={"format": "csv"})),
    # statistics: every key, in its scope
    ("GET", "/v1/stats/solve-rates"): (ANY_KEY, fixed()),
    ("GET", "/v1/stats/aging"): (ANY_KEY, fixed()),
    ("GET", "/v1/stats/rankings"): (ANY_KEY, fixed(params={"period": "2026-11"})),
    ("GET", "/v1/reports/dispatch"): (ANY_KEY, fixed(params={"period": "2026-11"})),
    # the feed: every key, in its scope
    ("GET", "/v1/events"): (ANY_KEY, fixed()),
    ("GET", "/v1/events/stream"): (ANY_KEY, fixed()),
    # webhooks
    ("POST", "/v1/webhooks"): (
        Access(only(*WEBHOOK_ROLES), only("admin", "commander")),
        new_webhook(),
    ),
    ("GET", "/v1/webhooks"): (Access(only(*WEBHOOK_ROLES)), fixed()),
    ("GET", "/v1/webhooks/{webhook_id}"): (WEBHOOK, on_webhook()),
    ("PATCH", "/v1/webhooks/{webhook_id}"): (WEBHOOK, on_webhook(json={"description": "矩阵"})),
    ("DELETE", "/v1/webhooks/{webhook_id}"): (WEBHOOK, on_webhook(fresh=True)),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): (WEBHOOK, on_webhook("/rotate-secret", json={})),
    ("POST", "/v1/webhooks/{webhook_id}/test"): (WEBHOOK, on_webhook("/test")),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): (WEBHOOK, on_webhook("/deliveries")),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}"): (WEBHOOK, on_delivery()),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): (WEBHOOK, on_delivery("/retry")),
    # Open311: reads are public (OPEN311_PUBLIC_READ, redacted without a covering key); a bad or
    # missing api_key is Open311's 403; no token is ever issued (realtime services)
    ("GET", "/open311/v2/discovery.{fmt}"): (public(), fixed(path="/open311/v2/discovery.json")),
    ("GET", "/open311/v2/services.{fmt}"): (public(), fixed(path="/open311/v2/services.json")),
    ("GET", "/open311/v2/services/{service_code}.{fmt}"): (
        public(),
        fixed(path="/open311/v2/services/utilities.json"),
    ),
    ("GET", "/open311/v2/service/{service_code}.{fmt}"): (
        public(),
        fixed(path="/open311/v2/service/utilities.json"),
    ),
    ("GET", "/open311/v2/tokens/{token}.{fmt}"): (public(404), fixed(path="/open311/v2/tokens/abc.json")),
    ("GET", "/open311/v2/requests.{fmt}"): (public(), fixed(path="/open311/v2/requests.json")),
    ("GET", "/open311/v2/requests/{service_request_id}.{fmt}"): (
        Access(public().inside, public().inside),
        open311_request(),
    ),
    ("POST", "/open311/v2/requests.{fmt}"): (
        Access(
            only("portal", "handler", "dispatcher", "commander", "admin", anonymous=403),
            only("portal", "commander", "admin", anonymous=403, handler=400, dispatcher=400),
        ),
        open311_post(),
    ),
    ("GET", "/open311/v2/servicerequestupdates.{fmt}"): (
        public(),
        fixed(path="/open311/v2/servicerequestupdates.json"),
    ),
    ("POST", "/open311/v2/servicerequestupdates.{fmt}"): (
        scoped(only("admin", "commander", ROOM, LEAD, anonymous=403)),
        open311_update(),
    ),
    # the wall board (docs/board.md)
    ("GET", "/board"): (
        Access(
            only(*BOARD_ROLES, anonymous=303),
            only(*BOARD_ROLES, anonymous=303, dispatcher=403, district_viewer=403),
        ),
        board_page("/board"),
    ),
    ("GET", "/board/panels/{name}"): (BOARD, board_page("/board/panels/headline")),
    ("GET", "/board/stream"): (BOARD, board_page("/board/stream")),
    ("GET", "/board/problems/{problem_id}"): (
        scoped(only(*BOARD_ROLES), hidden=DISTRICT_BOUND),
        board_problem(),
    ),
    ("GET", "/board/open"): (public(), fixed()),
    ("GET", "/board/static/{name}"): (public(), fixed(path="/board/static/board.css")),
    ("POST", "/board/session"): (Access(only(*BOARD_ROLES)), board_session()),
    ("POST", "/board/logout"): (public(303), fixed()),
    ("POST", "/v1/board/tokens"): (
        Access(only(*BOARD_ISSUERS), only(*BOARD_ISSUERS, dispatcher=403)),
        new_board_token(),
    ),
    ("GET", "/v1/board/tokens"): (Access(only(*BOARD_ISSUERS)), fixed()),
    ("DELETE", "/v1/board/tokens/{token_id}"): (
        scoped(only(*BOARD_ISSUERS), hidden=frozenset({"dispatcher"})),
        on_board_token(),
    ),
}


# What answers without a key, said once more on its own: a route that starts answering
# anonymous callers (or stops) must change this list too.
PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/errors"),
    ("GET", "/errors/{code}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/open311/v2/discovery.{fmt}"),
    ("GET", "/open311/v2/services.{fmt}"),
    ("GET", "/open311/v2/services/{service_code}.{fmt}"),
    ("GET", "/open311/v2/service/{service_code}.{fmt}"),
    ("GET", "/open311/v2/tokens/{token}.{fmt}"),
    ("GET", "/open311/v2/requests.{fmt}"),
    ("GET", "/open311/v2/requests/{service_request_id}.{fmt}"),
    ("GET", "/open311/v2/servicerequestupdates.{fmt}"),
    ("GET", "/board"),  # 303 to /board/open
    ("GET", "/board/open"),
    ("GET", "/board/static/{name}"),
    ("POST", "/board/logout"),
}


def route_table(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the application serves (HEAD goes with GET)."""
    table = set()
    for route in iter_route_contexts(app.routes):
        path = route.path
        if path is None:
            continue
        for method in route.methods or {"GET"}:
            if method != "HEAD":
                table.add((method, path))
    return table


# -- running it --------------------------------------------------------------------------------


def test_every_route_is_classified() -> None:
    """A route the matrix does not know fails here: classify it in `MATRIX` (and say who may
    call it); an entry for a route that no longer exists fails too."""
    served = route_table(create_app(Settings(environment="test")))
    unclassified = sorted(served - MATRIX.keys())
    assert not unclassified, f"routes missing from the authorisation matrix: {unclassified}"
    stale = sorted(MATRIX.keys() - served)
    assert not stale, f"matrix entries for routes that do not exist: {stale}"
    anonymous = {
        route for route, (access, _) in MATRIX.items() if access.inside["anonymous"] not in (401, 403)
    }
    assert anonymous == PUBLIC_ROUTES


async def _stream_status(app: Any, path: str, headers: dict[str, str], query: dict[str, str]) -> int:
    """The status of an endless response (Server-Sent Events): read the start, then hang up."""
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    hang_up = asyncio.Event()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": urlencode(query).encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and not started.done():
            started.set_result(message["status"])
            hang_up.set()

    task = asyncio.create_task(app(scope, receive, send))
    try:
        return await asyncio.wait_for(started, 10)
    finally:
        await asyncio.wait_for(task, 10)


async def _send(world: World, app: Any, method: str, role: str, request: dict[str, Any], path: str) -> int:
    key = world.keys.get(role)
    headers: dict[str, str] = {}
    params = dict(request.get("params") or {})
    data = request.get("data")
    if path.startswith("/open311/"):
        if key is not None:
            if data is not None:
                data = {**data, "api_key": key}
            else:
                params["api_key"] = key
    elif key is not None:
        headers = auth(key)
    if path in ("/v1/events/stream", "/board/stream"):
        return await _stream_status(app, path, headers, {"heartbeat": "0.2", **params})
    response = await world.client.request(
        method,
        path,
        headers=headers,
        params=params or None,
        json=request.get("json"),
        data=data,
        files=request.get("files"),
    )
    return response.status_code


def _matches(expected: Outcome, status: int) -> bool:
    if expected == OK:
        return status < 300 or status in (400, 409, 412, 422)
    return status == expected


async def test_the_authorisation_matrix(app: Any, services: Services) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        world = await build_world(client, services)
        failures: list[str] = []
        checked = 0
        for (method, template), (access, build) in MATRIX.items():
            scopes = [("inside", access.inside)]
            if access.outside is not None:
                scopes.append(("outside", access.outside))
            for scope, cells in scopes:
                assert set(cells) == set(ROLES), f"{method} {template}: every role needs a cell"
                for role in ROLES:
                    cell = Cell(scope, role, cells[role])
                    request = await build(world, cell)
                    path = request.get("path") or template
                    status = await _send(world, app, method, role, request, path)
                    checked += 1
                    if status >= 500 or not _matches(cell.expected, status):
                        failures.append(
                            f"{method} {template} [{scope}] {role}: {status}, expected {cell.expected}"
                        )
        assert not failures, f"{len(failures)} of {checked} cells differ:\n" + "\n".join(failures)
        assert checked > 900
