"""Database access shared by every package: one engine, column types that behave the same on
SQLite and PostgreSQL, and the two ways of talking to the database:

* `Database.transaction()`: an explicit transaction (on SQLite `BEGIN IMMEDIATE` for writes, so
  that writers queue on the file lock instead of failing with "database is locked" when a
  deferred read transaction tries to upgrade);
* `Database.autocommit()`: a connection without BEGIN/COMMIT round trips, for single statements
  that are atomic on their own;
* `Database.run()` / `Database.fetch()`: one autocommit statement on the hot paths (the append,
  the caller's key, a submission's references). On PostgreSQL the statement (SQLAlchemy Core,
  built once) is compiled once per process and sent straight to asyncpg, skipping SQLAlchemy's
  per-execution work; errors are translated to SQLAlchemy's exceptions as usual.

Tables are SQLAlchemy Core `Table`s registered on the one `metadata` below; no ORM.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator, UserDefinedType
from sqlalchemy.util import greenlet_spawn

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant stored in UTC on both backends.

    SQLite has no timezone type: values are stored as naive UTC text of fixed width, so that text
    comparison is time comparison. Naive datetimes are refused on the way in.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.DateTime(timezone=False))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: instants must carry a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class XID8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (`pg_current_xact_id()`)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


# Let reflection (Alembic's drift check) recognise the type instead of warning about it.
postgresql.base.ischema_names.setdefault("xid8", XID8)

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite rowid aliasing needs INTEGER
TxId = sa.BigInteger().with_variant(XID8(), "postgresql")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class _Compiled:
    statement: sa.Executable  # kept alive, so that its id() stays its own
    sql: str
    names: tuple[str, ...]
    compiled: Any
    processors: Mapping[str, Any]
    # Per position: the bind's key and name (as `params` may give it), the bind itself (its own
    # value otherwise) and its processor; None where `construct_params` must do it (below).
    plan: tuple[tuple[str, str, Any, Any], ...] | None


def _plan(compiled: Any) -> tuple[tuple[str, str, Any, Any], ...] | None:
    """How `construct_params(params, _check=False)` fills each position of `compiled`, for a
    statement without parameters collected at compile time (`.params()`) or rendered in the
    text: the same lookups, in the same order, decided once."""
    if compiled._render_postcompile or getattr(compiled, "_collected_params", None):
        return None
    escaped = compiled.escaped_bind_names or {}
    by_name = {escaped.get(name, name): (bind.key, name, bind) for bind, name in compiled.bind_names.items()}
    processors = compiled._bind_processors
    return tuple((*by_name[name], processors.get(name)) for name in compiled.positiontup or ())


class _NoDebugRecords(logging.Filter):
    """Drops the DEBUG records of the database libraries: SQLAlchemy's print result rows and
    aiosqlite's the arguments of every call, and both would show webhook secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_NO_DEBUG = _NoDebugRecords()


def _quiet_database_logs() -> None:
    for name in ("sqlalchemy.engine.Engine", "aiosqlite"):
        logger = logging.getLogger(name)
        if _NO_DEBUG not in logger.filters:
            logger.addFilter(_NO_DEBUG)


_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("holding_connection", default=False)
"""True within a block that holds a pooled connection (and in tasks started from one)."""


