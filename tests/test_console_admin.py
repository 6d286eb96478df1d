"""Console administration: users, category time limits, the work calendar, dispatch rules
with their tester, evaluation weights, the import wizard; non-admins are refused."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from nicegui import ui
from sqlalchemy import select

from cityops.access.models import User
from cityops.cases.models import DispatchRule
from cityops.evaluation.service import get_weights
from cityops.geo.models import CategoryTimeLimit, Unit
from cityops.worktime.models import CalendarDay
from tests.console_support import console_user
from tests.console_work_support import enter, eventually, unit_named
from tests.factories import grid_of_inspector, matter_category, point_in


async def test_admin_creates_and_edits_a_user_and_others_are_refused(city) -> None:
    async with console_user(city) as user:
        await enter(user, "admin")
        await user.should_see(marker="link-/admin/users")  # the landing page
        await user.open("/admin/users")
        user.find(marker="new-user-username").type("operator9")
        user.find(marker="new-user-name").type("新受理员")
        user.find(marker="new-user-password").type("a-long-pass-2026")
        user.find(marker="new-user-roles").elements.pop().value = ["operator"]
        with city.session() as s:
            unit_code = s.scalar(select(Unit.code).where(Unit.id == 21))
        user.find(marker="new-user-unit").elements.pop().value = unit_code
        user.find(marker="new-user-scope").type("999999")
        user.find(marker="new-user-create").click()
        await user.should_see(marker="new-user-error")  # no such region: refused
        await user.should_see("输入有误")
        user.find(marker="new-user-scope").clear()
        user.find(marker="new-user-create").click()
        await user.should_see("已创建用户 operator9")
        user.find(marker="user-search").type("operator9")
        user.find(marker="user-search-go").click()
        await user.should_see(marker="user-row-operator9")
        await user.should_not_see(marker="user-row-operator1")
        # edit: add the shift-leader role
        user.find(marker="edit-operator9").click()
        user.find(marker="edit-roles").elements.pop().value = ["operator", "shift_leader"]
        user.find(marker="edit-save").click()
        await user.should_see("已保存")
        # a second user with the same name is refused
        user.find(marker="new-user-username").type("operator9")
        user.find(marker="new-user-name").type("重名")
        user.find(marker="new-user-password").type("a-long-pass-2026")
        user.find(marker="new-user-roles").elements.pop().value = ["operator"]
        user.find(marker="new-user-create").click()
        await user.should_see("is taken")
        # deactivate
        user.find(marker="toggle-operator9").click()
        await user.should_see("已停用")
        # unlock a locked account
        with city.session() as s:
            locked = s.scalars(select(User).where(User.username == "operator2")).one()
            locked.failed_logins = 5
            locked.locked_until = datetime.now(UTC) + timedelta(minutes=15)
        user.find(marker="user-search").clear()
        user.find(marker="user-search").type("operator2")
        user.find(marker="user-search-go").click()
        await user.should_see(marker="unlock-operator2")
        user.find(marker="unlock-operator2").click()
        await user.should_see("已更新")
        await user.should_not_see(marker="unlock-operator2")
    with city.session() as s:
        u = s.scalars(select(User).where(User.username == "operator9")).one()
        assert set(u.roles) == {"operator", "shift_leader"} and u.unit_id == 21
        assert u.active is False
        other = s.scalars(select(User).where(User.username == "operator2")).one()
        assert (other.failed_logins, other.locked_until) == (0, None)
    async with console_user(city) as user:
        await enter(user, "operator1")
        for path in ("/admin", "/admin/users", "/admin/calendar", "/admin/import"):
            await user.open(path)
            await user.should_see(marker="forbidden")


async def test_admin_edits_a_time_limit_a_holiday_and_the_weights(city) -> None:
    with city.session() as s:
        cat = matter_category(s)
        code = cat.code
    async with console_user(city) as user:
        await enter(user, "admin")
        await user.open("/admin/categories")
        user.find(marker="cat-search").type("暴露垃圾")
        user.find(marker="cat-search-go").click()
        await user.should_see(marker=f"cat-edit-{code}")
        await user.should_not_see(marker="cat-row-01001")
        user.find(marker=f"cat-edit-{code}").click()
        await user.should_see(marker="limit-editor")
        amount = user.find(marker="limit-handle-all-amount").elements.pop()
        assert amount.value == 4.0  # the demo city's 4 working hours
        amount.value = 6
        user.find(marker="limit-new-stage").elements.pop().value = "handle"
        user.find(marker="limit-new-urgency").elements.pop().value = "特急"
        user.find(marker="limit-new-amount").elements.pop().value = 2
        user.find(marker="limit-save").click()
        await user.should_see("时限已保存")
        # the calendar: Friday 2026-11-20 becomes a holiday
        await user.open("/admin/calendar?year=2026")
        day = user.find(marker="day-2026-11-20").elements.pop()
        assert day.props["data-kind"] == "workday"
        user.find(marker="day-2026-11-20").click()
        await user.should_see("2026-11-20 星期五")
        user.find(marker="day-name").type("测试假日")
        user.find(marker="day-save").click()
        await user.should_see("2026-11-20 已更新")
        await user.should_see(marker="cal-summary")
        await eventually(
            lambda: (
                user.find(marker="day-2026-11-20").elements.pop().props["data-kind"] == "holiday"
            )
        )
        # weights: a negative weight is refused, a good one saved
        await user.open("/admin/weights")
        user.find(marker="weight-unit-close").elements.pop().value = -5
        user.find(marker="weights-save").click()
        await user.should_see(marker="weights-error")
        user.find(marker="weight-unit-close").elements.pop().value = 40
        user.find(marker="weights-save").click()
        await user.should_see("权重已保存")
        await user.open("/evaluation/rankings")
        await user.should_see(marker="rank-red")
    with city.session() as s:
        limits = set(
            s.execute(
                select(
                    CategoryTimeLimit.stage,
                    CategoryTimeLimit.urgency,
                    CategoryTimeLimit.amount,
                    CategoryTimeLimit.unit,
                ).where(CategoryTimeLimit.category_id == cat.id)
            ).all()
        )
        assert limits == {
            ("handle", None, 6.0, "working_hours"),
            ("handle", "特急", 2.0, "working_hours"),
        }
        row = s.get(CalendarDay, date(2026, 11, 20))
        assert row is not None and (row.is_workday, row.name) == (False, "测试假日")
        assert get_weights(s)["unit"]["close"] == 40


async def test_admin_adds_a_dispatch_rule_and_tests_which_unit_gets_a_case(city) -> None:
    with city.session() as s:
        grid = grid_of_inspector(s, "inspector1")
        lon, lat = point_in(grid)
        cat = matter_category(s)
        street = grid.code[:9]
    target = unit_named(city, 27)
    async with console_user(city) as user:
        await enter(user, "admin")
        await user.open("/admin/dispatch-rules")

        async def probe() -> str:
            user.find(marker="test-category").elements.pop().value = cat.id
            user.find(marker="test-lon").elements.pop().value = lon
            user.find(marker="test-lat").elements.pop().value = lat
            user.find(marker="test-run").click()
            await user.should_see(marker="test-result")
            return str(user.find(marker="test-result").elements.pop().text)

        before = await probe()
        assert "处置单位 of the district" in before  # the category's default handler
        user.find(marker="rule-name").type("薛阁街道垃圾")
        user.find(marker="rule-category").elements.pop().value = cat.id
        user.find(marker="rule-region").type(street)
        user.find(marker="rule-save").click()
        await user.should_see("needs a target")  # no unit chosen: refused
        user.find(marker="rule-unit").elements.pop().value = 27
        user.find(marker="rule-save").click()
        await user.should_see("规则已保存")
        after = await probe()
        assert target in after and "薛阁街道垃圾" in after
    with city.session() as s:
        rule = s.scalars(select(DispatchRule)).one()
        assert (rule.unit_id, rule.region_prefix, rule.category_id) == (27, street, cat.id)


BAD_UNITS = (
    "code,name,unit_type,parent_code\n"
    "T-UNIT-1,测试单位一,处置单位,\n"
    "T-UNIT-2,测试单位二,不存在的类型,\n"
).encode()
GOOD_UNITS = (
    "code,name,unit_type,parent_code\n"
    "T-UNIT-1,测试单位一,处置单位,\n"
    "T-UNIT-2,测试单位二,养护单位,T-UNIT-1\n"
).encode()


async def test_import_wizard_reports_row_errors_then_imports_a_good_file(city) -> None:
    async with console_user(city) as user:
        await enter(user, "admin")
        await user.open("/admin/import")
        up = user.find(marker="import-upload").elements.pop()
        assert isinstance(up, ui.upload)
        await up.handle_uploads([ui.upload.SmallFileUpload("units.csv", "text/csv", BAD_UNITS)])
        await user.should_see(marker="import-errors")
        await user.should_see("未导入任何数据")
        row = user.find(marker="import-error-0").elements.pop()
        texts = [c.text for c in row.default_slot.children]  # row, field, value, problem
        assert texts[:3] == ["2", "unit_type", "不存在的类型"]
        await user.should_not_see(marker="import-confirm")
        with city.session() as s:
            assert s.scalar(select(Unit.id).where(Unit.code.like("T-UNIT-%"))) is None
        await up.handle_uploads([ui.upload.SmallFileUpload("units.csv", "text/csv", GOOD_UNITS)])
        await user.should_see(marker="import-confirm")
        with city.session() as s:  # validated only: still nothing written
            assert s.scalar(select(Unit.id).where(Unit.code.like("T-UNIT-%"))) is None
        user.find(marker="import-confirm").click()
        await user.should_see(marker="import-done")
        await user.should_see("已导入 2 条")
    with city.session() as s:
        rows = s.execute(
            select(Unit.code, Unit.unit_type).where(Unit.code.like("T-UNIT-%")).order_by(Unit.code)
        ).all()
        assert [tuple(r) for r in rows] == [("T-UNIT-1", "处置单位"), ("T-UNIT-2", "养护单位")]
