"""The ``gatekeeper`` command line: database, services, tokens and the demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from app.cli.models import models_cli
from app.cli.train import (
    calibrate_scorer_cmd,
    evaluate_gate_cmd,
    evaluate_scorer_cmd,
    train_scorer_cmd,
    train_segmenter_cmd,
)
from app.core.config import get_settings

cli = typer.Typer(help="Clinical segmentation gatekeeper.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
token_cli = typer.Typer(help="Bearer tokens.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(token_cli, name="token")
cli.add_typer(models_cli, name="models")
cli.command("train-scorer")(train_scorer_cmd)
cli.command("train-segmenter")(train_segmenter_cmd)
cli.command("calibrate-scorer")(calibrate_scorer_cmd)
cli.command("evaluate-scorer")(evaluate_scorer_cmd)
cli.command("evaluate-gate")(evaluate_gate_cmd)
console = Console(stderr=True)
ROOT = Path(__file__).resolve().parents[2]  # the repository (app/cli/ is two below it)


def alembic_config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    return cfg


@db_cli.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database at GATEKEEPER_DATABASE_URL to a revision (default: head)."""
    from alembic import command

    command.upgrade(alembic_config(), revision)
    console.print(f"[green]database at revision {revision}[/green]")


@db_cli.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base or -1.")) -> None:
    """Downgrade the database schema."""
    from alembic import command

    command.downgrade(alembic_config(), revision)


@token_cli.command("create")
def token_create(
    role: str = typer.Option(..., help="pacs, radiologist, ml_engineer or admin."),
    name: str = typer.Option("default", help="A label for audit events (no personal data)."),
    ttl_days: float = typer.Option(0, help="Days until the token expires; 0 for never."),
) -> None:
    """Print a new bearer token for a role (its hash is stored; the secret is shown once)."""
    from app.core.db import session_scope
    from app.core.security import Role, create_token

    try:
        parsed = Role(role)
    except ValueError:
        console.print(f"[red]unknown role {role!r}; choose one of {', '.join(r.value for r in Role)}[/red]")
        raise typer.Exit(2) from None
    with session_scope() as session:
        secret = create_token(session, role=parsed, name=name, ttl_days=ttl_days or None)
    print(secret)


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8042), workers: int = typer.Option(1)
) -> None:
    """Run the API (DICOMweb, peer push, queue) with uvicorn."""
    import uvicorn

    from app.core.http_protocol import PROTOCOL  # read timeouts, keep-alive and header bound from the settings

    uvicorn.run("app.main:app", host=host, port=port, workers=workers, log_level="warning", access_log=False,
                http=PROTOCOL)  # fmt: skip


@cli.command()
def worker(
    concurrency: int = typer.Option(1, help="Worker child processes."),
    queues: str = typer.Option("scoring,training,delivery", help="Comma-separated: scoring, training, delivery."),
) -> None:
    """Run a Celery worker (prefork) for the scoring queue."""
    args = ["celery", "-A", "workers.celery_app", "worker", "--pool=prefork", f"--concurrency={concurrency}",
            f"--queues={queues}", "--loglevel=INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
    os.execvp(sys.executable, [sys.executable, "-m", *args])


@cli.command()
def dispatcher() -> None:
    """Run completion, outbox relay and reconciler on their own (when the API runs without them)."""
    import threading

    from app.api.deps import get_store
    from app.core.logging import configure_logging
    from app.services import dispatch
    from app.services.jobs import publish_delivery, publish_job

    settings = get_settings()
    configure_logging(settings.log_level)
    dispatch.run_forever(settings, publish_job, get_store(), threading.Event(), publish_delivery)


@cli.command()
def demo(
    study_dir: Path = typer.Option(ROOT / "samples" / "totalseg-example" / "ct-dicom", help="Folder of DICOM files."),
    timeout_s: float = typer.Option(180, help="Seconds to wait for the series to be routed."),
) -> None:
    """Start API + worker on the configured database and broker, push a study by STOW-RS, follow it."""
    from app.cli.demo import run_demo

    raise typer.Exit(run_demo(study_dir=study_dir, timeout_s=timeout_s, console=console))


if __name__ == "__main__":
    cli()
