"""Inspector's phone page 城管通 (/m): report with photo position, my tasks by distance, 核实."""

from __future__ import annotations

from typing import Any

import shapely
from nicegui.elements.upload_files import SmallFileUpload
from sqlalchemy import select

from cityops.access.models import User
from cityops.cases import service
from cityops.cases.models import Case, CaseAttachment
from cityops.cases.ui_mobile import home_position, my_tasks
from cityops.geo.crs import distance_m
from cityops.geo.models import Grid, grid_inspectors
from tests.console_support import console_user, log_in
from tests.factories import grid_of_inspector, matter_category, photo, principal, report_data


def _two_tasks(s: Any) -> tuple[Case, Case, Grid]:
    """Two hotline reports in inspector1's grid, sent to inspector1 for 核实: far one first."""
    grid = grid_of_inspector(s, "inspector1")
    geom = shapely.from_wkb(grid.geom)
    near = shapely.point_on_surface(geom)
    # a vertex pulled 10 % towards the centre: inside the (convex) grid, far from `near`
    x, y = max(
        shapely.get_coordinates(geom.exterior),
        key=lambda c: (c[0] - near.x) ** 2 + (c[1] - near.y) ** 2,
    )
    far = (x + (near.x - x) * 0.1, y + (near.y - y) * 0.1)
    op = principal(s, "operator1")
    insp = principal(s, "inspector1")
    cat = matter_category(s)
    cases = []
    for lon, lat in (far, (near.x, near.y)):
        c = service.create_case(s, op, report_data(cat, lon, lat, source="hotline")).case
        service.perform(s, op, c.id, "accept", {"inspector_id": insp.user_id})
        cases.append(c)
    s.commit()
    return cases[0], cases[1], grid


def _outsider(s: Any, grid: Grid) -> str:
    """An inspector who is not on the grid."""
    on_grid = select(grid_inspectors.c.user_id).where(grid_inspectors.c.grid_id == grid.id)
    name = s.scalars(
        select(User.username)
        .where(User.username.like("inspector%"), User.id.not_in(on_grid))
        .order_by(User.username)
    ).first()
    assert name is not None
    return name


def test_my_tasks_are_mine_and_nearest_first(city: Any) -> None:
    with city.session() as s:
        far, near, grid = _two_tasks(s)
        me = principal(s, "inspector1")
        home = home_position(s, me)
        assert home is not None
        tasks = my_tasks(s, me, *home)
        assert [x["number"] for x in tasks] == [near.number, far.number]
        assert tasks[1]["distance_m"] == round(distance_m(home[0], home[1], far.lon, far.lat), 1)
        assert tasks[0]["distance_m"] < 1.0
        # from the far corner the order turns round
        assert [x["number"] for x in my_tasks(s, me, far.lon, far.lat)] == [
            far.number,
            near.number,
        ]
        other = principal(s, _outsider(s, grid))
        assert my_tasks(s, other, *home) == []


async def test_verify_on_site_with_a_photo_from_the_phone_page(city: Any) -> None:
    with city.session() as s:
        far, near, grid = _two_tasks(s)
        outsider = _outsider(s, grid)
    async with console_user(city) as user:
        await log_in(user, "inspector1")
        await user.should_see(marker="tasks")  # inspectors land on /m
        await user.should_see(marker=f"task-{near.number}")
        await user.should_see(marker=f"task-{far.number}")
        up = user.find(marker=f"task-photo-{near.number}").elements.pop()
        await up.handle_uploads([SmallFileUpload("site.jpg", "image/jpeg", photo())])
        await user.should_see("已传照片: 1", retries=30)
        user.find(marker=f"task-yes-{near.number}").click()
        await user.should_not_see(marker=f"task-{near.number}", retries=20)
        await user.should_see(marker=f"task-{far.number}")
    with city.session() as s:
        c = s.get(Case, near.id)
        assert c is not None and c.stage == "file" and c.verified_at is not None
        kinds = s.scalars(
            select(CaseAttachment.purpose).where(CaseAttachment.case_id == near.id)
        ).all()
        assert kinds == ["check"]
    async with console_user(city) as user:
        await log_in(user, outsider)
        await user.should_see(marker="no-tasks")
        await user.should_not_see(marker=f"task-{far.number}")


async def test_report_at_the_photo_position_and_self_handle_needs_a_photo(city: Any) -> None:
    with city.session() as s:
        grid = grid_of_inspector(s, "inspector1")
        spot = shapely.point_on_surface(shapely.from_wkb(grid.geom))
        cat = matter_category(s)
        before = s.query(Case).count()
    async with console_user(city) as user:
        await log_in(user, "inspector1")  # inspectors land on /m
        await user.should_see(marker="tab-report")
        user.find(marker="tab-report").click()
        up = user.find(marker="report-photo").elements.pop()
        await up.handle_uploads(
            [SmallFileUpload("scene.jpg", "image/jpeg", photo(spot.x + 0.0001, spot.y))]
        )
        await user.should_see(marker="use-exif", retries=30)
        user.find(marker="use-exif").click()
        await user.should_see("照片位置")
        user.find(marker="report-category").elements.pop().value = cat.id
        user.find(marker="report-note").type("井盖旁垃圾堆积")
        user.find(marker="report-submit").click()
        await user.should_see("已上报", retries=20)
        # 自行处置 without a photo is refused and files nothing
        user.find(marker="report-category").elements.pop().value = cat.id
        user.find(marker="report-note").type("小广告已清除")
        user.find(marker="report-self").click()
        user.find(marker="report-submit").click()
        await user.should_see("自行处置 needs a photo")
    with city.session() as s:
        rows = s.scalars(select(Case).where(Case.reporter_user_id.is_not(None))).all()
        assert s.query(Case).count() == before + 1
        (c,) = rows
        assert (c.source, c.stage, c.description) == ("inspector", "accept", "井盖旁垃圾堆积")
        # the photo's EXIF position (DMS-rounded), not the grid centre
        assert distance_m(c.lon, c.lat, spot.x + 0.0001, spot.y) < 1.0
        assert s.scalars(select(CaseAttachment.case_id)).all() == [c.id]


async def test_the_phone_page_is_for_inspectors(city: Any) -> None:
    async with console_user(city) as user:
        await log_in(user, "operator1")
        await user.open("/m")
        await user.should_see(marker="forbidden")
        await user.should_not_see(marker="tasks")
