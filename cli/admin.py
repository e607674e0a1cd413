"""Operator commands that talk to the database directly (no HTTP): keys, models, migrate.

Heavy imports (SQLAlchemy, Alembic) happen inside the commands so that `safetune --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.client import fail

console = Console()
keys_app = typer.Typer(
    help="Create and revoke tenant API keys, rotate the report-link secret (direct database access).",
    no_args_is_help=True,
)


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name; created if it does not exist.")],
) -> None:
    """Create an API key for TENANT. The key is printed once and cannot be recovered."""
    from safetune.db import session_scope
    from safetune.repositories import tenants as tenants_repo

    with session_scope() as session:
        row = tenants_repo.get_tenant_by_name(session, tenant)
        created = row is None
        if row is None:
            row = tenants_repo.create_tenant(session, tenant)
        key, raw = tenants_repo.create_api_key(session, row.id)
        tenant_id, key_id = row.id, key.id
    typer.echo(f"{'created tenant' if created else 'tenant'} {tenant} ({tenant_id})", err=True)
    typer.echo(f"key id {key_id}; store this key now, it is not shown again:", err=True)
    typer.echo(raw)


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(metavar="KEY_ID")]) -> None:
    """Revoke an API key by id; requests with it get 401 from then on."""
    from safetune.db import session_scope
    from safetune.models import ApiKey
    from safetune.repositories import tenants as tenants_repo

    with session_scope() as session:
        # A primary-key load: the tenant id scopes the revocation in the repository function.
        key = session.get(ApiKey, key_id)
        revoked = key is not None and tenants_repo.revoke_api_key(session, key.tenant_id, key_id)
    if not revoked:
        fail(f"no active API key with id {key_id!r}")
    typer.echo(f"revoked {key_id}")


@keys_app.command("rotate-link-secret")
def rotate_link_secret() -> None:
    """Replace the server secret behind report links: every link minted so far stops working."""
    from safetune.db import session_scope
    from safetune.repositories import server_secrets

    with session_scope() as session:
        server_secrets.rotate_secret(session, server_secrets.REPORT_LINK_SECRET)
    typer.echo("report-link secret rotated: every report link minted before now is revoked")


@keys_app.command("list")
def list_keys(tenant: Annotated[str, typer.Option("--tenant", help="Tenant name.")]) -> None:
    """List a tenant's keys (prefixes only; keys themselves are never stored)."""
    from safetune.db import session_scope
    from safetune.repositories import tenants as tenants_repo

    with session_scope() as session:
        row = tenants_repo.get_tenant_by_name(session, tenant)
        if row is None:
            fail(f"no tenant named {tenant!r}")
        keys = [
            (k.id, k.prefix, k.created_at, k.revoked_at) for k in tenants_repo.list_api_keys(session, row.id)
        ]
    table = Table("key id", "prefix", "created", "revoked")
    for key_id, prefix, created_at, revoked_at in keys:
        table.add_row(key_id, prefix + "…", str(created_at), str(revoked_at or "-"))
    console.print(table)


def alembic_ini() -> Path:
    """alembic.ini from the working directory, else from the source tree next to this package."""
    for candidate in (Path.cwd() / "alembic.ini", Path(__file__).resolve().parent.parent / "alembic.ini"):
        if candidate.is_file():
            return candidate
    fail("alembic.ini not found: run from the safetune source tree (or the image's /app)")


def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply database migrations (alembic upgrade) to SAFETUNE_DATABASE_URL."""
    from alembic import command
    from alembic.config import Config

    from safetune.config import get_settings

    settings = get_settings()
    ini = alembic_ini()
    config = Config(str(ini))
    config.attributes["configure_logger"] = False  # keep the process's own logging set-up
    config.set_main_option("script_location", str(ini.parent / "migrations"))
    config.attributes["url"] = settings.effective_database_url
    if settings.effective_database_url.startswith("sqlite"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(config, revision)
    typer.echo(f"database at {revision}")
