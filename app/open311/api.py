"""The Open311 GeoReport v2 endpoints under `/open311/v2/`, in `.json` and `.xml`.

Categories are the services; problems are the service requests. Reads are public unless
`OPEN311_PUBLIC_READ=false`: without a key they show the Open311 fields but withhold the
description and the enterprise's identity; an `api_key` query parameter whose scope covers a
problem shows them. `POST requests` authenticates with the `api_key` form field (the query
parameter is tolerated: some clients put it there) and goes through the same command service as
`POST /v1/problems`; the service definition's required attribute `enterprise_id` names the
enterprise. Extensions: `page`/`page_size`, `extensions=true` (the update history),
`servicerequestupdates` (mySociety's), and the singular `service/{code}` path one widely used
client asks for. Errors are Open311's (`render.py`), never problem+json.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, time, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from app.core.errors import AppError
from app.core.requestmeta import RequestMeta
from app.core.security import Caller, Role, authenticate
from app.core.settings import Settings
from app.directory.tables import categories
from app.events import RecordedEvent
from app.open311 import requests as rq
from app.open311.render import Open311Error, check_format, render, to_xml
from app.problems import domain
from app.problems.schemas import SubmitIn
from app.problems.service import ProblemService, stream_id

router = APIRouter(prefix="/open311/v2", tags=["open311"])

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-11-21T00:00:00+08:00"  # when this endpoint's interface last changed
GROUP = "助企问题"

Fmt = Annotated[str, Path(description="`json` or `xml`.", examples=["json"])]
Jurisdiction = Annotated[
    str | None,
    Query(description="Optional; when given it must be this endpoint's jurisdiction (else 404)."),
]
ApiKeyQuery = Annotated[
    str | None,
    Query(description="Optional on reads: a key whose scope covers a problem shows it in full."),
]


def _responses(*codes: int, root: str, example: Any) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries: the success body in both formats, and Open311's error arrays."""
    described = {400: "Bad request", 403: "Bad or missing api_key", 404: "Not found"}
    out: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "JSON or XML, by the path's suffix",
            "content": {
                "application/json": {"example": example},
                "text/xml": {"schema": {"type": "string"}, "example": to_xml(root, example).decode()},
            },
        }
    }
    for code in codes:
        error = [{"code": code, "description": described[code]}]
        out[code] = {
            "description": described[code],
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Open311Errors"},
                    "example": error,
                },
                "text/xml": {"schema": {"type": "string"}, "example": to_xml("errors", error).decode()},
            },
        }
    return out


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _blank(value: str | None) -> str | None:
    """An empty parameter behaves as an absent one."""
    return value if value is not None and value.strip() != "" else None


def _jurisdiction(request: Request, value: str | None) -> None:
    value = _blank(value)
    expected = _settings(request).open311_jurisdiction_id
    if value is not None and value != expected:
        raise Open311Error(404, f"unknown jurisdiction_id {value!r}; this endpoint serves {expected!r}")


async def _caller(request: Request, key: str | None) -> Caller | None:
    key = _blank(key)
    if key is None:
        return None
    caller = await authenticate(request.app.state.db, key)
    if caller is None:
        raise Open311Error(403, "the api_key is unknown or revoked")
    return caller


async def _reader(request: Request, key: str | None) -> tuple[Caller | None, frozenset[str], bool]:
    """(caller or None, handler subtree, public reads on)."""
    public = _settings(request).open311_public_read
    caller = await _caller(request, key)
    if caller is None and not public:
        raise Open311Error(403, "an api_key is required to read (OPEN311_PUBLIC_READ is off)")
    subtree: frozenset[str] = frozenset()
    if caller is not None:
        subtree = (await request.app.state.problems.actor(caller)).subtree
    return caller, subtree, public


