"""``cityops simulate cases …`` and ``cityops import cases FILE``.

Register in ``cityops/cli/main.py`` with::

    from cityops.cases.cli import import_cases_command, simulate_app

    app.add_typer(simulate_app, name="simulate")
    import_app.command("cases")(import_cases_command)

(:data:`cases_app` offers the same two commands as ``cases simulate`` / ``cases import`` for
a ``cityops cases …`` group.)
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

import cityops.models  # noqa: F401  (every table registered before any query)
from cityops.cli.common import fail, ready_db
from cityops.core.errors import DomainError

simulate_app = typer.Typer(help="Generate simulated data.", no_args_is_help=True)
cases_app = typer.Typer(help="Cases: simulate history, import legacy cases.", no_args_is_help=True)


@simulate_app.callback()
def _simulate() -> None:
    """Generate simulated data (case history) in the configured database."""


@simulate_app.command("cases")
def simulate_cases_command(
    days: Annotated[int, typer.Option("--days", min=1, help="number of local days")] = 7,
    per_day: Annotated[int, typer.Option("--per-day", min=1, help="reports per day")] = 200,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same history)")] = 7,
    start: Annotated[
        str | None, typer.Option(help="first day YYYY-MM-DD (default: --days before today)")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="service: every action through the workflow (tens of cases/s); bulk: rows"
            " generated and bulk-inserted, bypassing the workflow (for millions of cases)"
        ),
    ] = "service",
    finish: Annotated[
        bool, typer.Option("--finish", help="service: run every case to its end")
    ] = False,
    photos: Annotated[
        str,
        typer.Option(help="service: reuse (one stored photo per run) | upload (one per action)"),
    ] = "reuse",
    tick_minutes: Annotated[
        float, typer.Option(help="service: run the deadline scheduler every N simulated minutes")
    ] = 15,
    batch: Annotated[int, typer.Option(min=1, help="bulk: cases per transaction")] = 25_000,
    final_tick: Annotated[
        bool, typer.Option(help="bulk: one scheduler tick at the end (临期/超期 of open cases)")
    ] = True,
    parallel: Annotated[
        bool, typer.Option(help="bulk: compute the next batch in a second process")
    ] = True,
) -> None:
    """Generate realistic case history (see cityops.cases.simulate); prints a JSON summary."""
    from cityops.cases.simulate import simulate_cases

    first: date | None = None
    if start is not None:
        try:
            first = date.fromisoformat(start)
        except ValueError:
            fail(f"--start {start!r} is not a date (YYYY-MM-DD)", 2)
    if mode not in ("service", "bulk"):
        fail(f"--mode must be service or bulk, not {mode!r}", 2)
    db = ready_db()
    try:
        summary = simulate_cases(
            db,
            days,
            per_day,
            seed=seed,
            start=first,
            mode=mode,
            finish=finish,
            photos=photos,
            progress=sys.stderr,
            batch_cases=batch,
            tick_minutes=tick_minutes,
            final_tick=final_tick,
            parallel=parallel,
        )
    except DomainError as exc:
        fail(json.dumps(exc.to_dict(), ensure_ascii=False, indent=2), 1)
    finally:
        db.dispose()
    if mode == "bulk":
        _rebuild_evaluation(first)
    typer.echo(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))


def _rebuild_evaluation(since: date | None) -> None:
    """Bulk writes bypass the per-transition rollups: recompute them for what was written."""
    from cityops.evaluation.rollup import rebuild

    db = ready_db()
    try:
        with db.session() as s:
            n = rebuild(s, since=since)
        print(f"evaluation rollups rebuilt ({n} counters)", file=sys.stderr)
    finally:
        db.dispose()


def import_cases_command(
    file: Path,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="write the valid rows, report the rest")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv | json (default: by suffix)")
    ] = None,
    crs: Annotated[
        str | None,
        typer.Option(
            "--crs", help="coordinates without a crs field: wgs84 | cgcs2000 | gcj02 | bd09"
        ),
    ] = None,
) -> None:
    """Import legacy cases from CSV or JSON (see cityops.cases.legacy_import); on any error
    nothing is written."""
    from cityops.cases.legacy_import import import_cases

    if not file.exists():
        fail(f"{file}: no such file", 2)
    db = ready_db()
    try:
        with db.session() as s:
            try:
                report = import_cases(s, file, skip_invalid=skip_invalid, fmt=fmt, crs=crs)
            except DomainError as exc:
                fail(f"{file}: {exc.message}", 2)
            typer.echo(report.to_text())
            if report.error_count and not skip_invalid:
                s.rollback()
                raise typer.Exit(1)
    finally:
        db.dispose()
    _rebuild_evaluation(None)


cases_app.command("simulate")(simulate_cases_command)
cases_app.command("import")(import_cases_command)
