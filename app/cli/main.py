"""The ``gatekeeper`` command line: database, services, tokens and the demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from app.cli.gate import evaluate_failure_gate_cmd, fit_failure_risk_cmd, simulate_active_learning_cmd
from app.cli.models import models_cli
from app.cli.patch import calibrate_patch_scorer_cmd, evaluate_patch_scorer_cmd, train_patch_scorer_cmd
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
cli.command("train-patch-scorer")(train_patch_scorer_cmd)
cli.command("calibrate-patch-scorer")(calibrate_patch_scorer_cmd)
cli.command("evaluate-patch-scorer")(evaluate_patch_scorer_cmd)
cli.command("fit-failure-risk")(fit_failure_risk_cmd)
cli.command("evaluate-failure-gate")(evaluate_failure_gate_cmd)
cli.command("simulate-active-learning")(simulate_active_learning_cmd)
console = Console(stderr=True)
ROOT = Path(__file__).resolve().parents[2]  # the repository (app/cli/ is two below it)


def alembic_config():  # type: ignore[no-untyped-def]
    """The ``migrations`` package (the repository's migrations/, shipped in the wheel as a top-level package),
    found by import: an installed ``gatekeeper db upgrade`` works from any folder, not only from a checkout.
    The checkout's alembic.ini points at the same folder for plain ``alembic``."""
    from importlib.resources import files

    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    return config


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


def _role(role: str):  # type: ignore[no-untyped-def]
    from app.core.security import Role

    try:
        return Role(role)
    except ValueError:
        console.print(f"[red]unknown role {role!r}; choose one of {', '.join(r.value for r in Role)}[/red]")
        raise typer.Exit(2) from None


@token_cli.command("create")
def token_create(
    role: str = typer.Option(..., help="pacs, radiologist, ml_engineer, admin or monitoring."),
    name: str = typer.Option(None, help="Whose token (audit events show it; no personal data); generated if left out."),
    ttl_days: float = typer.Option(0, help="Days until the token expires; 0 for never."),
) -> None:
    """Print a new bearer token for a role (its hash is stored; the secret is shown once)."""
    from app.core.db import session_scope
    from app.core.errors import DomainError
    from app.services import tokens

    parsed = _role(role)
    try:
        with session_scope() as session:
            secret, row = tokens.issue(session, role=parsed, name=name, ttl_days=ttl_days or None, actor="cli")
            token_id, token_name = row.id, row.name
    except DomainError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"token {token_id} [bold]{token_name}[/bold] ({parsed.value})")
    print(secret)


@token_cli.command("list")
def token_list(
    all_: bool = typer.Option(True, "--all/--active", help="Include revoked tokens (default) or only unrevoked ones."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array on stdout instead of a table."),
) -> None:
    """Every token: id, name, role, state (active, expired, revoked) and dates. Never a secret or a hash."""
    import json

    from rich.table import Table

    from app.core.db import session_scope
    from app.services import tokens

    with session_scope() as session:
        rows = [tokens.describe(t) for t in tokens.list_tokens(session, include_revoked=all_)]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("id", "name", "role", "state", "created", "expires", "revoked")
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["role"], r["state"], r["created_at"] or "", r["expires_at"] or "",
                      r["revoked_at"] or "")  # fmt: skip
    Console().print(table)


@token_cli.command("revoke")
def token_revoke(token_id: int = typer.Argument(..., help="The token's id (see `gatekeeper token list`).")) -> None:
    """Revoke a token: every API process refuses it from its very next request."""
    from app.core.db import session_scope
    from app.core.errors import DomainError
    from app.services import tokens

    try:
        with session_scope() as session:
            row = tokens.revoke(session, token_id=token_id, actor="cli")
            name = row.name
    except DomainError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]token {token_id} ({name}) revoked[/green]")


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8042), workers: int = typer.Option(1)
) -> None:
    """Run the API (DICOMweb, peer push, queue) with uvicorn, and the DIMSE receiver when its port is set.

    uvicorn's access log stays off (it writes the raw path and query, UIDs and PatientIDs among them); the
    API's own (GATEKEEPER_ACCESS_LOG) logs route templates."""
    import shutil
    import tempfile

    import uvicorn

    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several API processes: each writes its counters to files there; a scrape of any one sums them all.
        folder = Path(tempfile.gettempdir()) / f"gatekeeper-metrics-{port}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    receiver = _start_receiver(None, None) if get_settings().dimse_port is not None else None
    try:
        # proxy_headers=False: X-Forwarded-* are applied by the app, from GATEKEEPER_TRUSTED_PROXIES only
        # (uvicorn's default would believe any such header from 127.0.0.1).
        from app.core.http_protocol import PROTOCOL  # read timeouts, keep-alive and header bound from the settings

        uvicorn.run("app.main:app", host=host, port=port, workers=workers, log_level="warning", access_log=False,
                    proxy_headers=False, http=PROTOCOL)  # fmt: skip
    finally:
        if receiver is not None:
            receiver.stop()


def _start_receiver(host: str | None, port: int | None):  # type: ignore[no-untyped-def]
    from app.api.deps import get_store
    from app.core.logging import configure_logging
    from app.dimse.server import Receiver
    from app.services.dimse import AllowListError

    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        receiver = Receiver(settings, get_store(), host=host, port=port)
        receiver.start()
    except AllowListError as exc:
        console.print(f"[red]DIMSE receiver: {exc}[/red]")
        raise typer.Exit(2) from None
    except OSError as exc:
        console.print(f"[red]DIMSE receiver cannot listen: {exc.strerror or type(exc).__name__}[/red]")
        raise typer.Exit(2) from None
    return receiver


@cli.command()
def dimse(
    host: str = typer.Option(None, help="Address to listen on (default GATEKEEPER_DIMSE_HOST)."),
    port: int = typer.Option(None, help="Port (default GATEKEEPER_DIMSE_PORT)."),
) -> None:
    """Run the DICOM C-ECHO / C-STORE receiver alone (AE title GATEKEEPER_DIMSE_AE_TITLE)."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    receiver = _start_receiver(host, port)
    console.print(f"DIMSE receiver {receiver.ae_title} on {receiver.host}:{receiver.port}")
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()


@cli.command()
def worker(
    concurrency: int = typer.Option(1, help="Worker child processes."),
    queues: str = typer.Option(
        "scoring,delivery",
        help="Comma-separated queues: scoring, delivery (results back to the PACS), training. Run training on a "
        "worker of its own (--queues training), so that scoring never waits behind it.",
    ),
) -> None:
    """Run a Celery worker (prefork); by default for the scoring queue only."""
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
    configure_logging(settings.log_level, settings.log_format)
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