class Database:
    """The engine and its transactions. One per process.

    Admission: at most `pool_size` blocks hold a connection at once as their *first* one; the
    rest wait in line (`_gate`) before touching the pool. Without the gate, every request beyond
    `pool_size` in flight took an overflow connection, which the pool closes when it is returned,
    so under load connections were opened and closed over and over (asyncpg's handshake, a cold
    statement cache: bench/RESULTS.md). A block that already holds one (a rebuild's lock holder,
    a transaction that reads on the side, the tasks it starts) passes the gate and may use the
    overflow, so nested acquisition cannot deadlock on the gate.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        statement_timeout_ms: int = 30_000,
        sqlite_synchronous: str = "FULL",
        prepared_statements: bool = True,
        echo: bool = False,
    ) -> None:
        self.url = make_url(url)
        self.backend = self.url.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.backend!r}: use sqlite or postgresql")
        self._write_lock = asyncio.Lock()  # SQLite: one writer at a time within this process
        self._gate = asyncio.Semaphore(pool_size)
        _quiet_database_logs()
        self._compiled: dict[int, _Compiled] = {}
        common: dict[str, Any] = {
            "echo": echo,
            # Statement parameters stay out of logs and error messages: they carry webhook
            # secrets and key hashes (docs/security.md).
            "hide_parameters": True,
            "json_serializer": _json_dumps,
            "json_deserializer": orjson.loads,
        }
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(
                self.url,
                connect_args={"timeout": 30},
                pool_size=pool_size,
                max_overflow=max_overflow,
                **common,
            )
            self._install_sqlite_hooks(sqlite_synchronous)
        else:
            server_settings = {"application_name": "dispatchroom"}
            if statement_timeout_ms:
                server_settings["statement_timeout"] = str(statement_timeout_ms)
            connect_args: dict[str, Any] = {"server_settings": server_settings, "timeout": 10}
            pg_url = self.url
            if not prepared_statements:  # a pooler in transaction mode: nothing named survives
                connect_args["statement_cache_size"] = 0
                connect_args["prepared_statement_name_func"] = lambda: ""
                pg_url = pg_url.update_query_dict({"prepared_statement_cache_size": "0"})
            self.engine = create_async_engine(
                pg_url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                connect_args=connect_args,
                # Autocommit statements leave no transaction behind: no ROLLBACK round trip
                # when such a connection goes back to the pool.
                skip_autocommit_rollback=True,
                **common,
            )

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    @property
    def dsn(self) -> str:
        """The URL for asyncpg's own connections (PostgreSQL)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    @asynccontextmanager
    async def _admitted(self) -> AsyncIterator[None]:
        """The admission gate, unless this block already holds a connection."""
        if _HOLDING.get():
            yield
            return
        async with self._gate:
            token = _HOLDING.set(True)
            try:
                yield
            finally:
                _HOLDING.reset(token)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection, through the admission gate unless this block already holds one."""
        async with self._admitted(), self.engine.connect() as conn:
            yield conn

    def _install_sqlite_hooks(self, synchronous: str) -> None:
        sync_engine = self.engine.sync_engine

        @sa.event.listens_for(sync_engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # Take BEGIN out of the driver's hands: we emit it ourselves (see `_begin`).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in (
                "journal_mode=WAL",
                f"synchronous={synchronous}",
                "foreign_keys=ON",
                "busy_timeout=30000",
            ):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @sa.event.listens_for(sync_engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            if mode != "NONE":  # NONE: single-statement reads, each its own implicit transaction
                conn.exec_driver_sql(f"BEGIN {mode}")

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits when the block ends without an exception."""
        if self.is_sqlite and write:
            async with self._write_lock, self._connect() as conn:
                await conn.execution_options(sqlite_begin="IMMEDIATE")
                async with conn.begin():
                    yield conn
            return
        async with self._connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection where every statement commits on its own (PostgreSQL)."""
        async with self._connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading, statement by statement (READ COMMITTED on PostgreSQL; on
        SQLite no BEGIN round trip). Readers that need one snapshot across statements use
        `transaction(write=False)`."""
        async with self._connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(sqlite_begin="NONE")
            else:  # no BEGIN/ROLLBACK round trips around a read
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    # -- the hot path: one statement, compiled once, run on the driver (PostgreSQL) ------------

    def _compile(self, stmt: sa.Executable) -> _Compiled:
        found = self._compiled.get(id(stmt))
        if found is None or found.statement is not stmt:
            compiled: Any = stmt.compile(dialect=self.engine.dialect)  # type: ignore[attr-defined]
            if any(b.expanding for b in compiled.binds.values()):
                raise ValueError("expanding parameters cannot run on the driver; use = ANY(:array)")
            found = _Compiled(
                stmt,
                compiled.string,
                tuple(compiled.positiontup or ()),
                compiled,
                compiled._bind_processors,
                _plan(compiled),
            )
            self._compiled[id(stmt)] = found
        return found

    def _args(self, compiled: _Compiled, params: Mapping[str, Any]) -> list[Any]:
        """The positional arguments: what SQLAlchemy's `construct_params` would give each bind
        (the value in `params` under its key or its name, else its own), through the bind's
        processor, without building the dictionary of every bind first (a tenth of the
        submission's CPU went to it for the append's sixty binds)."""
        plan = compiled.plan
        if plan is None:
            values = compiled.compiled.construct_params(params, _check=False)
            processors = compiled.processors
            return [
                processors[name](values[name]) if name in processors else values[name]
                for name in compiled.names
            ]
        args = []
        for key, name, bind, process in plan:
            if key in params:
                value = params[key]
            elif name in params:
                value = params[name]
            else:
                value = bind.effective_value if bind.callable else bind.value
            args.append(value if process is None else process(value))
        return args

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[Any]:
        """The pooled asyncpg connection (autocommit), with driver errors raised as SQLAlchemy's.
        Taken from the pool directly (no SQLAlchemy `Connection` around it: its creation and
        release cost twice the pool's own checkout and checkin); returned to the pool with the
        pool's reset, which sends nothing when no transaction was begun (none is here)."""
        async with self._admitted():
            fairy = await self.engine.raw_connection()
            adapted: Any = fairy.dbapi_connection
            try:
                yield adapted.driver_connection
            except Exception as error:
                dbapi = self.engine.dialect.loaded_dbapi
                try:
                    adapted._handle_exception(error)  # raises the DBAPI-level translation
                except dbapi.Error as translated:
                    disconnect = self.engine.dialect.is_disconnect(translated, adapted, None)
                    if disconnect:
                        await greenlet_spawn(fairy.invalidate, translated)
                    raise sa.exc.DBAPIError.instance(
                        None, None, translated, dbapi.Error, connection_invalidated=disconnect
                    ) from error
            finally:
                await greenlet_spawn(fairy.close)

    async def run(self, stmt: sa.Executable, params: Mapping[str, Any]) -> None:
        """Execute one statement that returns nothing, in autocommit. `stmt` must be built once
        and reused (it is compiled and kept per process, by identity)."""
        if not self.is_postgres:
            async with self.autocommit() as conn:
                await conn.execute(stmt, dict(params))
            return
        compiled = self._compile(stmt)
        args = self._args(compiled, params)
        async with self._driver() as driver:
            await driver.execute(compiled.sql, *args)

    async def fetch(self, stmt: sa.Executable, params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The rows of one statement, as mappings (column name -> value), in autocommit. `stmt`
        must be built once and reused (as for `run`)."""
        if not self.is_postgres:
            async with self.read() as conn:
                result = await conn.execute(stmt, dict(params))
                return [dict(row._mapping) for row in result.all()]
        compiled = self._compile(stmt)
        args = self._args(compiled, params)
        async with self._driver() as driver:
            return list(await driver.fetch(compiled.sql, *args))

    async def dispose(self) -> None:
        await self.engine.dispose()


# The sessions that finish a bulk load (`dispatchroom seed`, a rebuild): index builds, VACUUMs and
# numbering sort or scan whole tables, so no statement timeout, and memory to sort in.
BULK_SETTINGS = {"statement_timeout": "0", "maintenance_work_mem": "256MB", "work_mem": "64MB"}


async def run_ddl(dsn: str, statements: Sequence[str], connections: int = 2) -> None:
    """Run statements in turn on a few connections of their own at once (`BULK_SETTINGS`; one
    per CPU of a small server keeps both the sorts and the scans busy)."""
    queue = list(reversed(statements))

    async def builder() -> None:
        conn = await asyncpg.connect(dsn, server_settings=BULK_SETTINGS)
        try:
            while queue:
                await conn.execute(queue.pop())
        finally:
            await conn.close()

    await asyncio.gather(*(builder() for _ in range(min(connections, len(statements)))))


def upsert(
    dialect_name: str,
    table: sa.Table,
    values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
    update: Sequence[str] | None = None,
    where: sa.ColumnElement[bool] | None = None,
) -> sa.Insert:
    """INSERT … ON CONFLICT (key) DO UPDATE, for SQLite and PostgreSQL alike.

    `update` names the columns to overwrite (default: all but the key); with an empty list the
    conflict does nothing.
    """
    ins: Any = postgresql.insert(table) if dialect_name == "postgresql" else sqlite.insert(table)
    ins = ins.values(values)
    if update is None:
        first = values if isinstance(values, Mapping) else values[0]
        update = [c for c in first if c not in key]
    if not update:
        return ins.on_conflict_do_nothing(index_elements=list(key))  # type: ignore[no-any-return]
    return ins.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=list(key),
        set_={c: ins.excluded[c] for c in update},
        where=where,
    )


def member_of(
    dialect_name: str, column: sa.ColumnElement[Any], values: Sequence[Any]
) -> sa.ColumnElement[bool]:
    """`column IN (values)` whose SQL text does not depend on how many values there are, on
    PostgreSQL (`= ANY(array)`): one prepared statement serves every batch of a follower, where
    an IN list of a new length is a new statement (prepared again: a round trip, and a parse and
    plan for the server). IN on SQLite. `column` must be of a plain type (the array's items are
    sent as they are)."""
    if dialect_name == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def utcnow_from(value: datetime) -> datetime:
    """Normalise an aware datetime to UTC (refusing naive ones)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC)
