"""Test databases: SQLite by default, PostgreSQL when CITYOPS_TEST_DATABASE_URL is set.

Every test gets its own database cloned from a template that was migrated once per
session (SQLite: a file copy; PostgreSQL: ``CREATE DATABASE … TEMPLATE``), so tests can
commit for real (concurrency tests need that) and never see each other's data.

Fixtures:
* ``db`` — an empty, migrated database (``cityops.core.db.Database``).
* ``city`` — a database holding the ``small`` demo city (seed 7): categories, regions,
  units, grids, components, users (password ``demo-pass-2026`` for every demo user).
* ``client`` / ``city_client`` — FastAPI ``TestClient`` over those databases.

When CITYOPS_TEST_DATABASE_URL is set and PostgreSQL is unreachable, the session fails:
it never silently falls back to SQLite.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cityops.core import db as dbmod
from cityops.core.migrate import upgrade
from cityops.core.settings import get_settings, normalise_url

PG_URL = os.environ.get("CITYOPS_TEST_DATABASE_URL", "")
_counter = itertools.count()


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0")


class Templates:
    """Creates and clones template databases for one test session (one xdist worker)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg = bool(PG_URL)
        if self.pg:
            self.base_url = make_url(normalise_url(PG_URL))
            self.admin = create_engine(
                self.base_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True
            )
            try:
                with self.admin.connect() as c:
                    c.execute(text("SELECT 1"))
            except Exception as exc:  # pragma: no cover - the failure is the point
                pytest.exit(
                    f"CITYOPS_TEST_DATABASE_URL={PG_URL} is set but PostgreSQL is unreachable: {exc}",
                    returncode=3,
                )
        self.created: list[str] = []

    def _pg_name(self, label: str) -> str:
        return f"cityops_{_worker()}_{label}_{os.getpid()}_{next(_counter)}"

    def _pg_url(self, name: str) -> str:
        return self.base_url.set(database=name).render_as_string(hide_password=False)

    def new_empty(self, label: str) -> str:
        if self.pg:
            name = self._pg_name(label)
            with self.admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                c.execute(text(f'CREATE DATABASE "{name}"'))
            self.created.append(name)
            return self._pg_url(name)
        path = self.tmp / f"{label}-{next(_counter)}.db"
        return f"sqlite:///{path}"

    def clone(self, template_url: str, label: str) -> str:
        if self.pg:
            src = make_url(template_url).database
            name = self._pg_name(label)
            with self.admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{src}"'))
            self.created.append(name)
            return self._pg_url(name)
        src_path = Path(template_url.split("///", 1)[1])
        dst = self.tmp / f"{label}-{next(_counter)}.db"
        shutil.copyfile(src_path, dst)
        return f"sqlite:///{dst}"

    def drop(self, url: str) -> None:
        if self.pg:
            name = make_url(url).database
            with self.admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if name in self.created:
                self.created.remove(name)
        else:
            p = Path(url.split("///", 1)[1])
            for suffix in ("", "-wal", "-shm"):
                Path(str(p) + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        for name in list(self.created):
            self.drop(self._pg_url(name))
        if self.pg:
            self.admin.dispose()


def _checkpoint(url: str) -> None:
    """Fold the WAL into the main file so that a file copy is a complete database."""
    if url.startswith("sqlite"):
        e = create_engine(url)
        with e.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        e.dispose()


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    os.environ.setdefault("CITYOPS_WARM_INDEXES", "false")
    os.environ.setdefault("CITYOPS_SCHEDULER", "off")
    # API tests run without the console; console tests use NiceGUI's simulation (console_support)
    os.environ.setdefault("CITYOPS_CONSOLE", "off")
    os.environ["CITYOPS_VAR_DIR"] = str(tmp_path_factory.mktemp("var"))
    get_settings.cache_clear()
    t = Templates(tmp_path_factory.mktemp("dbs"))
    yield t
    t.close()


@pytest.fixture(scope="session")
def empty_template(templates: Templates) -> str:
    url = templates.new_empty("empty")
    d = dbmod.Database(url)
    upgrade(d.engine)
    d.dispose()
    _checkpoint(url)
    return url


@pytest.fixture(scope="session")
def city_template(templates: Templates, empty_template: str) -> str:
    from cityops.geo.demo import build_demo

    url = templates.clone(empty_template, "city")
    d = dbmod.Database(url)
    build_demo(d, scale="small", seed=7)
    d.dispose()
    _checkpoint(url)
    return url


def _use(templates: Templates, template_url: str, label: str) -> Iterator[dbmod.Database]:
    url = templates.clone(template_url, label)
    d = dbmod.Database(url)
    dbmod.set_db(d)
    try:
        yield d
    finally:
        dbmod.set_db(None)
        d.dispose()
        templates.drop(url)


@pytest.fixture
def db(templates: Templates, empty_template: str) -> Iterator[dbmod.Database]:
    yield from _use(templates, empty_template, "t")


@pytest.fixture
def city(templates: Templates, city_template: str) -> Iterator[dbmod.Database]:
    yield from _use(templates, city_template, "c")


def _client(d: dbmod.Database):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from cityops.app import create_app

    return TestClient(create_app(d), raise_server_exceptions=True)


@pytest.fixture
def client(db: dbmod.Database) -> Iterator[object]:
    with _client(db) as c:
        yield c


@pytest.fixture
def city_client(city: dbmod.Database) -> Iterator[object]:
    with _client(city) as c:
        yield c
