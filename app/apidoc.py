"""Finishing touches on the OpenAPI document for client generators and integrators: every
request and response body gets an example, built from the examples the models carry (a page of
problems shows a problem, a list shows one item), so no operation is left without one."""

from __future__ import annotations

from typing import Any

_SCALARS: dict[str, Any] = {
    "date-time": "2026-11-16T09:00:00+08:00",
    "date": "2026-11-16",
    "uuid": "6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30",
    "duration": "P3DT4H",
}


def example_of(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """An example value for `schema`: its own or its component's example, else one composed
    from its parts."""
    if depth > 8:
        return None
    if "example" in schema:
        return schema["example"]
    if schema.get("examples"):
        return schema["examples"][0]
    if "$ref" in schema:
        return example_of(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return example_of(options[0], components, depth + 1) if options else None
    if "allOf" in schema:
        return example_of(schema["allOf"][0], components, depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if kind == "array":
        return [example_of(schema.get("items", {}), components, depth + 1)]
    if kind == "object" or "properties" in schema:
        return {
            name: example_of(prop, components, depth + 1)
            for name, prop in schema.get("properties", {}).items()
        }
    if kind == "string":
        return _SCALARS.get(schema.get("format", ""), "…")
    return {"integer": 1, "number": 1.5, "boolean": True}.get(str(kind))


def fill_examples(document: dict[str, Any]) -> None:
    """Give every request body and success response of every operation an example (binary bodies
    have none; error responses share the `ProblemDetail` schema's example)."""
    components = document.get("components", {}).get("schemas", {})
    for methods in document.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.get("responses", {})
            bodies = [
                operation.get("requestBody", {}),
                *(r for c, r in responses.items() if c.startswith("2")),
            ]
            for body in bodies:
                for media in (body.get("content") or {}).values():
                    schema = media.get("schema", {})
                    if "example" in media or "examples" in media or schema.get("format") == "binary":
                        continue
                    if schema:
                        media["example"] = example_of(schema, components)
