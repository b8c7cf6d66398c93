"""``gatekeeper models ...``: the registry from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from app.core.config import get_settings

models_cli = typer.Typer(help="Model registry: register, list, promote, roll back.", no_args_is_help=True)
console = Console()


METRICS_HELP = (
    "JSON metrics measured on the frozen test split (test_dice_per_slice for a segmenter, "
    "test_fpr_at_threshold for a scorer); without them the version is stored as unmeasured."
)


@models_cli.command("register")
def register(
    kind: str = typer.Option(..., help="scorer or segmenter."),
    file: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="A checkpoint written by train-scorer/train-segmenter."
    ),
    metrics: str = typer.Option("{}", help=METRICS_HELP),
    promote: bool = typer.Option(False, help="Promote it at once."),
) -> None:
    """Copy a checkpoint into the registry (sha256 recorded) as a new version."""
    from app.core.db import session_scope
    from app.services import registry
    from workers.training.model_card import checked_card

    extra = json.loads(metrics)
    with session_scope() as session:
        try:
            card = checked_card(file, kind, source_file=file.name)
            row = registry.register(session=session, models_dir=get_settings().models_dir, kind=kind, source=file,
                                    metrics=extra, card=card, actor="cli")  # fmt: skip
        except registry.RegistryError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        if promote:
            registry.promote(session=session, model_id=row.id, actor="cli")
        console.print(f"{kind} v{row.version} (id {row.id}) sha256 {row.sha256[:16]}… {'promoted' if promote else ''}")


@models_cli.command("list")
def list_models(kind: str = typer.Option(None, help="scorer or segmenter.")) -> None:
    """Every version with its status and metrics."""
    from app.core.db import session_scope
    from app.db import model_versions

    table = Table("id", "kind", "version", "status", "sha256", "metrics")
    with session_scope() as session:
        for m in model_versions.list_versions(session, kind):
            table.add_row(str(m.id), m.kind, str(m.version), m.status, m.sha256[:12], json.dumps(m.metrics)[:80])
    console.print(table)


@models_cli.command("promote")
def promote(model_id: int = typer.Argument(..., help="Model version id.")) -> None:
    """Promote a version (series already in flight keep their versions)."""
    from app.core.db import session_scope
    from app.services import registry

    with session_scope() as session:
        row = registry.promote(session=session, model_id=model_id, actor="cli")
        console.print(f"promoted {row.kind} v{row.version}")


@models_cli.command("rollback")
def rollback(kind: str = typer.Argument(..., help="scorer or segmenter.")) -> None:
    """Promote again the version promoted before the current one."""
    from app.core.db import session_scope
    from app.services import registry

    with session_scope() as session:
        row = registry.rollback(session=session, kind=kind, actor="cli")
        console.print(f"rolled back to {row.kind} v{row.version}")


@models_cli.command("card")
def card(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A checkpoint file.")) -> None:
    """Print a checkpoint's model card: sha256, data and licences, steps, configuration, metrics."""
    from workers.training.model_card import build_card, card_markdown

    console.print(card_markdown(build_card(file)), markup=False, highlight=False)
