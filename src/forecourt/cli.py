"""The ``forecourt`` command. Every flag can also be set as a FORECOURT_ variable."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from forecourt import __version__
from forecourt import principal as principals
from forecourt.errors import ForecourtError
from forecourt.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    name="forecourt",
    help="Forecourt: API keys, rate limits, webhooks and plugins in front of your app.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
users_app = typer.Typer(help="Manage dashboard users.", no_args_is_help=True)
events_app = typer.Typer(help="Publish events.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Inspect and operate webhook endpoints.", no_args_is_help=True)
plugins_app = typer.Typer(help="Install, list and run plugins.", no_args_is_help=True)
tenants_app = typer.Typer(
    help="Manage the installation's tenants (the operator's).", no_args_is_help=True
)
publisher_keys_app = typer.Typer(
    help="The publisher keys trusted to sign plugin packages (the operator's).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(events_app, name="events")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(plugins_app, name="plugins")
app.add_typer(tenants_app, name="tenants")
plugins_app.add_typer(publisher_keys_app, name="publisher-keys")

DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
PAGE_SIZE = 200

TenantOpt = Annotated[str, typer.Option("--tenant", envvar="FORECOURT_TENANT", help="Tenant slug.")]


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def json_option(option: str, text: str) -> Any:
    """The value of a JSON option; a clear error when it is not JSON."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option}: not valid JSON ({exc.msg} at position {exc.pos})")
        raise


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        fail(f"invalid setting FORECOURT_{field.upper()}: {first['msg']}")
        raise AssertionError from exc  # unreachable: fail() exits


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    from forecourt.db.migrate import NotMigrated

    try:
        return asyncio.run(_as_coro(coro_fn))
    except NotMigrated as exc:
        fail(str(exc), code=1)
    except ForecourtError as exc:
        field = getattr(exc, "field", None)
        fail(f"{field}: {exc.detail}" if field else exc.detail)
    except OSError as exc:
        fail(f"cannot reach a server Forecourt needs: {exc}", code=1)
    raise AssertionError("unreachable")


async def _as_coro(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


def parse_when(value: str, option: str, *, past: bool) -> datetime:
    """A duration like ``30d`` (from now: ahead, or back when ``past``) or an ISO 8601 time;
    a one-line error naming ``option`` otherwise."""
    match = DURATION_RE.match(value.strip())
    if match:
        amount, unit = match.groups()
        delta = timedelta(seconds=int(amount) * DURATION_UNITS_S[unit])
        return datetime.now(UTC) - delta if past else datetime.now(UTC) + delta
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is neither a duration like 30d nor an ISO 8601 time")
        raise
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_expiry(value: str | None) -> datetime | None:
    """``30d``, ``12h``, ``45m``, ``2w`` from now, or an ISO 8601 time."""
    return None if value is None else parse_when(value, "--expires", past=False)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(envvar="FORECOURT_HOST")] = None,
    port: Annotated[int | None, typer.Option(envvar="FORECOURT_PORT")] = None,
    no_workers: Annotated[
        bool,
        typer.Option(
            "--no-workers",
            envvar="FORECOURT_NO_WORKERS",
            help="API only; run background work in `forecourt worker` nodes.",
        ),
    ] = False,
) -> None:
    """Start the API (and, unless --no-workers, the background workers)."""
    import uvicorn

    settings = load_settings(host=host, port=port)
    share_metrics(settings)
    from forecourt.app import create_app

    application = create_app(settings, run_workers=not no_workers)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it with this handler in
    # place: a requested stop is a clean exit (code 0), as with Ctrl-C.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
        ws_per_message_deflate=settings.stream_compression,
    )


def share_metrics(settings: Settings) -> None:
    """Share this process's Prometheus values with the installation's other processes (the
    multiprocess folder); must run before anything imports prometheus_client."""
    from forecourt.observability import multiprocess

    settings.ensure_data_dir()
    multiprocess.prepare(settings.resolved_prometheus_dir)


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@app.command()
def migrate() -> None:
    """Apply database migrations (run before starting PostgreSQL nodes)."""
    from forecourt.db import migrate as migrations
    from forecourt.db.engine import create_engine

    settings = load_settings()

    async def go() -> None:
        engine = create_engine(settings.resolved_database_url)
        try:
            await migrations.upgrade(engine)
        finally:
            await engine.dispose()

    run(go)
    typer.echo("database is up to date")


