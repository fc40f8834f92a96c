"""The `dispatchroom` command: serve, migrate, demo data, API keys, automatic actions, projections,
ledger import and export."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import uvicorn
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from app.access.replay import KeysReplay
from app.access.service import KeyIn
from app.core import heap
from app.core.clock import SystemClock
from app.core.errors import AppError
from app.core.security import SYSTEM, Caller, Role, key_hint
from app.core.settings import Settings
from app.demo import is_empty, load_demo
from app.directory.replay import DirectoryReplay
from app.events.backup import export_lines, import_lines, replay
from app.ledger import files
from app.ledger.exporter import as_text, header, ledger_rows
from app.ledger.importer import LedgerImporter, Report, RowError
from app.main import Services, clock_for
from app.migrate import upgrade
from app.projections.problem_view import ProblemFilter
from app.projections.registry import ProjectionStatus
from app.webhooks.replay import WebhooksReplay, hold_restored, skip_history

cli = typer.Typer(
    help="Dispatchroom: routing enterprises' problems through the dispatch rooms.",
    no_args_is_help=True,
    add_completion=False,
)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
projections_cli = typer.Typer(help="Read models: their status and lag, and rebuilds.", no_args_is_help=True)
cli.add_typer(projections_cli, name="projections")
events_cli = typer.Typer(help="The event log: backup (export) and restore (import).", no_args_is_help=True)
cli.add_typer(events_cli, name="events")
console = Console()
T = TypeVar("T")
# Who imports and exports from the command line (the operator, with an admin's reach).
LEDGER_CLI = Caller(key_id="ledger-cli", name="台账导入导出（命令行）", role=Role.admin)


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
        # The console is often a log (systemd, docker): only development shows the key itself.
        admin_key = settings.admin_api_key.get_secret_value()
        shown = (
            admin_key if settings.environment == "development" else key_hint(admin_key) + " (ADMIN_API_KEY)"
        )
        console.print(f"Admin key: [bold]{shown}[/]  (Authorization: Bearer …)")
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
def worker() -> None:
    """Run the background work only, without serving HTTP: the sequencer, the projection
    followers, the webhook fan-out and senders, the scheduler. Start one (or more: they share the
    work safely) next to API servers started with BACKGROUND=false. Stops on SIGTERM or Ctrl-C."""
    settings = Settings().model_copy(update={"background": True})
    _run(lambda: upgrade(settings.database_url))

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with services(settings) as svc:
            if settings.environment != "test":
                heap.settle()
            console.print(
                f"Dispatchroom worker: {len(svc.workers)} background loops on {settings.database_url}"
            )
            await svc.run_background(stop)
        console.print("Worker stopped.")

    _run(go)


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
    _print_rows(columns, [[str(getattr(row, c) or "") for c in columns] for row in _run(go)])


@keys_cli.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; it stops working on its next request."""

    async def go() -> None:
        async with services() as svc:
            await svc.keys.revoke(SYSTEM, key_id)

    _run(go)
    console.print(f"Revoked {key_id}.")


@cli.command("import")
def import_ledger(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="ledger.xlsx or ledger.csv")],
    format_: Annotated[
        str | None, typer.Option("--format", help="csv or xlsx (default: the file's suffix).")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Where to write the per-row errors (default: FILE.errors.csv).")
    ] = None,
) -> None:
    """Import a ledger (台账): each row becomes a problem with its history. Idempotent; bad rows
    are reported with their row numbers and never stop the rest. Exit 1 if a row failed."""
    errors_path = report or path.with_name(path.name + ".errors.csv")
    try:
        fmt = files.format_of(path, format_)
    except AppError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.detail}")
        raise typer.Exit(2) from None

    async def go() -> Report:
        async with services() as svc:
            importer = LedgerImporter(svc.problems, svc.directory, svc.settings.tz)
            total = files.count_rows(path, fmt)
            with (
                errors_path.open("w", encoding="utf-8-sig", newline="") as out,
                Progress(
                    TextColumn("[bold]台账导入[/]"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=console,
                ) as progress,
            ):
                writer = csv.writer(out)
                writer.writerow(["行号 (row)", "台账编号", "原因 (reason)"])
                task = progress.add_task("import", total=total)

                def on_error(error: RowError) -> None:
                    writer.writerow([error.row, error.ledger_id or "", error.reason])

                result = await importer.run(
                    path, fmt, LEDGER_CLI, on_row=lambda _: progress.advance(task), on_error=on_error
                )
            await svc.store.sequence()
            return result

    try:
        result = _run(go)
    except AppError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.detail}")
        raise typer.Exit(2) from None
    console.print(
        f"{result.rows} rows: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.failed} failed."
    )
    if result.ignored_columns:
        console.print(f"Ignored columns: {', '.join(result.ignored_columns)}")
    if result.failed:
        for error in result.errors[:20]:
            console.print(f"  row {error.row} ({error.ledger_id or '-'}): {error.reason}", markup=False)
        console.print(f"Every error is in {errors_path}.")
        raise typer.Exit(1)
    errors_path.unlink(missing_ok=True)


