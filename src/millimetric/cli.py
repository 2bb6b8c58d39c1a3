"""The `millimetric` command: serve the API, manage projects and keys on the local data directory.

Commands that create or list things take `--json` and then print exactly one JSON document on
stdout; notes and progress go to stderr.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from millimetric.admin import keys as admin_keys
from millimetric.admin import projects as admin_projects
from millimetric.admin import users as admin_users
from millimetric.errors import ApiError
from millimetric.settings import Settings
from millimetric.store.control import ControlPlane, Project, ProjectChanges

app = typer.Typer(help="Self-hosted, privacy-respecting analytics (Millimetric v1 API).", no_args_is_help=True)
projects_app = typer.Typer(help="Create and list projects.", no_args_is_help=True)
keys_app = typer.Typer(help="Mint, list and revoke API keys.", no_args_is_help=True)
users_app = typer.Typer(help="Local users who sign in to the dashboard and the admin API.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")

out = Console()
err = Console(stderr=True)

DEFAULT_PROJECT = "default"
DEFAULT_ORIGIN = "http://localhost:8787"

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Data directory [env MILLIMETRIC_DATA_DIR].")]
DatabaseUrl = Annotated[
    Optional[str], typer.Option("--database-url", help="Control-plane database [env MILLIMETRIC_DATABASE_URL].")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _control(settings: Settings) -> ControlPlane:
    control = ControlPlane(settings.control_plane_url, settings.resolved_pepper())
    control.migrate()
    return control


def _open(data_dir: Path | None, database_url: str | None) -> ControlPlane:
    return _control(Settings.from_env(data_dir=data_dir, database_url=database_url))


def _project_or_exit(control: ControlPlane, ref: str) -> Project:
    project = control.get_project(ref)
    if project is None:
        err.print(f"[red]No project {ref!r}[/red] (see `millimetric projects list`).")
        raise typer.Exit(1)
    return project


def _refused(error: ApiError) -> typer.Exit:
    """The admin services' refusals, for a terminal: field errors exit 2, a missing thing 1."""
    details = error.details or {}
    for field, messages in details.get("fieldErrors", {}).items():
        for message in messages:
            err.print(f"{field}: {message}", style="red", markup=False, highlight=False)
    for message in details.get("formErrors", []):
        err.print(message, style="red", markup=False, highlight=False)
    if error.code == "not_found":
        err.print("Not found.", style="red")
    return typer.Exit(2 if error.code == "invalid_payload" else 1)


def _print_new_keys(project: Project, tokens: dict[str, str]) -> None:
    err.print(f"Project [bold]{project.name}[/bold] (slug {project.slug}, id {project.id})")
    err.print("Keys (shown once, store them now):")
    for kind, token in tokens.items():
        out.print(f"  {kind}: {token}", soft_wrap=True, highlight=False)


def _raise_open_file_limit() -> None:
    """Each connection is a file descriptor; the usual soft limit of 1024 is too low for a server."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address [env MILLIMETRIC_HOST].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port [env MILLIMETRIC_PORT].")] = None,
    database_url: DatabaseUrl = None,
    pepper: Annotated[Optional[str], typer.Option(help="Key pepper [env MILLIMETRIC_PEPPER].")] = None,
    trusted_proxies: Annotated[
        Optional[str], typer.Option(help="Comma list of proxy CIDRs [env MILLIMETRIC_TRUSTED_PROXIES].")
    ] = None,
    log_level: Annotated[Optional[str], typer.Option(help="Log level [env MILLIMETRIC_LOG_LEVEL].")] = None,
    queue_limit: Annotated[
        Optional[int], typer.Option(help="Events waiting for a commit before 503 [env MILLIMETRIC_QUEUE_LIMIT].")
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            help="Server processes sharing the port and the event store, about one per core "
            "[env MILLIMETRIC_WORKERS; default 1].",
            min=1,
        ),
    ] = None,
) -> None:
    """Run the API server (creates a `default` project with keys on an empty data directory)."""
    settings = Settings.from_env(
        data_dir=data_dir,
        host=host,
        port=port,
        database_url=database_url,
        pepper=pepper,
        trusted_proxies=tuple(p.strip() for p in trusted_proxies.split(",") if p.strip()) if trusted_proxies else None,
        log_level=log_level,
        queue_limit=queue_limit,
        workers=workers,
    )
    from millimetric.operations.metrics_dir import use_directory

    use_directory(settings.data_dir)  # before anything imports prometheus_client (the server does)
    from millimetric.api import server

    _raise_open_file_limit()
    server.prepare_process(settings)
    control = _control(settings)
    settings.resolved_jwt_secret()  # created once here, before worker processes read it
    if not control.list_projects():
        project, tokens = control.create_project(DEFAULT_PROJECT, [DEFAULT_ORIGIN])
        _print_new_keys(project, tokens)
    control.close()
    processes = f", {settings.workers} worker processes" if settings.workers > 1 else ""
    banner = f"millimetric serving on http://{settings.host}:{settings.port} (data in {settings.data_dir}{processes})"
    if settings.log_format == "json":  # every line on stderr is then a JSON log line
        logging.getLogger("millimetric.server").info("%s", banner)
    else:
        err.print(banner)
    raise typer.Exit(server.run(settings))


@projects_app.command("create")
def projects_create(
    name: str,
    origin: Annotated[
        Optional[list[str]], typer.Option("--origin", help="Allowed browser origin (repeatable).")
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a project and print its three new keys (pk, sk, rk) once."""
    try:
        project, tokens = admin_projects.create(_open(data_dir, database_url), name, origin or [])
    except ApiError as exc:
        raise _refused(exc) from None
    if as_json:
        print(json.dumps({"project": project.public(), "keys": tokens}))
    else:
        _print_new_keys(project, tokens)


