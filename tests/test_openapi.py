"""The OpenAPI document: every operation is named, summarised, and declares its errors."""

from __future__ import annotations

import httpx


async def test_every_operation_is_described_and_declares_problem_json_errors(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    operation_ids = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            where = f"{method.upper()} {path}"
            assert op.get("operationId"), where
            assert op.get("summary"), where
            operation_ids.append(op["operationId"])
            if path.startswith("/v1/"):
                assert op.get("tags"), where
                errors = {code: r for code, r in op["responses"].items() if code.startswith(("4", "5"))}
                assert "401" in errors, f"{where} declares no 401"
                for code, resp in errors.items():
                    assert resp["content"] == {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}
                    }, f"{where} {code}"
    assert len(operation_ids) == len(set(operation_ids)), "operation ids are unique"
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ProblemDetail"]["required"]) == {"type", "title", "status", "detail", "code"}
    assert schemas["ProblemDetail"]["properties"]["errors"]
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


async def test_the_document_is_valid_and_every_operation_is_ready_for_integrators(
    client: httpx.AsyncClient,
) -> None:
    import re

    from openapi_spec_validator import validate

    doc = (await client.get("/openapi.json")).json()
    validate(doc)  # OpenAPI 3.1, as openapi-spec-validator reads it
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            where = f"{method.upper()} {path}"
            assert re.fullmatch(r"[a-z][a-z0-9_]*", op["operationId"]), where
            assert op.get("description") and op.get("tags"), where
            bodies = [("request", op["requestBody"])] if "requestBody" in op else []
            bodies += [(code, r) for code, r in op["responses"].items() if code.startswith("2")]
            for what, body in bodies:
                for media_type, media in (body.get("content") or {}).items():
                    if media.get("schema", {}).get("format") == "binary":
                        continue  # an Excel file has no meaningful inline example
                    assert "example" in media or "examples" in media, f"{where} {what} {media_type}"
            if path.startswith("/open311/"):
                for code, response in op["responses"].items():
                    if code[0] in "45":
                        schema = response["content"]["application/json"]["schema"]
                        assert schema == {"$ref": "#/components/schemas/Open311Errors"}, where
                        assert "text/xml" in response["content"], where
