"""``cityops flood …``: evaluate the proposal rules now, print the board, export an
after-event report (JSON or .xlsx). Runs as the city-wide system user ``cli``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cityops.core.security import Principal

flood_app = typer.Typer(help="Flood command (防汛云调度).", no_args_is_help=True)

CLI_PRINCIPAL = Principal(
    user_id=0,
    username="cli",
    display_name="cli",
    roles=frozenset({"admin"}),
    unit_id=None,
    scope_region_code=None,
    scope_unit_only=False,
)


@flood_app.callback()
def _group() -> None:
    """Flood command (防汛云调度)."""


@flood_app.command("evaluate")
def evaluate() -> None:
    """Evaluate the proposal rules on the gauges now; record a proposal if they ask for more
    than the active response level (same as the ``flood.proposals`` job)."""
    import cityops.models  # noqa: F401
    from cityops.cli.common import ready_db
    from cityops.core.db import utcnow
    from cityops.flood import service

    db = ready_db()
    try:
        with db.session() as s:
            out = service.run_proposals(s, utcnow())
        typer.echo(json.dumps(out, ensure_ascii=False))
    finally:
        db.dispose()


@flood_app.command("board")
def board() -> None:
    """Print the live board (JSON)."""
    import cityops.models  # noqa: F401
    from cityops.cli.common import ready_db
    from cityops.core.db import utcnow
    from cityops.flood import service

    db = ready_db()
    try:
        with db.session() as s:
            out = service.board(s, CLI_PRINCIPAL, utcnow())
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
    finally:
        db.dispose()


@flood_app.command("report")
def report(
    event_id: Annotated[int, typer.Argument(help="Response event id")],
    xlsx: Annotated[Path | None, typer.Option(help="Write the Excel workbook here")] = None,
) -> None:
    """The after-event report of a response: JSON on stdout, or an .xlsx file."""
    import cityops.models  # noqa: F401
    from cityops.cli.common import fail, ready_db
    from cityops.core.db import utcnow
    from cityops.core.errors import DomainError
    from cityops.flood import service

    db = ready_db()
    try:
        with db.session() as s:
            try:
                rep = service.event_report(s, CLI_PRINCIPAL, event_id, utcnow())
            except DomainError as exc:
                fail(exc.message)
        if xlsx is not None:
            xlsx.write_bytes(service.report_xlsx(rep))
            typer.echo(f"wrote {xlsx}")
        else:
            typer.echo(json.dumps(rep, ensure_ascii=False, indent=2))
    finally:
        db.dispose()