@projects_app.command("list")
def projects_list(as_json: AsJson = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List projects."""
    projects = _open(data_dir, database_url).list_projects()
    if as_json:
        print(json.dumps({"projects": [p.public() | {"created_at": p.created_at.isoformat()} for p in projects]}))
        return
    table = Table("slug", "name", "id", "allowed origins", "created")
    for p in projects:
        table.add_row(p.slug, p.name, p.id, ", ".join(p.allowed_origins) or "-", p.created_at.strftime("%Y-%m-%d"))
    out.print(table)


@projects_app.command("origins")
def projects_origins(
    project: str,
    action: Annotated[str, typer.Argument(help="add, remove or list")],
    origins: Annotated[
        Optional[list[str]], typer.Argument(help="Origins such as https://shop.example.com or https://*.example.com")
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Manage the browser origins allowed for PROJECT's pk_ keys (running servers apply changes within seconds)."""
    control = _open(data_dir, database_url)
    found = _project_or_exit(control, project)
    current = list(found.allowed_origins)
    if action in ("add", "remove"):
        if not origins:
            err.print(f"[red]`origins {action}` needs at least one origin[/red]")
            raise typer.Exit(2)
        try:
            current = admin_projects.change_origins(control, found, action, origins)
        except ApiError as exc:
            raise _refused(exc) from None
    elif action != "list":
        err.print("[red]ACTION must be add, remove or list[/red]")
        raise typer.Exit(2)
    if as_json:
        print(json.dumps({"allowed_origins": current}))
    else:
        for origin in current:
            out.print(origin, highlight=False)


@projects_app.command("limits")
def projects_limits(
    project: str,
    route: Annotated[str, typer.Argument(help="/v1/track, /v1/batch, ...")],
    rate: Annotated[str, typer.Argument(help="Tokens per second, `off`, or `default`")],
    burst: Annotated[Optional[int], typer.Argument(help="Bucket size")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Override PROJECT's rate limit for ROUTE (running servers apply it within seconds)."""
    control = _open(data_dir, database_url)
    found = _project_or_exit(control, project)
    limit: dict[str, float] | str | None
    if rate in ("off", "default"):
        limit = "off" if rate == "off" else None
    else:
        try:
            per_second = float(rate)
        except ValueError:
            per_second = -1.0
        if per_second <= 0 or burst is None or burst < 1:
            err.print("[red]give RATE > 0 and BURST >= 1, or `off`, or `default`[/red]")
            raise typer.Exit(2)
        limit = {"rate": per_second, "burst": burst}
    try:
        admin_projects.update(control, found, ProjectChanges(rate_limits={route: limit}))
    except ApiError as exc:
        raise _refused(exc) from None
    if isinstance(limit, dict):
        err.print(f"{route}: {limit['rate']:g}/s, burst {limit['burst']} for {found.slug}")
    else:
        err.print(f"{route}: {'unlimited' if rate == 'off' else 'default limit'} for {found.slug}")


@projects_app.command("retention")
def projects_retention(
    project: str,
    days: Annotated[str, typer.Argument(help="Days to keep events, or `off` to keep them forever")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Keep PROJECT's events for DAYS: older ones are refused at ingest and deleted within the hour."""
    control = _open(data_dir, database_url)
    found = _project_or_exit(control, project)
    if days == "off":
        admin_projects.update(control, found, ProjectChanges(clear_retention=True))
        err.print(f"{found.slug}: events are kept forever")
        return
    if not days.isdigit():
        err.print("[red]DAYS must be a whole number >= 1, or `off`[/red]")
        raise typer.Exit(2)
    try:
        admin_projects.update(control, found, ProjectChanges(retention_days=int(days)))
    except ApiError as exc:
        raise _refused(exc) from None
    err.print(f"{found.slug}: events are kept {int(days)} days")


@projects_app.command("bots")
def projects_bots(
    project: str,
    keep: Annotated[
        bool, typer.Option("--keep/--drop", help="Keep bot traffic (device_type bot) or drop it (default).")
    ],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Keep or drop known crawlers, monitors and headless browsers for PROJECT."""
    control = _open(data_dir, database_url)
    found = _project_or_exit(control, project)
    admin_projects.update(control, found, ProjectChanges(keep_bots=keep))
    err.print(f"{found.slug}: bots are {'kept' if keep else 'dropped (counted)'}")


@keys_app.command("create")
def keys_create(
    project: str,
    kind: Annotated[str, typer.Option(help="pk (browser), sk (server), rk (read) or ak (account read).")],
    env: Annotated[str, typer.Option(help="live or test (a label).")] = "live",
    name: Annotated[Optional[str], typer.Option(help="A label for listings.")] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Mint a key for PROJECT (slug or id) and print it once."""
    try:
        admin_keys.check_kind_env(kind, env)
    except ApiError:
        err.print("[red]--kind must be one of pk, sk, rk, ak; --env live or test[/red]")
        raise typer.Exit(2) from None
    control = _open(data_dir, database_url)
    created = admin_keys.mint_for_project(control, _project_or_exit(control, project), kind, env, name)
    if as_json:
        print(json.dumps({f: created[f] for f in ("key", "kind", "env", "prefix")}))
    else:
        err.print("New key (shown once, store it now):")
        out.print(created["key"], soft_wrap=True, highlight=False)


@keys_app.command("list")
def keys_list(
    project: str, as_json: AsJson = False, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """List PROJECT's keys (never their secrets)."""
    control = _open(data_dir, database_url)
    keys = [admin_keys.view(k) for k in control.list_keys(_project_or_exit(control, project))]
    if as_json:
        print(json.dumps({"keys": keys}))
        return
    table = Table(*admin_keys.KEY_FIELDS)
    for k in keys:
        table.add_row(*("-" if k[f] is None else str(k[f]) for f in admin_keys.KEY_FIELDS))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(prefix: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke the key with PREFIX (running servers refuse it within seconds)."""
    control = _open(data_dir, database_url)
    key = control.find_key(prefix)
    if key is None or key.revoked_at is not None:
        err.print(f"[red]No live key with prefix {prefix!r}[/red]")
        raise typer.Exit(1)
    admin_keys.revoke(control, prefix)
    err.print(f"Revoked {prefix}.")


@users_app.command("create")
def users_create(
    email: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a local user who owns this server's projects; the password is asked for (or read from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    try:
        user = admin_users.create_user(_open(data_dir, database_url), email, password)
    except ApiError as exc:
        raise _refused(exc) from None
    if as_json:
        print(json.dumps({"user": {"id": user.id, "email": user.email}}))
    else:
        err.print(f"User {user.email} created (id {user.id}); sign in with POST /admin/login.", highlight=False)


@app.command("import")
def import_events(
    file: Annotated[
        Optional[str], typer.Argument(help="NDJSON of /v1/track bodies, one per line, or - for stdin.")
    ] = None,
    project: Annotated[
        Optional[str],
        typer.Option(help="Project (slug or id) the events belong to [with --export: default the export's own]."),
    ] = None,
    export: Annotated[
        Optional[Path],
        typer.Option("--export", help="Load a `millimetric export` file (NDJSON or Parquet) as it was stored."),
    ] = None,
    rejects: Annotated[
        Optional[Path], typer.Option(help="Where rejected lines go [default: FILE.rejected.ndjson].")
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Backfill events through the API's own validation, enrichment and writer; or, with
    --export, load an export's events exactly as they were stored (no enrichment runs again).

    Works while `millimetric serve` runs on the same data directory: the rows are handed to its
    event store.
    """
    if export is not None:
        if file is not None:
            err.print("[red]give either FILE (track bodies) or --export FILE, not both[/red]")
            raise typer.Exit(2)
        _import_export(export, project, as_json, Settings.from_env(data_dir=data_dir, database_url=database_url))
        return
    if file is None or project is None:
        err.print("[red]give FILE and --project (or --export FILE)[/red]")
        raise typer.Exit(2)
    import asyncio

    import msgspec
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from millimetric.api.services import Services
    from millimetric.ingest.backfill import Backfill, Rejected
    from millimetric.store.interface import StoreError

    settings = Settings.from_env(data_dir=data_dir, database_url=database_url)
    target = _project_or_exit(_control(settings), project)
    try:
        services = Services.open(settings, attach=True)
    except StoreError as exc:
        err.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    rejects_path = rejects or Path("import.rejected.ndjson" if file == "-" else f"{file}.rejected.ndjson")
    rejects_file = None

    def on_rejected(item: Rejected) -> None:
        nonlocal rejects_file
        rejects_file = rejects_file or open(rejects_path, "wb")
        rejects_file.write(msgspec.json.encode(item) + b"\n")

    source = sys.stdin.buffer if file == "-" else open(file, "rb")
    total = None if file == "-" else Path(file).stat().st_size
    columns = [
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[lines]:,} lines"),
        TimeElapsedColumn(),
    ]
    try:
        with Progress(*columns, console=err, transient=as_json) as progress:
            task = progress.add_task("import", total=total, lines=0)

            def on_progress(lines: int, nbytes: int) -> None:
                progress.update(task, advance=nbytes, lines=progress.tasks[task].fields["lines"] + lines)

            backfill = Backfill(target, services.visits, services.steps, services.writer, on_rejected, on_progress)
            outcome = asyncio.run(backfill.run(source))
        services.count_dropped(target.id, outcome.dropped)
    finally:
        services.close()
        source.close()
        if rejects_file:
            rejects_file.close()
    summary = {
        "lines": outcome.lines,
        "stored": outcome.stored,
        "dropped": dict(outcome.dropped),
        "rejected": outcome.rejected,
        "rejects_file": str(rejects_path) if outcome.rejected else None,
    }
    if as_json:
        print(json.dumps(summary))
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in outcome.dropped.items()) or "none"
    err.print(f"{outcome.lines:,} lines: stored {outcome.stored:,}, dropped {dropped}, rejected {outcome.rejected:,}")
    if outcome.rejected:
        err.print(f"Rejected lines and their errors: {rejects_path}")


def _progress(what: str, total: int | None, unit_bytes: bool = False) -> Any:
    """A progress bar on stderr: rows (or bytes) done of `total`, rate, time."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(what),
        BarColumn(),
        DownloadColumn() if unit_bytes else MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


def _when(value: str | None, flag: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        err.print(f"[red]{flag} wants an ISO 8601 date or time (2026-01-31, 2026-01-31T12:00:00Z), not {value!r}[/red]")
        raise typer.Exit(2) from None


@app.command("export")
def export_command(
    project: Annotated[str, typer.Option(help="Project (slug or id) to export.")],
    since: Annotated[Optional[str], typer.Option("--from", help="Events at or after this time (ISO 8601).")] = None,
    until: Annotated[Optional[str], typer.Option("--to", help="Events before this time (ISO 8601).")] = None,
    file_format: Annotated[str, typer.Option("--format", help="ndjson or parquet.")] = "ndjson",
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="File to write [default: SLUG.ndjson or SLUG.parquet].")
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write every stored column of PROJECT's events to a file (load it anywhere with
    `millimetric import --export FILE`). Works while the server runs."""
    from millimetric.operations.export import FORMATS, ExportError, count_events, export_events, time_range
    from millimetric.store.factory import open_event_store
    from millimetric.store.interface import StoreError

    if file_format not in FORMATS:
        err.print(f"[red]--format must be one of {', '.join(FORMATS)}[/red]")
        raise typer.Exit(2)
    start, end = _when(since, "--from"), _when(until, "--to")
    settings = Settings.from_env(data_dir=data_dir, database_url=database_url)
    found = _project_or_exit(_control(settings), project)
    target = output or Path(f"{found.slug}.{file_format}")
    try:
        store = open_event_store(settings, attach=True)
    except StoreError as exc:
        err.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    try:
        total = count_events(store, found.id, time_range(start, end))
        with _progress(f"exporting {found.slug}", total) as progress:
            task = progress.add_task("export", total=total)
            written = export_events(store, found, target, file_format, start, end, lambda n: progress.advance(task, n))
    except (ExportError, StoreError, OSError) as exc:
        err.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps({"events": written, "file": str(target), "format": file_format}))
    err.print(f"Exported {written:,} events of {found.slug} to {target}", highlight=False)


def _import_export(path: Path, project_ref: str | None, as_json: bool, settings: Settings) -> None:
    """`millimetric import --export FILE`: check the whole file, then append its rows as stored."""
    from millimetric.operations.export import ExportError, check_file, import_events, target_project
    from millimetric.store.factory import open_event_store
    from millimetric.store.interface import StoreError

    try:
        size = path.stat().st_size
        with _progress("checking", size, unit_bytes=True) as progress:
            task = progress.add_task("check", total=size)
            checked = check_file(path, lambda n: progress.advance(task, n))
        found = target_project(_control(settings), checked, project_ref)
    except OSError as exc:
        err.print(f"cannot read {path}: {exc.strerror or exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    except ExportError as exc:
        err.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    try:
        store = open_event_store(settings, attach=True)
    except StoreError as exc:
        err.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    try:
        with _progress(f"importing into {found.slug}", checked.events) as progress:
            task = progress.add_task("import", total=checked.events)
            loaded = import_events(store, checked, found, lambda n: progress.advance(task, n))
    except (ExportError, StoreError) as exc:
        err.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps({"events": loaded, "project": found.slug, "format": checked.file_format}))
    err.print(f"Imported {loaded:,} events into {found.slug} from {path}", highlight=False)


@app.command("backup")
def backup_command(
    target: Annotated[Path, typer.Argument(help="A new (or empty) directory for the copy.")],
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Copy the data directory, consistent, while the server runs. Restore: serve from the copy."""
    from millimetric.operations.backup import BackupError, backup
    from millimetric.store.interface import StoreError

    settings = Settings.from_env(data_dir=data_dir, database_url=database_url)
    try:
        summary = backup(settings, target, note=lambda text: err.print(f"{text}...", highlight=False))
    except (BackupError, StoreError) as exc:
        err.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(dataclasses.asdict(summary)))
    err.print(f"Backed up {summary.events:,} events to {summary.target}", highlight=False)
    err.print(
        f"control plane: {summary.control_plane}; pepper: {summary.pepper}; JWT secret: {summary.jwt_secret}",
        highlight=False,
        soft_wrap=True,
    )
    if summary.quarantined_files:
        err.print(f"{summary.quarantined_files} quarantined journal files copied too", highlight=False)
    err.print(f"Restore: millimetric serve --data-dir {summary.target}", highlight=False)


@app.command()
def doctor(as_json: AsJson = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Check the configuration, the stores, their versions and the services; exit 1 if anything fails."""
    from millimetric.operations.doctor import Finding, diagnose

    try:
        settings = Settings.from_env(data_dir=data_dir, database_url=database_url)
        findings = diagnose(settings)
    except ValueError as exc:
        findings = [Finding("fail", "configuration", f"the MILLIMETRIC_* settings do not parse: {exc}")]
    if as_json:
        print(json.dumps({"ok": all(f.level != "fail" for f in findings), "checks": [f._asdict() for f in findings]}))
    else:
        styles = {"ok": "green", "warn": "yellow", "fail": "red"}
        for finding in findings:
            err.print(f"[{styles[finding.level]}]{finding.level:>4}[/] {finding.check}: ", end="")
            err.print(finding.message, markup=False, highlight=False, soft_wrap=True)
    if any(f.level == "fail" for f in findings):
        raise typer.Exit(1)