async def _with_forecourt(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn`` on a started Forecourt (migrated on SQLite, checked on PostgreSQL,
    bootstrapped) without background delivery; stopped afterwards."""
    from forecourt.core import Forecourt

    fc = Forecourt(settings)
    try:
        await fc.start(run_workers=False)
        return await fn(fc)
    finally:
        await fc.stop()


async def _every_page(
    fetch: Callable[..., Awaitable[tuple[list[Any], str | None]]], actor: principals.Principal
) -> list[Any]:
    """Every row of a paginated service listing."""
    rows: list[Any] = []
    cursor: str | None = None
    while True:
        page, cursor = await fetch(actor, cursor, PAGE_SIZE)
        rows.extend(page)
        if cursor is None:
            return rows


async def _tenant_principal(session: Any, slug: str) -> principals.Principal:
    from forecourt.tenants import service as tenants

    tenant = await tenants.ensure(session, slug)
    await session.commit()
    return principals.system(tenant.id)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated, e.g. events:publish,webhooks:read")],
    tenant: TenantOpt = "default",
    expires: Annotated[str | None, typer.Option(help="30d, 12h, or an ISO 8601 time.")] = None,
    tier: Annotated[str | None, typer.Option(help="Rate-limit tier.")] = None,
    description: str = "",
    environment: Annotated[str | None, typer.Option(help="live or test")] = None,
) -> None:
    """Create a key and print it (once)."""
    from forecourt.keys.schemas import KeyCreate

    settings = load_settings()
    expires_at = parse_expiry(expires)
    if environment not in (None, "live", "test"):
        fail("--environment: use live or test")
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()]

    async def go(fc: Any) -> str:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            data = KeyCreate(
                name=name,
                description=description,
                scopes=scope_list,
                tier=tier,
                expires_at=expires_at,
                environment=environment,
            )
            key, raw = await fc.keys(session).create(actor, data)
            typer.echo(
                f"created {key.id} ({key.name}) with scopes {','.join(key.scopes)}", err=True
            )
            return str(raw)

    try:
        typer.echo(run(lambda: _with_forecourt(settings, go)))
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"--{first['loc'][0]}: {first['msg']}")


@keys_app.command("list")
def keys_list(tenant: TenantOpt = "default") -> None:
    """List keys: id, prefix, status, scopes, name."""
    from forecourt.keys.service import status

    settings = load_settings()

    async def go(fc: Any) -> list[Any]:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            return await _every_page(fc.keys(session).page, actor)

    for key in run(lambda: _with_forecourt(settings, go)):
        typer.echo(f"{key.id}\t{key.prefix}…\t{status(key)}\t{','.join(key.scopes)}\t{key.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, tenant: TenantOpt = "default") -> None:
    """Revoke a key at once."""
    settings = load_settings()

    async def go(fc: Any) -> None:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            await fc.keys(session).revoke(actor, key_id)

    run(lambda: _with_forecourt(settings, go))
    typer.echo(f"revoked {key_id}")


# -- tenants (the operator's, acting as Forecourt itself in the default tenant) ---------------

TenantArg = Annotated[
    str, typer.Argument(envvar="FORECOURT_TENANT", help="The tenant's slug or id.")
]


async def _operator(session: Any) -> principals.Principal:
    from forecourt.tenants.models import DEFAULT_TENANT_SLUG

    return await _tenant_principal(session, DEFAULT_TENANT_SLUG)


@tenants_app.command("create")
def tenants_create(
    slug: Annotated[
        str, typer.Option(envvar="FORECOURT_TENANT_SLUG", help="Lowercase letters, digits, '-'.")
    ],
    name: Annotated[
        str | None, typer.Option(envvar="FORECOURT_TENANT_NAME", help="Default: the slug.")
    ] = None,
) -> None:
    """Create a tenant and print its first admin key (once)."""
    from forecourt.tenants.models import SLUG_RE
    from forecourt.tenants.schemas import TenantCreate

    if not SLUG_RE.match(slug):
        fail("--slug: lowercase letters, digits and '-', at most 63, e.g. acme-eu")
    try:
        data = TenantCreate(slug=slug, name=name or slug)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"--{first['loc'][0]}: {first['msg']}")
        raise AssertionError from exc
    settings = load_settings()

    async def go(fc: Any) -> str:
        async with fc.sessionmaker() as session:
            actor = await _operator(session)
            tenant, key, raw = await fc.tenants(session).create(actor, data.slug, data.name)
            typer.echo(f"created tenant {tenant.id} ({tenant.slug}) and key {key.id}", err=True)
            return str(raw)

    typer.echo(run(lambda: _with_forecourt(settings, go)))


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants: id, slug, status, name."""
    settings = load_settings()

    async def go(fc: Any) -> list[Any]:
        async with fc.sessionmaker() as session:
            actor = await _operator(session)
            service = fc.tenants(session)
            return await _every_page(lambda _a, c, n: service.page(c, n), actor)

    for tenant in run(lambda: _with_forecourt(settings, go)):
        state = "suspended" if tenant.suspended_at else "active"
        typer.echo(f"{tenant.id}\t{tenant.slug}\t{state}\t{tenant.name}")


def _tenant_change(tenant: str, change: str) -> None:
    settings = load_settings()

    async def go(fc: Any) -> Any:
        async with fc.sessionmaker() as session:
            actor = await _operator(session)
            service = fc.tenants(session)
            method = service.suspend if change == "suspend" else service.resume
            return await method(actor, tenant)

    found = run(lambda: _with_forecourt(settings, go))
    typer.echo(f"{'suspended' if change == 'suspend' else 'resumed'} {found.slug}")


@tenants_app.command("suspend")
def tenants_suspend(tenant: TenantArg) -> None:
    """Suspend a tenant: none of its keys or sessions is accepted, on any node (at once with
    Redis; within 30 s otherwise, when each node reloads the suspended tenants)."""
    _tenant_change(tenant, "suspend")


@tenants_app.command("resume")
def tenants_resume(tenant: TenantArg) -> None:
    """Resume a suspended tenant."""
    _tenant_change(tenant, "resume")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="Sign-in email.")],
    role: Annotated[str, typer.Option(help="owner, admin, member or viewer")] = "member",
    name: str = "",
    tenant: TenantOpt = "default",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a dashboard user; asks for the password without echo."""
    from forecourt.users.schemas import UserCreate
    from forecourt.users.service import UserService

    settings = load_settings()
    if role not in ("owner", "admin", "member", "viewer"):
        fail("--role: use owner, admin, member or viewer")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        data = UserCreate(email=email, name=name, password=password, role=role)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"--{first['loc'][0]}: {first['msg']}")
        raise

    async def go(fc: Any) -> str:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            user = await UserService(session).create(actor, data)
            return str(user.id)

    user_id = run(lambda: _with_forecourt(settings, go))
    typer.echo(f"created user {user_id} <{email}> ({role})")


@app.command()
def worker() -> None:
    """Run delivery workers only (no HTTP), until SIGTERM or Ctrl-C; then finish or release
    in-flight deliveries within FORECOURT_DELIVERY_SHUTDOWN_GRACE_S."""
    settings = load_settings()
    share_metrics(settings)

    async def go() -> None:
        from forecourt import runtime
        from forecourt.core import Forecourt

        fc = Forecourt(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await fc.start(run_workers=True)
        runtime.settle()
        typer.echo(f"forecourt worker {fc.worker_id} started", err=True)
        try:
            await stop.wait()
        finally:
            runtime.unsettle()
            await fc.stop()
        typer.echo("forecourt worker stopped", err=True)

    run(go)


@events_app.command("publish")
def events_publish(
    type: Annotated[str, typer.Argument(help="Event type, e.g. dashboard.created")],
    data: Annotated[str, typer.Option(help="The event's data, as JSON.")] = "{}",
    subject: str | None = None,
    severity: Annotated[str | None, typer.Option(help="info, warning, error, critical")] = None,
    event_id: Annotated[str | None, typer.Option("--id", help="Your own event id.")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Publish an event; prints its envelope as JSON."""
    import json

    from forecourt.events.envelope import envelope
    from forecourt.events.schemas import EventPublish

    payload = json_option("--data", data)
    settings = load_settings()
    try:
        body = EventPublish.model_validate(
            {
                k: v
                for k, v in {
                    "type": type,
                    "data": payload,
                    "subject": subject,
                    "severity": severity,
                    "id": event_id,
                }.items()
                if v is not None or k == "data"
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        raise

    async def go(fc: Any) -> dict[str, Any]:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            event, _ = await fc.events(session).publish(actor, body)
            return envelope(event)

    typer.echo(json.dumps(run(lambda: _with_forecourt(settings, go)), indent=2))


@webhooks_app.command("list")
def webhooks_list(tenant: TenantOpt = "default") -> None:
    """List endpoints: id, state, event types, URL."""
    settings = load_settings()

    async def go(fc: Any) -> list[Any]:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            return await _every_page(fc.webhooks(session).page, actor)

    for e in run(lambda: _with_forecourt(settings, go)):
        state = "enabled" if e.enabled else "disabled"
        types = ",".join(e.event_types) or "*"
        typer.echo(f"{e.id}\t{state}\t{types}\t{e.url}")


@webhooks_app.command("test")
def webhooks_test(endpoint_id: str, tenant: TenantOpt = "default") -> None:
    """Send a signed webhook.test event now and print the attempt's result."""
    settings = load_settings()

    async def go(fc: Any) -> Any:
        from forecourt.webhooks.probe import send_test

        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
        return await send_test(fc, actor, endpoint_id)

    attempt = run(lambda: _with_forecourt(settings, go))
    outcome = attempt.status_code if attempt.status_code is not None else attempt.error_class
    typer.echo(f"attempt {attempt.id}: {outcome} in {attempt.duration_ms} ms")
    if attempt.status_code is None or not 200 <= attempt.status_code < 300:
        raise typer.Exit(1)


@webhooks_app.command("recover")
def webhooks_recover(
    endpoint_id: str,
    since: Annotated[str, typer.Option(help="ISO 8601 time, or a duration like 6h ago.")],
    tenant: TenantOpt = "default",
) -> None:
    """Re-queue every failed delivery of the endpoint since a time."""
    settings = load_settings()
    when = parse_when(since, "--since", past=True)

    async def go(fc: Any) -> int:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            count: int = await fc.webhooks(session).recover(actor, endpoint_id, when)
            return count

    typer.echo(f"re-queued {run(lambda: _with_forecourt(settings, go))} deliveries")


@plugins_app.command("install")
def plugins_install(
    path: Annotated[Path, typer.Argument(help="A package: a .zip, or a folder.")],
    dev: Annotated[
        bool,
        typer.Option(
            "--dev/--no-dev",
            help="A folder is watched for edits and reloaded (default for folders).",
        ),
    ] = True,
    tenant: TenantOpt = "default",
) -> None:
    """Install a plugin package (FORECOURT_PLUGIN_ALLOW_UNSIGNED, FORECOURT_PLUGIN_TRUSTED_KEYS
    and the publisher keys added with `plugins publisher-keys add` apply)."""
    settings = load_settings()
    if not path.exists():
        fail(f"{path}: no such file or folder")

    async def go(fc: Any) -> Any:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            try:
                return await fc.plugins(session).install(actor, path.resolve(), dev=dev)
            except ForecourtError as exc:
                if exc.extra.get("errors") and not getattr(exc, "field", None):
                    exc.detail = f"{exc.detail}: {_problems(exc)}"  # every problem, one line
                raise

    row = run(lambda: _with_forecourt(settings, go))
    trust = f"signed by {row.publisher}" if row.signed else "unsigned"
    watched = f", watching {row.source_dir}" if row.source_dir else ""
    typer.echo(f"installed {row.plugin_id} {row.version} ({row.type}, {trust}{watched})")
    permissions = row.manifest.get("permissions") or {}
    if permissions.get("host_metrics"):
        typer.echo("  may read the host's system-wide statistics (host_metrics)")
    for socket_path in permissions.get("unix_sockets") or ():
        typer.echo(f"  may connect to the unix socket {socket_path} (unix_sockets)")


def _problems(exc: ForecourtError) -> str:
    return "; ".join(f"{e['field']}: {e['message']}" for e in exc.extra.get("errors") or [])


@plugins_app.command("list")
def plugins_list() -> None:
    """List installed plugins: id, versions, type, state (for the default tenant), trust,
    name."""
    settings = load_settings()

    async def go(fc: Any) -> list[tuple[Any, Any]]:
        async with fc.sessionmaker() as session:
            actor = await _operator(session)
            service = fc.plugins(session)
            found = await _every_page(
                lambda a, c, n: service.page(
                    a, type=None, enabled=None, category=None, cursor=c, limit=n
                ),
                actor,
            )
            states = await service.states(actor, found)
            return [(item, states[item.plugin_id]) for item in found]

    for item, tenant_state in run(lambda: _with_forecourt(settings, go)):
        latest = item.latest
        state = "enabled" if tenant_state.enabled else "disabled"
        trust = "builtin" if latest.builtin else ("signed" if latest.signed else "unsigned")
        versions = ",".join(row.version for row in item.versions)
        typer.echo(
            f"{latest.plugin_id}\t{versions}\t{latest.type}\t{state}\t{trust}\t{latest.name}"
        )


def _set_enabled(plugin_id: str, enabled: bool, tenant: str) -> None:
    from forecourt.plugins.schemas import PluginUpdate

    settings = load_settings()

    async def go(fc: Any) -> None:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            await fc.plugins(session).update(actor, plugin_id, PluginUpdate(enabled=enabled))

    run(lambda: _with_forecourt(settings, go))
    typer.echo(f"{'enabled' if enabled else 'disabled'} {plugin_id}")


@plugins_app.command("enable")
def plugins_enable(plugin_id: str, tenant: TenantOpt = "default") -> None:
    """Enable a plugin for one tenant (every installed version)."""
    _set_enabled(plugin_id, True, tenant)


@plugins_app.command("disable")
def plugins_disable(plugin_id: str, tenant: TenantOpt = "default") -> None:
    """Disable a plugin for one tenant: its instances there are disabled and stop running
    (calls, events, schedules)."""
    _set_enabled(plugin_id, False, tenant)


@publisher_keys_app.command("list")
def publisher_keys_list() -> None:
    """List trusted publisher keys: id (- for the configuration's), fingerprint, source,
    name, key."""
    from forecourt.plugins.publishers import PublisherKeys

    settings = load_settings()

    async def go(fc: Any) -> list[Any]:
        async with fc.sessionmaker() as session:
            return await PublisherKeys(session, fc.settings).list()

    for key in run(lambda: _with_forecourt(settings, go)):
        typer.echo(
            f"{key.id or '-'}\t{key.fingerprint}\t{key.source}\t{key.name}\t{key.public_key}"
        )


@publisher_keys_app.command("add")
def publisher_keys_add(
    public_key: Annotated[str, typer.Argument(help="ed25519:<base64 of the raw key>.")],
    name: Annotated[str, typer.Option("--name", help="Who publishes with it.")],
) -> None:
    """Trust a publisher key: packages it signed install from now on."""
    from forecourt.plugins.publishers import PublisherKeys

    settings = load_settings()

    async def go(fc: Any) -> Any:
        async with fc.sessionmaker() as session:
            actor = await _operator(session)
            return await PublisherKeys(session, fc.settings).add(actor, name, public_key)

    key = run(lambda: _with_forecourt(settings, go))
    typer.echo(f"trusted {key.fingerprint} ({key.name}) as {key.id}")


@publisher_keys_app.command("remove")
def publisher_keys_remove(
    key_id: Annotated[str, typer.Argument(help="The id `list` shows.")],
) -> None:
    """Stop trusting a publisher key added here (versions it signed stay installed)."""
    from forecourt.plugins.publishers import PublisherKeys

    settings = load_settings()

    async def go(fc: Any) -> None:
        async with fc.sessionmaker() as session:
            actor = await _operator(session)
            await PublisherKeys(session, fc.settings).remove(actor, key_id)

    run(lambda: _with_forecourt(settings, go))
    typer.echo(f"removed {key_id}")


@plugins_app.command("run")
def plugins_run(
    instance: Annotated[str, typer.Argument(help="An instance id or name.")],
    input: Annotated[str, typer.Option("--input", help="The input, as JSON.")] = "{}",
    tenant: TenantOpt = "default",
) -> None:
    """Run an instance now in the sandbox; prints the execution as JSON (exit 1 unless ok)."""
    import json

    from forecourt.plugins.schemas import ExecutionOut

    payload = json_option("--input", input)
    settings = load_settings()

    async def go(fc: Any) -> dict[str, Any]:
        async with fc.sessionmaker() as session:
            actor = await _tenant_principal(session, tenant)
            done = await fc.plugin_instances(session).execute(actor, instance, payload)
        record = ExecutionOut.model_validate(done.execution).model_dump(mode="json")
        return {**record, "output": done.output}

    result = run(lambda: _with_forecourt(settings, go))
    typer.echo(json.dumps(result, indent=2))
    if result["status"] != "ok":
        raise typer.Exit(1)


@app.command()
def doctor() -> None:
    """Check this host: the plugin sandbox's protections, and what is missing."""
    from forecourt.plugins.runner import sandbox_config
    from forecourt.plugins.sandbox import detect

    settings = load_settings()
    report = detect(sandbox_config(settings))
    require = settings.plugin_sandbox_require
    typer.echo(f"plugin sandbox (FORECOURT_PLUGIN_SANDBOX_REQUIRE={require}):")
    for protection in report.protections:
        mark = "ok     " if protection.available else "MISSING"
        optional = "" if protection.required else " (optional)"
        typer.echo(f"  {mark} {protection.name}{optional}: {protection.detail}")
    if report.complete:
        typer.echo("every required protection is available")
        return
    missing = ", ".join(report.missing)
    if require == "all":
        typer.echo(f"plugins will not run: missing {missing}")
        raise typer.Exit(1)
    typer.echo(
        f"plugins run without: {missing} (set FORECOURT_PLUGIN_SANDBOX_REQUIRE=all to refuse)"
    )


def main() -> None:
    app()