def _instant(value: str | None, name: str, tz: Any, *, end: bool = False) -> datetime | None:
    value = _blank(value)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(
            value.strip().replace(" ", "T") if "T" not in value else value.strip()
        )
    except ValueError:
        raise Open311Error(400, f"{name} must be a W3C datetime, e.g. 2026-11-01T00:00:00+08:00") from None
    if len(value.strip()) == 10 and end:  # a date as an upper bound includes that day
        parsed = datetime.combine(parsed.date(), time.max)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def _window(request: Request, start: str | None, end: str | None) -> rq.Window:
    tz = _settings(request).tz
    first = _instant(start, "start_date", tz)
    last = _instant(end, "end_date", tz, end=True)
    now: datetime = request.app.state.clock.now()
    if first is None and last is None:
        return rq.Window(now - rq.DEFAULT_SPAN, now)
    if first is None:
        assert last is not None
        first = last - rq.DEFAULT_SPAN
    if last is None:
        last = first + rq.DEFAULT_SPAN
    if last < first:
        raise Open311Error(400, "end_date lies before start_date")
    if last - first > rq.DEFAULT_SPAN + timedelta(days=1):
        raise Open311Error(400, "start_date and end_date may span at most 90 days")
    return rq.Window(first, last)


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    value = _blank(value)
    if value is None:
        return default
    if not value.strip().isdigit() or not low <= int(value) <= high:
        raise Open311Error(400, f"{name} must be a whole number from {low} to {high}")
    return int(value)


def _list(value: str | None) -> tuple[str, ...]:
    value = _blank(value)
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip())) if value else ()


def _extensions(value: str | None) -> bool:
    value = _blank(value)
    return value is not None and value.lower() in ("true", "1", "yes")


# -- discovery and services ----------------------------------------------------------------------

DISCOVERY_EXAMPLE = {
    "changeset": CHANGESET,
    "contact": "长春市助企调度室",
    "key_service": "Keys are issued by the dispatch room: POST /v1/api-keys (role portal).",
    "endpoints": [
        {
            "specification": SPECIFICATION,
            "url": "http://127.0.0.1:8000/open311/v2",
            "changeset": CHANGESET,
            "type": "production",
            "formats": ["application/json", "text/xml"],
        }
    ],
}


@router.get(
    "/discovery.{fmt}",
    operation_id="open311_discovery",
    summary="Open311 service discovery",
    responses=_responses(404, root="discovery", example=DISCOVERY_EXAMPLE),
)
async def discovery(request: Request, fmt: Fmt) -> Response:
    """Where this endpoint is and what it speaks (GeoReport v2, JSON and XML)."""
    fmt = check_format(fmt)
    settings = _settings(request)
    base = str(request.base_url).rstrip("/") + "/open311/v2"
    body = {
        "changeset": CHANGESET,
        "contact": f"{settings.city_name}助企调度室 (API documentation: /docs)",
        "key_service": "Keys are issued by the dispatch room: POST /v1/api-keys with role portal "
        "(or `dispatchroom keys create --role portal`).",
        "endpoints": [
            {
                "specification": SPECIFICATION,
                "url": base,
                "changeset": CHANGESET,
                "type": "production" if settings.environment == "production" else "test",
                "formats": ["application/json", "text/xml"],
            }
        ],
    }
    return render(fmt, "discovery", body)


def _service(row: Any) -> dict[str, Any]:
    keywords = [k for k in re.split(r"[、,，;；\s]+", row.description or "") if k]
    return {
        "service_code": row.code,
        "service_name": row.name,
        "description": row.description,
        "metadata": True,
        "type": "realtime",
        "keywords": ",".join(keywords),
        "group": GROUP,
    }


SERVICE_EXAMPLE = {
    "service_code": "utilities",
    "service_name": "水电气暖",
    "description": "供电、供水、供气、供暖、通信接入",
    "metadata": True,
    "type": "realtime",
    "keywords": "供电,供水,供气,供暖,通信接入",
    "group": GROUP,
}


@router.get(
    "/services.{fmt}",
    operation_id="open311_list_services",
    summary="Open311 services (the problem categories)",
    responses=_responses(404, root="services", example=[SERVICE_EXAMPLE]),
)
async def list_services(request: Request, fmt: Fmt, jurisdiction_id: Jurisdiction = None) -> Response:
    """Every active category as a `realtime` service (the request id is returned at once).
    `metadata` is true: each service has a definition with the required attribute `enterprise_id`."""
    fmt = check_format(fmt)
    _jurisdiction(request, jurisdiction_id)
    async with request.app.state.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(categories).where(categories.c.active.is_(True)).order_by(categories.c.code)
            )
        ).all()
    return render(fmt, "services", [_service(r) for r in rows])


