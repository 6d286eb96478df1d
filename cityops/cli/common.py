"""Helpers shared by every ``cityops`` sub-command module."""

from __future__ import annotations

from typing import NoReturn

import typer

from cityops.core.audit import Actor, current_actor
from cityops.core.db import Database


def cli_db() -> Database:
    current_actor.set(Actor(None, "cli"))
    return Database()


def ready_db() -> Database:
    """The database, refusing clearly when its schema is missing or out of date."""
    from cityops.core.migrate import current_revision, head_revision

    db = cli_db()
    try:
        rev = current_revision(db.engine)
    except Exception as exc:
        fail(f"cannot open the database {db.engine.url.render_as_string()}: {exc}", 2)
    if rev != head_revision():
        fail(
            f"the database {db.engine.url.render_as_string()} is at migration {rev}, "
            f"not {head_revision()}: run `cityops migrate` first",
            2,
        )
    return db


def fail(msg: str, code: int = 1) -> NoReturn:
    typer.echo(msg, err=True)
    raise typer.Exit(code)
