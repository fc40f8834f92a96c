"""The ceiling of an append over HTTP: a bare FastAPI endpoint that takes a JSON body and does one
asyncpg INSERT per request (autocommit), nothing else. Run with uvicorn like the real server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request

DSN = os.environ["CEILING_DSN"]
pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(DSN, min_size=4, max_size=int(os.environ.get("CEILING_POOL", "10")))
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS ceiling_events (id bigserial PRIMARY KEY, stream_id text NOT NULL,"
            " version int NOT NULL, data jsonb NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(),"
            " UNIQUE (stream_id, version))"
        )
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/append", status_code=201)
async def append(request: Request) -> dict[str, Any]:
    body = await request.json()
    stream = f"problem-{uuid.uuid4()}"
    assert pool is not None
    row_id = await pool.fetchval(
        "INSERT INTO ceiling_events (stream_id, version, data) VALUES ($1, 1, $2) RETURNING id",
        stream,
        orjson.dumps(body).decode(),
    )
    return {"id": row_id, "stream_id": stream}