def definition(code: str) -> dict[str, Any]:
    return {
        "service_code": code,
        "attributes": [
            {
                "variable": True,
                "code": "enterprise_id",
                "datatype": "string",
                "required": True,
                "datatype_description": "18 位统一社会信用代码 (unified social credit code)",
                "order": 1,
                "description": "反映问题的企业 (the enterprise; it must be registered)",
                "values": [],
            },
            {
                "variable": True,
                "code": "urgency",
                "datatype": "singlevaluelist",
                "required": False,
                "datatype_description": "normal 或 urgent (default normal)",
                "order": 2,
                "description": "紧急程度 (urgent halves the deadline)",
                "values": [{"key": "normal", "name": "一般"}, {"key": "urgent", "name": "紧急"}],
            },
            {
                "variable": True,
                "code": "title",
                "datatype": "string",
                "required": False,
                "datatype_description": "至多 200 字 (default: the description's first sentence)",
                "order": 3,
                "description": "问题标题",
                "values": [],
            },
        ],
    }


async def _definition(request: Request, fmt: str, service_code: str, jurisdiction_id: str | None) -> Response:
    fmt = check_format(fmt)
    _jurisdiction(request, jurisdiction_id)
    category = await request.app.state.directory.category(service_code)
    if category is None or not category.active:
        raise Open311Error(404, f"no service {service_code!r}")
    return render(fmt, "service_definition", definition(category.code))


