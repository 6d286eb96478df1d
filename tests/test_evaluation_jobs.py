"""Scheduled reports (定时报表): the ``evaluation.reports`` job driven with a fake clock across
day, week and month boundaries; what it archives, once, even after a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cityops.core.errors import Invalid
from cityops.core.jobs import JobRunner, registered
from cityops.core.settings import get_settings
from cityops.evaluation import jobs as ev_jobs
from cityops.evaluation import reports
from tests.test_evaluation import crafted_day, store  # noqa: F401  (fixture)

SH = ZoneInfo("Asia/Shanghai")


def local(y: int, mo: int, d: int, h: int, mi: int) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=SH).astimezone(UTC)


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CITYOPS_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


def archive(var_dir: Path) -> set[str]:
    root = var_dir / "reports"
    return {f"{p.parent.name}/{p.stem}" for p in root.glob("*/*.json")} if root.is_dir() else set()


def test_scheduled_reports_across_boundaries(city: Any, store: Any, var_dir: Path) -> None:  # noqa: F811
    with city.session() as s:
        crafted_day(s, store)  # Tuesday 2026-11-17
    assert ev_jobs.JOB_NAME in {j.name for j in registered()}
    runner = JobRunner(city)

    def tick(now: datetime) -> Any:
        assert ev_jobs.JOB_NAME in runner.run_due(now)
        return runner.states[ev_jobs.JOB_NAME].last_result

    # Monday 2026-11-30 07:29: 晨报/周报 not yet due; last month's 月报 (due since Nov 1) is
    assert tick(local(2026, 11, 30, 7, 29)) == ["monthly/2026-10"]
    assert archive(var_dir) == {"monthly/2026-10"}
    # 07:30: yesterday's 晨报 and last week's 周报
    assert tick(local(2026, 11, 30, 7, 30)) == ["morning/2026-11-29", "weekly/2026-W48"]
    first = json.loads((var_dir / "reports/weekly/2026-W48.json").read_text("utf-8"))
    assert (first["start"], first["end"]) == ("2026-11-23", "2026-11-30")
    assert first["generated_by"] == "scheduler"
    # later that morning: nothing new, nothing regenerated
    assert tick(local(2026, 11, 30, 9, 0)) == []
    # a restart (new runner, new leader): the archive says what is done
    runner = JobRunner(city)
    assert tick(local(2026, 11, 30, 9, 5)) == []
    again = json.loads((var_dir / "reports/weekly/2026-W48.json").read_text("utf-8"))
    assert again["generated_at"] == first["generated_at"]
    # Tuesday Dec 1, 07:30: Monday's 晨报 and November's 月报 (周报 W48 already there)
    assert tick(local(2026, 12, 1, 7, 30)) == ["morning/2026-11-30", "monthly/2026-11"]
    nov = json.loads((var_dir / "reports/monthly/2026-11.json").read_text("utf-8"))
    assert nov["figures"]["立案数"] == 6  # the crafted day's cases (A B C D F G)
    assert nov["figures"]["结案数"] == 5
    # a report generated on demand counts as archived: the job leaves it alone
    with city.session() as s:
        reports.generate(s, "morning", datetime(2026, 12, 1).date(), local(2026, 12, 1, 20, 0), "x")
    assert tick(local(2026, 12, 2, 8, 0)) == []
    # the time is configuration: 晨报 at 06:00, 周报 off
    with city.session() as s:
        assert ev_jobs.set_schedule(s, {"morning": "06:00", "weekly": None})["morning"] == "06:00"
        with pytest.raises(Invalid):
            ev_jobs.set_schedule(s, {"morning": "25:00"})
        with pytest.raises(Invalid):
            ev_jobs.set_schedule(s, {"hourly": "06:00"})
    assert tick(local(2026, 12, 3, 5, 59)) == []
    assert tick(local(2026, 12, 3, 6, 0)) == ["morning/2026-12-02"]
    assert tick(local(2026, 12, 7, 8, 0)) == ["morning/2026-12-06"]  # Monday: no 周报 W49
    assert archive(var_dir) == {
        "monthly/2026-10",
        "monthly/2026-11",
        "morning/2026-11-29",
        "morning/2026-11-30",
        "morning/2026-12-01",
        "morning/2026-12-02",
        "morning/2026-12-06",
        "weekly/2026-W48",
    }
    # both formats of each archived report are there
    for name in archive(var_dir):
        kind, period = name.split("/")
        assert reports.report_path(kind, period, "xlsx").stat().st_size > 0
        assert reports.report_path(kind, period, "html").stat().st_size > 0


def test_schedule_api(city: Any, var_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from cityops.app import create_app

    with TestClient(create_app(city)) as client:

        def login(u: str) -> dict[str, str]:
            r = client.post(
                "/api/v1/auth/login", json={"username": u, "password": "demo-pass-2026"}
            )
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['token']}"}

        lead, adm = login("leader1"), login("admin")
        r = client.get("/api/v1/evaluation/reports/schedule", headers=lead)
        assert r.status_code == 200 and r.json()["schedule"]["morning"] == "07:30"
        body = {"morning": "06:45"}
        r = client.put("/api/v1/evaluation/reports/schedule", json=body, headers=lead)
        assert r.status_code == 403
        r = client.put("/api/v1/evaluation/reports/schedule", json=body, headers=adm)
        assert r.status_code == 200 and r.json()["schedule"] == {
            "morning": "06:45",
            "weekly": "07:30",
            "monthly": "07:30",
        }
        r = client.put("/api/v1/evaluation/reports/schedule", json={"weekly": "7:3"}, headers=adm)
        assert r.status_code == 422 and "weekly" in r.text
