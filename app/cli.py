"""The `dispatchroom` command: serve, migrate, demo data, API keys, automatic actions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from app.access.service import KeyIn
from app.core.security import SYSTEM, Role
from app.core.settings import Settings
from app.demo import is_empty, load_demo
from app.main import Services, clock_for
from app.migrate import upgrade

cli = typer.Typer(
    help="Dispatchroom: routing enterprises' problems through the dispatch rooms.",
    no_args_is_help=True,
    add_completion=False,
)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
console = Console()
T = TypeVar("T")


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def wrapper() -> T:
        return await coro_fn()

    return asyncio.run(wrapper())


@asynccontextmanager
async def services(settings: Settings | None = None) -> AsyncIterator[Services]:
    settings = settings or Settings()
    svc = Services(settings, clock_for(settings))
    try:
        await svc.bootstrap()
        yield svc
    finally:
        await svc.db.dispose()


async def _demo_if_empty(settings: Settings) -> bool:
    async with services(settings) as svc:
        if not await is_empty(svc.store):
            return False
        with console.status("Loading demo data…"):
            summary = await load_demo(svc.directory, svc.problems, now=svc.clock.now())
        console.print(
            f"Demo data: {summary.units} units, {summary.enterprises} enterprises, "
            f"{summary.problems} problems."
        )
        return True


@cli.command()
def migrate() -> None:
    """Apply the database migrations (DATABASE_URL)."""
    settings = Settings()
    _run(lambda: upgrade(settings.database_url))
    console.print("Migrations applied.")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    demo: Annotated[bool, typer.Option(help="Load demo data if the database is empty.")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Apply migrations, then serve the API."""
    settings = Settings()
    _run(lambda: upgrade(settings.database_url))
    if demo:
        _run(lambda: _demo_if_empty(settings))
    base = f"http://{host}:{port}"
    console.print(f"Dispatchroom on [bold]{base}[/]  (API docs {base}/docs, ReDoc {base}/redoc)")
    console.print(f"Database: {settings.database_url}")
    if settings.admin_api_key is not None:
        console.print(
            f"Admin key: [bold]{settings.admin_api_key.get_secret_value()}[/]  (Authorization: Bearer …)"
        )
    else:
        console.print("No ADMIN_API_KEY set: create keys with `dispatchroom keys create`.")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
    )


@cli.command()
def demo() -> None:
    """Load the demo city (units, enterprises, problems) into an empty database."""
    settings = Settings()
    _run(lambda: upgrade(settings.database_url))
    if not _run(lambda: _demo_if_empty(settings)):
        console.print("The database is not empty; demo data not loaded.")
        raise typer.Exit(1)


@cli.command()
def tick() -> None:
    """Run the automatic actions that are due (reminders, overdue marks, escalation, supervision,
    closing after the feedback window, review reminders) once, then exit: for cron, or with
    SCHEDULER_INTERVAL_SECONDS=0 on the servers. Safe next to running servers."""

    async def go() -> str:
        async with services() as svc:
            return (await svc.scheduler.tick()).summary()

    console.print(_run(go))


@keys_cli.command("create")
def keys_create(
    role: Annotated[Role, typer.Option(help="portal, handler, dispatcher, commander, admin or viewer.")],
    name: Annotated[str, typer.Option(help="Who the key is for.")],
    unit: Annotated[str | None, typer.Option(help="Handlers: the unit.")] = None,
    district: Annotated[str | None, typer.Option(help="Dispatchers: the district code.")] = None,
    source: Annotated[str | None, typer.Option(help="Portals: the portal's code.")] = None,
    import_: Annotated[bool, typer.Option("--import", help="Grant the import permission.")] = False,
) -> None:
    """Issue a key and print it (once)."""

    async def go() -> str:
        async with services() as svc:
            body = KeyIn(
                name=name,
                role=role,
                unit_id=unit,
                district_id=district,
                source=source,
                permissions=["import"] if import_ else [],
            )
            _, key = await svc.keys.create(SYSTEM, body)
            return key

    from app.core.errors import AppError

    try:
        key = _run(go)
    except AppError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.detail}")
        raise typer.Exit(2) from None
    typer.echo(key)


@keys_cli.command("list")
def keys_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List keys (never their values)."""

    async def go() -> list[object]:
        async with services() as svc:
            return list(await svc.keys.list(include_revoked=all_))

    columns = ("id", "name", "role", "unit_id", "district_id", "source", "key_hint", "revoked_at")
    rows = [[str(getattr(row, c) or "") for c in columns] for row in _run(go)]
    if not console.is_terminal:  # scripts get tab-separated lines, untruncated
        typer.echo("\t".join(columns))
        for cells in rows:
            typer.echo("\t".join(cells))
        return
    table = Table(*columns)
    for cells in rows:
        table.add_row(*cells)
    console.print(table)


@keys_cli.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; it stops working on its next request."""

    async def go() -> None:
        async with services() as svc:
            await svc.keys.revoke(SYSTEM, key_id)

    _run(go)
    console.print(f"Revoked {key_id}.")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()
