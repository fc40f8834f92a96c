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