@cli.command("export")
def export_ledger(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The file (default: CSV on standard output).")
    ] = None,
    format_: Annotated[
        str | None, typer.Option("--format", help="csv or xlsx (default: the output's suffix, else csv).")
    ] = None,
) -> None:
    """Export every problem as a ledger (the columns `import` reads, Chinese titles)."""
    fmt = (format_ or (output.suffix.lstrip(".") if output else "csv")).lower()
    if fmt not in files.FORMATS or (fmt == "xlsx" and output is None):
        console.print("[red]export[/]: --format csv, or xlsx with --output FILE.xlsx")
        raise typer.Exit(2)

    async def go() -> int:
        async with services() as svc:
            rows = ledger_rows(
                svc.db, LEDGER_CLI, frozenset(), ProblemFilter(), now=svc.clock.now(), tz=svc.settings.tz
            )
            count = 0
            if fmt == "xlsx":
                assert output is not None
                writer = files.XlsxWriter()
                writer.append(header())
                async for cells in rows:
                    writer.append(cells)
                    count += 1
                writer.save(output)
                return count
            out = output.open("w", encoding="utf-8-sig", newline="") if output else sys.stdout
            try:
                lines = csv.writer(out)
                lines.writerow(header())
                async for cells in rows:
                    lines.writerow(as_text(cells))
                    count += 1
            finally:
                if output:
                    out.close()
            return count

    count = _run(go)
    if output:
        console.print(f"{count} problems exported to {output}.")


def _print_rows(columns: tuple[str, ...], rows: list[list[str]]) -> None:
    if not console.is_terminal:  # scripts get tab-separated lines, untruncated
        typer.echo("\t".join(columns))
        for cells in rows:
            typer.echo("\t".join(cells))
        return
    table = Table(*columns)
    for cells in rows:
        table.add_row(*cells)
    console.print(table)


@projections_cli.command("status")
def projections_status() -> None:
    """Each projection and follower: inline or following, checkpoint, lag in events and seconds."""

    async def go() -> list[ProjectionStatus]:
        async with services() as svc:
            return await svc.projections.status()

    columns = ("name", "kind", "checkpoint", "head", "lag_events", "lag_seconds", "updated_at")
    rows = [
        [
            s.name,
            s.kind,
            str(s.checkpoint),
            str(s.head),
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            s.updated_at.isoformat() if s.updated_at else "",
        ]
        for s in _run(go)
    ]
    _print_rows(columns, rows)


class _PerSecond(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        text = f"{speed:,.0f} {self.unit}/s" if speed else f"… {self.unit}/s"
        return Text(text, style="progress.data.speed")


@projections_cli.command("rebuild")
def projections_rebuild(
    name: Annotated[
        str | None, typer.Argument(help="problem_view, problem_history … (default: every projection).")
    ] = None,
) -> None:
    """Rebuild read models from the event log into fresh tables and swap them in; the service
    keeps answering meanwhile (writers wait only for the swap)."""

    async def go() -> None:
        async with services() as svc:
            for chosen in [name] if name else svc.projections.names:
                svc.projections.get(chosen)
                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    _PerSecond("events"),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    console=console,
                    transient=not console.is_terminal,
                ) as progress:
                    task = progress.add_task(chosen, total=None)

                    def advance(
                        done: int, total: int, task: int = task, progress: Progress = progress
                    ) -> None:
                        progress.update(task, completed=done, total=total)  # type: ignore[arg-type]

                    report = await svc.projections.rebuild(chosen, advance)
                skipped = f" ({report.skipped:,} more of types it does not read)" if report.skipped else ""
                console.print(
                    f"{report.name}: {report.events:,} events{skipped}, {report.streams:,} streams, "
                    f"{report.rows:,} rows in {report.build_seconds:.1f} s "
                    f"({report.events_per_second:,.0f} events/s: "
                    + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in report.phases.items())
                    + f"); {report.caught_up} streams caught up; "
                    f"swapped in {report.swap_seconds * 1000:.0f} ms"
                    + (f"; follower resumes at {report.checkpoint}" if report.checkpoint is not None else "")
                )

    try:
        _run(go)
    except AppError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.detail}")
        raise typer.Exit(2) from None