@router.get(
    "/services/{service_code}.{fmt}",
    operation_id="open311_get_service_definition",
    summary="Open311 service definition",
    responses=_responses(404, root="service_definition", example=definition("utilities")),
)
async def get_service_definition(
    request: Request,
    service_code: Annotated[str, Path(max_length=64, examples=["utilities"])],
    fmt: Fmt,
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    """The attributes a request of this service takes: `enterprise_id` (required, the
    enterprise's credit code), `urgency` and `title`."""
    return await _definition(request, fmt, service_code, jurisdiction_id)


@router.get("/service/{service_code}.{fmt}", include_in_schema=False)
async def get_service_definition_singular(
    request: Request, service_code: str, fmt: str, jurisdiction_id: str | None = None
) -> Response:
    """The singular path the `open311` Python client asks for (against the spec): an alias."""
    return await _definition(request, fmt, service_code, jurisdiction_id)


@router.get(
    "/tokens/{token}.{fmt}",
    operation_id="open311_get_token",
    summary="Open311 token lookup",
    responses=_responses(404, root="service_requests", example=[{"service_request_id": "…", "token": "…"}]),
)
async def get_token(request: Request, token: str, fmt: Fmt, jurisdiction_id: Jurisdiction = None) -> Response:
    """Every service is `realtime`: a POST returns the request id at once and no token is ever
    issued, so every token is unknown (404)."""
    check_format(fmt)
    _jurisdiction(request, jurisdiction_id)
    raise Open311Error(404, f"no token {token!r}: this endpoint's services are realtime")


# -- requests ------------------------------------------------------------------------------------

REQUEST_EXAMPLE = {
    "service_request_id": "6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30",
    "status": "open",
    "status_notes": "已交办牵头单位",
    "service_name": "水电气暖",
    "service_code": "utilities",
    "description": None,
    "agency_responsible": "南关区要素保障组",
    "service_notice": "区调度室办理中，限 2026-12-04 前办结",
    "requested_datetime": "2026-11-15T09:30:00+08:00",
    "updated_datetime": "2026-11-16T10:00:00+08:00",
    "expected_datetime": "2026-12-04T23:59:59+08:00",
    "address": "长春市南关区人民大街 1000 号",
    "address_id": None,
    "zipcode": None,
    "lat": 43.8868,
    "long": 125.3245,
    "media_url": None,
}


async def _requests_response(
    request: Request, fmt: str, query: rq.RequestQuery, api_key: str | None, extensions: bool
) -> list[dict[str, Any]]:
    caller, subtree, public = await _reader(request, api_key)
    tz = _settings(request).tz
    async with request.app.state.db.read() as conn:
        rows = await rq.find_requests(conn, query, caller=caller, subtree=subtree, public=public)
        history = await rq.history(conn, rows, latest_only=not extensions)
    return [rq.request_fields(r, history.get(r.id, []), tz, extensions=extensions) for r in rows]


@router.get(
    "/requests.{fmt}",
    operation_id="open311_list_requests",
    summary="Open311 service requests (problems)",
    responses=_responses(400, 403, 404, root="service_requests", example=[REQUEST_EXAMPLE]),
)
async def list_requests(
    request: Request,
    fmt: Fmt,
    service_request_id: Annotated[
        str | None, Query(description="Comma list of ids; overrides every other filter.")
    ] = None,
    service_code: Annotated[str | None, Query(description="Comma list of service codes.")] = None,
    start_date: Annotated[
        str | None, Query(description="Earliest `requested_datetime` (W3C datetime).")
    ] = None,
    end_date: Annotated[
        str | None, Query(description="Latest `requested_datetime`; 90 days at most.")
    ] = None,
    status: Annotated[str | None, Query(description="`open`, `closed` or both, comma separated.")] = None,
    page: Annotated[str | None, Query(description="Extension: page number, from 1.")] = None,
    page_size: Annotated[str | None, Query(description="Extension: 1–1000 (default 1000).")] = None,
    extensions: Annotated[
        str | None, Query(description="`true`: add `attributes`, `extended_attributes`, `notes`.")
    ] = None,
    jurisdiction_id: Jurisdiction = None,
    api_key: ApiKeyQuery = None,
) -> Response:
    """Problems, newest first. Without `start_date`/`end_date` the last 90 days; at most 1000
    per page. `status`: `closed` means resolved, closed or withdrawn."""
    fmt = check_format(fmt)
    _jurisdiction(request, jurisdiction_id)
    ids = _list(service_request_id)
    if len(ids) > rq.MAX_RESULTS:
        raise Open311Error(400, f"at most {rq.MAX_RESULTS} service_request_id values")
    if ids:
        query = rq.RequestQuery(ids=tuple(i for i in ids if _is_id(i)))
    else:
        statuses = _list(status)
        bad = [s for s in statuses if s not in ("open", "closed")]
        if bad:
            raise Open311Error(400, f"unknown status {', '.join(bad)}: use open or closed")
        query = rq.RequestQuery(
            service_codes=_list(service_code),
            statuses=statuses,
            window=_window(request, start_date, end_date),
            page=_int(page, "page", 1, 1, 1_000_000),
            page_size=_int(page_size, "page_size", rq.MAX_RESULTS, 1, rq.MAX_RESULTS),
        )
    items = await _requests_response(request, fmt, query, api_key, _extensions(extensions))
    return render(fmt, "service_requests", items)


def _is_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@router.get(
    "/requests/{service_request_id}.{fmt}",
    operation_id="open311_get_request",
    summary="One Open311 service request",
    responses=_responses(400, 403, 404, root="service_requests", example=[REQUEST_EXAMPLE]),
)
async def get_request(
    request: Request,
    service_request_id: Annotated[str, Path(max_length=64)],
    fmt: Fmt,
    extensions: Annotated[str | None, Query(description="`true`: add the update history.")] = None,
    jurisdiction_id: Jurisdiction = None,
    api_key: ApiKeyQuery = None,
) -> Response:
    """An array of one request (as the spec's clients expect)."""
    fmt = check_format(fmt)
    _jurisdiction(request, jurisdiction_id)
    items = []
    if _is_id(service_request_id):
        query = rq.RequestQuery(ids=(service_request_id,))
        items = await _requests_response(request, fmt, query, api_key, _extensions(extensions))
    else:
        await _reader(request, api_key)
    if not items:
        raise Open311Error(404, f"no service request {service_request_id!r}")
    return render(fmt, "service_requests", items)


FORM_FIELDS = (
    "api_key",
    "jurisdiction_id",
    "service_code",
    "lat",
    "long",
    "address_string",
    "address_id",
    "email",
    "device_id",
    "account_id",
    "first_name",
    "last_name",
    "phone",
    "description",
    "media_url",
)
POST_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["api_key", "service_code", "attribute[enterprise_id]"],
                "properties": {
                    **{name: {"type": "string"} for name in FORM_FIELDS},
                    "attribute[enterprise_id]": {"type": "string", "description": "Credit code."},
                    "attribute[urgency]": {"type": "string", "enum": ["normal", "urgent"]},
                    "attribute[title]": {"type": "string"},
                },
            },
            "example": {
                "api_key": "dr_…",
                "service_code": "utilities",
                "attribute[enterprise_id]": "91220102MA17W1P07X",
                "address_string": "长春市南关区人民大街 1000 号",
                "lat": "43.8868",
                "long": "125.3245",
                "description": "新建厂房需要双回路供电，申请已提交三个月未获答复。",
                "first_name": "伟",
                "last_name": "张",
                "phone": "0431-88888888",
            },
        }
    },
}


