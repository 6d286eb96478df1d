"""The ``cityops`` command line (Typer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

import cityops.models  # noqa: F401  (every table registered before any query)
from cityops.cases.cli import import_cases_command, simulate_app
from cityops.cli.common import cli_db, fail, ready_db
from cityops.core.errors import DomainError
from cityops.evaluation.cli import evaluation_app
from cityops.flood.cli import flood_app
from cityops.monitoring.cli import simulate_sensors
from cityops.worktime.cli import calendar_app

app = typer.Typer(help="CityOps 城市运行管理服务平台 command line.", no_args_is_help=True)
import_app = typer.Typer(
    help="Import city data (GeoJSON or CSV) with validation.", no_args_is_help=True
)
export_app = typer.Typer(help="Export city data as GeoJSON or CSV.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
app.add_typer(calendar_app, name="calendar")
app.add_typer(evaluation_app, name="evaluation")
simulate_app.command("sensors")(simulate_sensors)
app.add_typer(simulate_app, name="simulate")
app.add_typer(flood_app, name="flood")
import_app.command("cases")(import_cases_command)

KINDS = ("regions", "units", "grids", "components", "categories")


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic, to head)."""
    from cityops.core.migrate import current_revision, upgrade

    db = cli_db()
    upgrade(db.engine)
    typer.echo(
        f"database {db.engine.url.render_as_string()} at revision {current_revision(db.engine)}"
    )


@app.command()
def demo(
    scale: Annotated[str, typer.Option(help="small | city | large")] = "city",
    seed: Annotated[int, typer.Option(help="random seed (same seed, same city)")] = 7,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="only when there are no grids yet")
    ] = False,
) -> None:
    """Generate the deterministic demo city (regions, units, grids, components, users, POIs)."""
    from cityops.core.migrate import upgrade
    from cityops.geo.demo import build_demo
    from cityops.geo.index import count_rows

    if scale not in ("small", "city", "large"):
        fail(f"--scale must be small, city or large, not {scale!r}", 2)
    db = cli_db()
    upgrade(db.engine)
    with db.session() as s:
        if if_empty and count_rows(s, "grids") > 0:
            typer.echo("the database already holds a city: demo not loaded")
            return
    try:
        summary = build_demo(db, scale=scale, seed=seed)
    except DomainError as exc:
        fail(exc.message, 1)
        return
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))


@app.command()
def locate(
    lon: float,
    lat: float,
    crs: Annotated[str, typer.Option(help="wgs84 | cgcs2000 | gcj02 | bd09")] = "wgs84",
) -> None:
    """Which unit grid, community, street and district a point is in (same JSON as the API)."""
    from cityops.geo.service import locate as do_locate

    db = ready_db()
    with db.session() as s:
        try:
            result = do_locate(s, lon, lat, crs)
        except DomainError as exc:
            typer.echo(json.dumps(exc.to_dict(), ensure_ascii=False, indent=2))
            raise typer.Exit(1) from None
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2))


def _import(kind: str, file: Path, skip_invalid: bool, fmt: str | None, crs: str | None) -> None:
    from cityops.geo.importer import import_file

    if not file.exists():
        fail(f"{file}: no such file", 2)
    db = ready_db()
    with db.session() as s:
        try:
            report = import_file(s, kind, file, skip_invalid=skip_invalid, fmt=fmt, crs=crs)
        except DomainError as exc:
            fail(f"{file}: {exc.message}", 2)
            return
        typer.echo(report.to_text())
        if report.errors and not skip_invalid:
            s.rollback()
            raise typer.Exit(1)


def _make_import(kind: str) -> None:
    def cmd(
        file: Path,
        skip_invalid: Annotated[
            bool, typer.Option("--skip-invalid", help="write the valid rows, report the rest")
        ] = False,
        fmt: Annotated[
            str | None, typer.Option("--format", help="geojson | csv (default: by suffix)")
        ] = None,
        crs: Annotated[
            str | None,
            typer.Option("--crs", help="coordinates in the file: wgs84 | cgcs2000 | gcj02 | bd09"),
        ] = None,
    ) -> None:
        _import(kind, file, skip_invalid, fmt, crs)

    cmd.__doc__ = f"Import {kind} from GeoJSON or CSV; on any error nothing is written."
    import_app.command(kind)(cmd)


def _make_export(kind: str) -> None:
    def cmd(
        file: Path,
        fmt: Annotated[
            str | None, typer.Option("--format", help="geojson | csv (default: by suffix)")
        ] = None,
    ) -> None:
        from cityops.geo.exporter import export_file

        db = ready_db()
        try:
            with db.session() as s:
                n = export_file(s, kind, file, fmt=fmt)
        except DomainError as exc:
            fail(f"{file}: {exc.message}", 2)
            return
        typer.echo(f"exported {n} {kind} to {file}")

    cmd.__doc__ = f"Export {kind} as GeoJSON or CSV."
    export_app.command(kind)(cmd)


for _k in KINDS:
    _make_import(_k)
    _make_export(_k)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: CITYOPS_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: CITYOPS_PORT")] = None,
) -> None:
    """Serve the API (and console) with uvicorn."""
    import uvicorn

    from cityops.app import create_app
    from cityops.core.settings import get_settings

    st = get_settings()
    uvicorn.run(create_app(cli_db()), host=host or st.host, port=port or st.port, log_level="info")


if __name__ == "__main__":  # pragma: no cover
    app()