@cli.command()
def seed(
    problems: Annotated[int, typer.Option(min=1, help="How many problems to write.")] = 100_000,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same history).")] = 1,
    processes: Annotated[
        int | None, typer.Option(min=1, help="Generator processes (default: one per CPU).")
    ] = None,
    enterprises_per_district: Annotated[
        int, typer.Option(min=1, help="Enterprises per district when the city is created.")
    ] = 300,
) -> None:
    """Write a synthetic, realistic history of N problems (PostgreSQL, COPY): the ten-district demo
    city if the database has no units yet, then problems decided by the real decider in the
    practice's proportions (3 % solved on the spot, 70 % at the district, 25 % at the city), with
    the automatic actions they would have received. Run it on a database no server is using."""
    from app.demo.seed import seed as run_seed

    settings = Settings(background=False)
    _run(lambda: upgrade(settings.database_url))

    async def go() -> None:
        async with services(settings) as svc:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _PerSecond("problems"),
                TextColumn("{task.fields[events]:,} events"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=not console.is_terminal,
            ) as progress:
                task = progress.add_task("problems", total=problems, events=0)

                def advance(done: int, events: int) -> None:
                    progress.update(task, completed=done, events=events)

                report = await run_seed(
                    svc,
                    problems,
                    seed_value=seed_value,
                    processes=processes,
                    enterprises_per_district=enterprises_per_district,
                    progress=advance,
                    phase=lambda text: progress.console.print(f"[dim]… {text}[/]"),
                )
        console.print(
            f"Seeded {report.problems:,} problems ({report.events:,} events) in {report.seconds:.0f} s "
            f"({report.problems / report.seconds:,.0f} problems/s)."
        )

    try:
        _run(go)
    except AppError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.detail}")
        raise typer.Exit(2) from None


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()


@events_cli.command("export")
def events_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The file (default: standard output).")
    ] = None,
) -> None:
    """Write the whole event log as JSON lines (the backup): every column a restore needs, in
    position order, with a trailer that lets `events import` refuse a truncated file. Safe
    while servers run (it reads the events positioned when each batch is read)."""

    async def go() -> int:
        svc = Services(Settings(), SystemClock())
        count = 0
        out = output.open("wb") if output else sys.stdout.buffer
        try:
            async for line in export_lines(svc.db, svc.store):
                out.write(line)
                count += 1
        finally:
            if output:
                out.close()
            await svc.db.dispose()
        return count - 2

    count = _run(go)
    if output:
        console.print(f"{count:,} events exported to {output}.")


@events_cli.command("import")
def events_import(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A file of `events export`.")],
) -> None:
    """Restore a backup into an EMPTY database (DATABASE_URL; migrated first): load the events
    in one transaction with their positions, then rebuild every read model from them. Webhook
    subscriptions come back disabled with new secrets (secrets are not in the log)."""
    settings = Settings()
    _run(lambda: upgrade(settings.database_url))

    async def go() -> str:
        svc = Services(settings, SystemClock())  # no bootstrap: it would append to the log
        try:
            with path.open("rb") as lines:
                count = await import_lines(svc.db, svc.store, lines)
            replayed = await replay(svc.db, svc.store, [DirectoryReplay(), KeysReplay(), WebhooksReplay()])
            now = svc.clock.now()
            async with svc.db.transaction() as conn:
                held = await hold_restored(conn, now)
                await skip_history(conn, await svc.store.last_position(conn), now)
            for name in svc.projections.names:
                await svc.projections.rebuild(name)
        finally:
            await svc.db.dispose()
        return (
            f"{count:,} events imported; {replayed:,} replayed into reference data, keys and "
            f"webhooks; projections rebuilt; {held} webhook subscription(s) disabled until "
            "their secrets are rotated."
        )

    try:
        console.print(_run(go))
    except AppError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.detail}")
        raise typer.Exit(2) from None