def _form(form: FormData, request: Request, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return _blank(request.query_params.get(name))


def _float(value: str | None, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise Open311Error(400, f"{name} must be a number") from None
    if not low <= number <= high:
        raise Open311Error(400, f"{name} must lie between {low} and {high}")
    return number


def _title(explicit: str | None, description: str | None, fallback: str) -> str:
    if explicit:
        return explicit
    if description:
        first = re.split(r"[。！？!?\n]", description.strip(), maxsplit=1)[0].strip()
        if first:
            return first[:60]
    return fallback


def _validation(exc: ValidationError) -> Open311Error:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return Open311Error(400, f"{where}: {first.get('msg', 'invalid')}")


def _meta(request: Request, causation_id: str | None = None) -> RequestMeta:
    return RequestMeta(
        request_id=getattr(request.state, "request_id", None),
        correlation_id=request.headers.get("x-correlation-id") or None,
        causation_id=causation_id or request.headers.get("x-causation-id") or None,
    )


async def _poster(request: Request, form: FormData) -> Caller:
    key = _form(form, request, "api_key")
    if key is None:
        raise Open311Error(403, "an api_key is required to post")
    caller = await _caller(request, key)
    assert caller is not None
    return caller


@router.post(
    "/requests.{fmt}",
    operation_id="open311_create_request",
    summary="Submit an Open311 service request (a problem)",
    openapi_extra={"requestBody": POST_REQUEST_BODY},
    responses=_responses(
        400,
        403,
        404,
        root="service_requests",
        example=[
            {
                "service_request_id": "6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30",
                "service_notice": "已受理，由南关区第一服务组办理，限 2026-11-19 前办结",
                "account_id": None,
            }
        ],
    ),
)
async def create_request(request: Request, fmt: Fmt) -> Response:
    """Form-encoded. Needs `api_key` (a key that may submit: portal, handler, dispatcher,
    commander, admin), `service_code`, a location (`lat`+`long`, `address_string` or
    `address_id`) and `attribute[enterprise_id]`; `description` at most 4000 characters.
    Returns the new `service_request_id` at once (the services are realtime). An
    `Idempotency-Key` header works as on `POST /v1/problems`."""
    fmt = check_format(fmt)
    form = await request.form()
    caller = await _poster(request, form)
    _jurisdiction(request, _form(form, request, "jurisdiction_id"))
    code = _form(form, request, "service_code")
    if code is None:
        raise Open311Error(400, "service_code is required")
    category = await request.app.state.directory.category(code)
    if category is None or not category.active:
        raise Open311Error(404, f"no service {code!r}")
    lat = _float(_form(form, request, "lat"), "lat", -90, 90)
    long = _float(_form(form, request, "long"), "long", -180, 180)
    if (lat is None) != (long is None):
        raise Open311Error(400, "lat and long go together")
    address = _form(form, request, "address_string")
    address_id = _form(form, request, "address_id")
    if lat is None and address is None and address_id is None:
        raise Open311Error(400, "a location is required: lat and long, address_string or address_id")
    enterprise_id = _form(form, request, "attribute[enterprise_id]")
    if enterprise_id is None:
        raise Open311Error(400, "attribute[enterprise_id] is required (the enterprise's credit code)")
    urgency = _form(form, request, "attribute[urgency]") or "normal"
    if urgency not in ("normal", "urgent"):
        raise Open311Error(400, "attribute[urgency] must be normal or urgent")
    description = _form(form, request, "description")
    if description is not None and len(description) > 4000:
        raise Open311Error(400, "description may have at most 4000 characters")
    name = " ".join(p for p in (_form(form, request, "last_name"), _form(form, request, "first_name")) if p)
    contact = {
        k: v
        for k, v in (
            ("name", name or None),
            ("phone", _form(form, request, "phone")),
            ("email", _form(form, request, "email")),
        )
        if v
    }
    location = {
        k: v
        for k, v in (("address", address), ("address_id", address_id), ("lat", lat), ("long", long))
        if v is not None
    }
    try:
        body = SubmitIn.model_validate(
            {
                "enterprise_id": enterprise_id,
                "category": category.code,
                "title": _title(_form(form, request, "attribute[title]"), description, category.name),
                "description": description or f"{category.name}（通过 Open311 提交，未附说明）",
                "urgency": urgency,
                "source": None if caller.role is Role.portal else "open311",
                "location": location,
                "media_url": _form(form, request, "media_url"),
                "contact": contact or None,
            }
        )
    except ValidationError as exc:
        raise _validation(exc) from None
    service: ProblemService = request.app.state.problems
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > 200:
        raise Open311Error(400, "Idempotency-Key may have at most 200 characters")
    state, _ = await service.submit(caller, body, _meta(request), idempotency_key=key)
    holder = await request.app.state.directory.unit(state.holder_unit_id) if state.holder_unit_id else None
    deadline = state.deadline.astimezone(_settings(request).tz) if state.deadline else None
    notice = "已受理" + (f"，由{holder.name}办理" if holder else "")
    if deadline is not None:
        notice += f"，限 {deadline:%Y-%m-%d} 前办结"
    item = {
        "service_request_id": state.id,
        "service_notice": notice,
        "account_id": _form(form, request, "account_id"),
    }
    return render(fmt, "service_requests", [item])


# -- updates (mySociety's extension) -----------------------------------------------------------

UPDATE_EXAMPLE = {
    "update_id": "0b9f3c1e-7a51-4a55-8f2e-1d2c3b4a5f60",
    "service_request_id": "6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30",
    "status": "fixed",
    "updated_datetime": "2026-11-20T15:00:00+08:00",
    "description": "已办结",
    "media_url": None,
    "external_status_code": "resolved",
}


@router.get(
    "/servicerequestupdates.{fmt}",
    operation_id="open311_list_request_updates",
    summary="Open311 updates of service requests (extension)",
    responses=_responses(400, 403, 404, root="service_request_updates", example=[UPDATE_EXAMPLE]),
)
async def list_request_updates(
    request: Request,
    fmt: Fmt,
    start_date: Annotated[str | None, Query(description="Earliest update (W3C datetime).")] = None,
    end_date: Annotated[str | None, Query(description="Latest update; 90 days at most.")] = None,
    service_request_id: Annotated[str | None, Query(description="Comma list: only these requests.")] = None,
    page: Annotated[str | None, Query(description="Page number, from 1.")] = None,
    page_size: Annotated[str | None, Query(description="1–1000 (default 1000).")] = None,
    jurisdiction_id: Jurisdiction = None,
    api_key: ApiKeyQuery = None,
) -> Response:
    """mySociety's `servicerequestupdates`: what happened to problems (accepted, escalated,
    assigned, progress, resolved, feedback, closed …), oldest first. `status` is one of the
    extended statuses (`in_progress`, `fixed`, `closed`, `reopen`, …); `external_status_code`
    names Dispatchroom's event. Default window: the last 90 days."""
    fmt = check_format(fmt)
    _jurisdiction(request, jurisdiction_id)
    caller, subtree, public = await _reader(request, api_key)
    query = rq.UpdateQuery(
        window=_window(request, start_date, end_date),
        ids=tuple(i for i in _list(service_request_id) if _is_id(i)),
        page=_int(page, "page", 1, 1, 1_000_000),
        page_size=_int(page_size, "page_size", rq.MAX_RESULTS, 1, rq.MAX_RESULTS),
    )
    tz = _settings(request).tz
    async with request.app.state.db.read() as conn:
        rows = await rq.find_updates(conn, query, caller=caller, subtree=subtree, public=public)
    return render(fmt, "service_request_updates", [rq.update_fields(r, tz) for r in rows])


EXTENDED_STATUSES = frozenset(
    {
        "open",
        "investigating",
        "in_progress",
        "action_scheduled",
        "no_further_action",
        "not_councils_responsibility",
        "duplicate",
        "internal_referral",
        "for_triage",
        "fixed",
        "closed",
        "cancelled",
        "reopen",
    }
)


@router.post(
    "/servicerequestupdates.{fmt}",
    operation_id="open311_create_request_update",
    summary="Push an update to an Open311 service request (extension)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["api_key", "service_request_id", "description"],
                        "properties": {
                            name: {"type": "string"}
                            for name in (
                                "api_key",
                                "jurisdiction_id",
                                "service_request_id",
                                "update_id",
                                "status",
                                "updated_datetime",
                                "description",
                                "score",
                                "first_name",
                                "last_name",
                                "email",
                                "phone",
                                "media_url",
                            )
                        },
                    },
                    "example": {
                        "api_key": "dr_…",
                        "service_request_id": "6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30",
                        "update_id": "portal-update-881",
                        "status": "closed",
                        "description": "问题已解决，非常满意",
                        "score": "5",
                    },
                }
            },
        }
    },
    responses=_responses(400, 403, 404, root="service_request_updates", example=[UPDATE_EXAMPLE]),
)
async def create_request_update(request: Request, fmt: Fmt) -> Response:
    """What a pushed update means here: with `score` (1–5, an extension) it is **the
    enterprise's feedback** (回访) on a resolved problem: 4–5 close it, 1–3 reopen it; the
    description is the comment (at most 500 characters). Without `score` it is **a progress
    note** (the `progress` command), which only keys that may report progress on the problem can
    push (its units, its rooms, commanders, admins). `status` is optional and informational (one
    of mySociety's extended statuses); it never moves the problem by itself. `update_id` makes
    the push idempotent per key: the same id again returns the first update. The update's time
    is the time it arrives."""
    fmt = check_format(fmt)
    form = await request.form()
    caller = await _poster(request, form)
    _jurisdiction(request, _form(form, request, "jurisdiction_id"))
    problem_id = _form(form, request, "service_request_id")
    if problem_id is None:
        raise Open311Error(400, "service_request_id is required")
    if not _is_id(problem_id):
        raise Open311Error(404, f"no service request {problem_id!r}")
    description = _form(form, request, "description")
    if description is None:
        raise Open311Error(400, "description is required")
    if len(description) > 4000:
        raise Open311Error(400, "description may have at most 4000 characters")
    status = _form(form, request, "status")
    if status is not None and status.lower() not in EXTENDED_STATUSES:
        raise Open311Error(400, f"unknown status {status!r}")
    score_text = _form(form, request, "score")
    score = _int(score_text, "score", 0, 1, 5) if score_text is not None else None
    update_id = _form(form, request, "update_id")
    if update_id is not None and len(update_id) > 100:
        raise Open311Error(400, "update_id may have at most 100 characters")
    causation = f"open311-update:{update_id}" if update_id else None

    service: ProblemService = request.app.state.problems
    if causation is not None:
        earlier = await _earlier_update(request, problem_id, caller, causation)
        if earlier is not None:
            return render(fmt, "service_request_updates", [earlier])
    command: domain.Command
    if score is not None:
        if len(description) > 500:
            raise Open311Error(400, "feedback comments may have at most 500 characters")
        command = domain.Feedback(score=score, comment=description)
    else:
        command = domain.Progress(note=description)
    before = await service.get(caller, problem_id)
    try:
        state = await service.execute(caller, problem_id, lambda _: command, meta=_meta(request, causation))
    except AppError as exc:
        if exc.code == "not_permitted" and score is None:
            raise Open311Error(
                403, "this key may not report progress on the problem; the enterprise's feedback needs score"
            ) from None
        raise
    recorded = await request.app.state.store.read_stream(stream_id(problem_id), after_version=before.version)
    ours = next((e for e in recorded if e.metadata.get("actor") == caller.key_id), recorded[0])
    assert state.version >= ours.stream_version
    item = _update_item(ours, problem_id, _settings(request).tz, description)
    return render(fmt, "service_request_updates", [item])


def _update_item(event: RecordedEvent, problem_id: str, tz: Any, description: str) -> dict[str, Any]:
    return {
        "update_id": str(event.event_id),
        "service_request_id": problem_id,
        "status": rq.extended_status(event.type, event.data),
        "updated_datetime": rq.when(event.occurred_at, tz),
        "description": description,
        "media_url": None,
        "external_status_code": event.type.removeprefix("problem."),
    }


async def _earlier_update(
    request: Request, problem_id: str, caller: Caller, causation: str
) -> dict[str, Any] | None:
    service: ProblemService = request.app.state.problems
    for event in await service.history(caller, problem_id):
        meta = event.metadata
        if meta.get("causation_id") == causation and meta.get("actor") == caller.key_id:
            description = rq.note_text(event.type, event.data, full=True)
            return _update_item(event, problem_id, _settings(request).tz, description)
    return None
