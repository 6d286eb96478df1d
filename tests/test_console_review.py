"""Console pages of the evaluators: a third-party reviewer rates an assigned closed case
(personal data masked) and cannot open another reviewer's; a comprehensive-evaluation
evaluator records a site inspection."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from nicegui import ui
from sqlalchemy import select

from cityops.cases.models import Case, CaseAttachment
from cityops.cases.storage import LocalStorage
from cityops.core.db import Database
from cityops.evaluation import comprehensive as ce
from cityops.evaluation import review
from cityops.evaluation.models import CeRecord, ReviewAssignment
from tests.console_support import console_user, log_in
from tests.evaluation_review_support import inspected_grid, make_case
from tests.factories import photo, point_in, principal

NOV = (date(2026, 11, 1), date(2026, 12, 1))


async def enter(user: Any, username: str) -> None:
    """Log in and wait until the browser has landed on the user's home page (its navigation
    would otherwise replace a page opened right after)."""
    await log_in(user, username)
    await user.should_see(marker="title", retries=50)


def _text(user: Any, marker: str) -> str:
    el = user.find(marker=marker).elements.pop()
    assert isinstance(el, ui.label)
    return str(el.text)


@pytest.fixture
def store(tmp_path: Any) -> LocalStorage:
    return LocalStorage(tmp_path / "att")


def _assign(city: Database, store: LocalStorage) -> tuple[int, int, int]:
    """reviewer1 (district 341602) and reviewer3 (street 341602001) with one case each:
    the street reviewer is served first and takes the 341602001 case, reviewer1 the case of
    341602002 (reported by 张三丰 13812345678). Returns (mine, other's, my case id)."""
    with city.session() as s:
        mine = make_case(s, store, "341602002", 0, reporter=True)
        other = make_case(s, store, "341602001", 20)
        admin = principal(s, "admin")
        for username, area in (("reviewer1", "341602"), ("reviewer3", "341602001")):
            uid = principal(s, username).user_id
            review.register_reviewer(s, admin, {"user_id": uid, "kind": "人大代表", "area": area})
        rnd = review.create_round(
            s, None, name="2026-11", period_start=NOV[0], period_end=NOV[1], sample_size=1, seed=1
        )
        assert review.draw(s, rnd.id)["total"] == 2
        by_case = {
            a.case_id: a.id
            for a in s.scalars(select(ReviewAssignment).where(ReviewAssignment.round_id == rnd.id))
        }
        return by_case[mine.id], by_case[other.id], mine.id


async def test_reviewer_rates_an_assigned_case_and_cannot_open_another(
    city: Database, store: LocalStorage
) -> None:
    mine, other, case_id = _assign(city, store)
    async with console_user(city) as user:
        await enter(user, "reviewer1")  # lands on /review
        await user.should_see(marker=f"assignment-{mine}")
        await user.should_not_see(marker=f"assignment-{other}")
        reporter = _text(user, f"reporter-{mine}")
        assert "张三丰" not in reporter and "13812345678" not in reporter
        assert reporter.startswith("上报人 张") and "138" in reporter
        assert _text(user, f"assignment-rating-{mine}") == "待评价"

        await user.open(f"/review/{other}")  # another reviewer's: not revealed
        await user.should_see(marker="not-found")
        await user.should_not_see(marker="rating-form")

        await user.open(f"/review/{mine}")
        await user.should_see(marker="rating-form")
        choice = user.find(marker="rating-choice").elements.pop()
        assert isinstance(choice, ui.radio)
        choice.value = "不满意"
        user.find(marker="rate").click()  # 不满意 needs a comment: refused, nothing saved
        await user.should_see(marker="rating-error")
        with city.session() as s:
            assert s.get(ReviewAssignment, mine).rated_at is None  # type: ignore[union-attr]

        user.find(marker="rating-comment").type("路面仍有垃圾未清理")
        user.find(marker="rating-reopen").click()
        up = user.find(marker="rating-photo").elements.pop()
        assert isinstance(up, ui.upload)
        await up.handle_uploads([ui.upload.SmallFileUpload("r.jpg", "image/jpeg", photo())])
        await user.should_see("已上传 r.jpg")
        user.find(marker="rate").click()
        await user.should_see(marker="rated")
        assert _text(user, "rated-rating") == "不满意"
        await user.should_see(marker="rated-reopened")
        with city.session() as s:
            a = s.get(ReviewAssignment, mine)
            assert a is not None
            assert (a.rating, a.comment, a.reopened) == ("不满意", "路面仍有垃圾未清理", True)
            att = s.get(CaseAttachment, a.attachment_id)
            assert att is not None and (att.case_id, att.purpose) == (case_id, "review")
            c = s.get(Case, case_id)
            assert c is not None and c.stage != "closed"  # sent back for 核查
            assert s.get(ReviewAssignment, other).rated_at is None  # type: ignore[union-attr]

        await user.open("/review")
        assert _text(user, f"assignment-rating-{mine}") == "不满意"

    async with console_user(city) as user:  # other roles are refused
        await enter(user, "evaluator1")
        await user.open("/review")
        await user.should_see(marker="forbidden")


async def test_evaluator_records_a_site_inspection(city: Database) -> None:
    with city.session() as s:
        ev = principal(s, "evaluator1")
        task = ce.create_task(
            s,
            principal(s, "admin"),
            {
                "name": "2026年11月综合评价",
                "period_start": NOV[0],
                "period_end": NOV[1],
                "region_codes": ["341602"],
                "evaluator_ids": [ev.user_id],
            },
        )
        task_id = task.id
        grid, _ = inspected_grid(s, "341602001")
        inside = point_in(grid)
        far, _ = inspected_grid(s, "341621")
        outside = point_in(far)
        grid_code = grid.code

    async with console_user(city) as user:
        await enter(user, "evaluator1")  # lands on /evaluation/tasks
        await user.should_see(marker=f"task-{task_id}")
        assert _text(user, f"task-records-{task_id}") == "记录 0"
        user.find(marker=f"task-link-{task_id}").click()
        await user.should_see(marker="inspection-form")

        def fill(lon: float, lat: float) -> None:
            for marker, value in (
                ("inspection-indicator", "A1.1"),
                ("inspection-score", 85),
                ("inspection-lon", lon),
                ("inspection-lat", lat),
            ):
                el = user.find(marker=marker).elements.pop()
                assert isinstance(el, (ui.select, ui.number))
                el.value = value
            user.find(marker="inspection-note").type("主干道保洁良好, 个别果皮")

        fill(*outside)  # a place outside the task's region is refused, nothing saved
        user.find(marker="inspection-save").click()
        await user.should_see(marker="inspection-error")
        assert "341602" in _text(user, "inspection-error")
        with city.session() as s:
            assert s.scalars(select(CeRecord).where(CeRecord.task_id == task_id)).all() == []

        await user.open(f"/evaluation/tasks/{task_id}")
        fill(*inside)
        up = user.find(marker="inspection-photo").elements.pop()
        assert isinstance(up, ui.upload)
        await up.handle_uploads([ui.upload.SmallFileUpload("s.jpg", "image/jpeg", photo())])
        await user.should_see("已上传 s.jpg")
        user.find(marker="inspection-save").click()
        with city.session() as s:
            rec = s.scalars(select(CeRecord).where(CeRecord.task_id == task_id)).one()
            assert (rec.source, rec.origin, rec.score, rec.region_code, rec.grid_code) == (
                "site_inspection",
                "third_party",
                85.0,
                "341602",
                grid_code,
            )
            assert rec.note == "主干道保洁良好, 个别果皮" and rec.recorded_by == ev.user_id
            att = s.get(CaseAttachment, rec.attachment_id)
            assert att is not None and att.uploaded_by == ev.user_id
            rec_id = rec.id
        await user.should_see(marker=f"record-{rec_id}")
        await user.open("/evaluation/tasks")
        assert _text(user, f"task-records-{task_id}") == "记录 1"

    async with console_user(city) as user:
        await enter(user, "monitor1")
        await user.open("/evaluation/tasks")
        await user.should_see(marker="forbidden")
