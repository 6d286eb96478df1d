"""The console case page (/cases/{id}) and new cases (/cases/new)."""

from __future__ import annotations

from nicegui import ui
from sqlalchemy import select

from cityops.cases.models import Case, CaseAttachment
from cityops.geo.models import Grid, Poi
from cityops.geo.service import locate
from tests.console_support import console_user
from tests.console_work_support import (
    act,
    enter,
    report,
    stage_of,
    to_dispatch,
    username_of_handler,
)
from tests.factories import photo


async def test_case_page_shows_the_case_only_the_allowed_forms_and_a_stale_version(city) -> None:
    cid = report(city, description="人行道暴露垃圾", address="药都大道1号")
    with city.session() as s:
        att = s.scalars(select(CaseAttachment.id).where(CaseAttachment.case_id == cid)).one()
    async with console_user(city) as user:
        await enter(user, "operator1")
        await user.open(f"/cases/{cid}")
        await user.should_see("人行道暴露垃圾")
        await user.should_see("药都大道1号")
        await user.should_see(marker="case-map")
        await user.should_see(marker=f"photo-{att}")
        await user.should_see(marker="timeline")
        # the photo route checks the console user's access
        resp = await user.http_client.get(f"/console/attachments/{att}")
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
        # operator at 待受理: accept, reject, merge; nothing of the later steps
        for action in ("accept", "reject", "merge"):
            await user.should_see(marker=f"action-{action}")
        for action in ("file", "dispatch", "void", "close", "supervise"):
            await user.should_not_see(marker=f"action-{action}")
        # the map has no internet tiles (no basemap configured)
        m = user.find(marker="case-map").elements.pop()
        assert isinstance(m, ui.leaflet)
        assert not [x for x in m.layers if isinstance(x, ui.leaflet.tile_layer)]
        act(city, "shift1", cid, "supervise", note="尽快处理")  # changes the version meanwhile
        user.find(marker="do-accept").click()
        await user.should_see("案件已被他人修改")
        err = user.find(marker="error-accept").elements.pop()
        assert err.visible and "version" in err.text
        assert stage_of(city, cid).stage == "accept"
        # a refusal from the service is shown on the form too (reject needs a reason)
        await user.open(f"/cases/{cid}")
        user.find(marker="do-reject").click()
        await user.should_see("输入有误")
        assert stage_of(city, cid).stage == "accept"
    async with console_user(city) as user:
        await enter(user, username_of_handler(city, 27))  # a unit's handler: not their case
        await user.open(f"/cases/{cid}")
        await user.should_see(marker="not-found")
        resp = await user.http_client.get(f"/console/attachments/{att}")
        assert resp.status_code == 404


async def test_dispatch_on_the_case_page_then_the_handler_signs_and_handles(city) -> None:
    cid = to_dispatch(city)
    async with console_user(city) as user:
        await enter(user, "dispatcher1")
        await user.open(f"/cases/{cid}")
        await user.should_see("派遣规则建议")
        unit = user.find(marker="dispatch-unit_id").elements.pop()
        assert unit.value == 25  # the category's default: the district's 处置单位
        user.find(marker="do-dispatch").click()
        await user.should_see("派遣：已完成")
        await user.should_see(marker="no-actions")
    assert (stage_of(city, cid).stage, stage_of(city, cid).lead_unit_id) == ("sign", 25)
    async with console_user(city) as user:
        await enter(user, username_of_handler(city, 25))
        await user.open(f"/cases/{cid}")
        user.find(marker="do-sign").click()
        await user.should_see("签收：已完成")
        await user.should_see(marker="action-handle")
        await user.should_see(marker="action-request_extension")
        user.find(marker="handle-note").type("已清运")
        user.find(marker="do-handle").click()  # no photo yet: refused
        await user.should_see("处置反馈 needs at least one photo")
        up = user.find(marker="handle-attachment_ids").elements.pop()
        assert isinstance(up, ui.upload)
        await up.handle_uploads([ui.upload.SmallFileUpload("after.jpg", "image/jpeg", photo())])
        await user.should_see("已上传 after.jpg")
        user.find(marker="do-handle").click()
        await user.should_see("处置反馈：已完成")
        await user.should_see(marker="no-actions")
    case = stage_of(city, cid)
    assert case.stage == "check" and case.handled_at is not None
    with city.session() as s:
        purposes = s.scalars(
            select(CaseAttachment.purpose).where(CaseAttachment.case_id == cid)
        ).all()
    assert sorted(purposes) == ["after", "before"]


async def test_operator_registers_a_hotline_case_located_by_a_place_name(city) -> None:
    with city.session() as s:
        poi = s.scalars(select(Poi).order_by(Poi.id)).first()
        assert poi is not None
        grid_code = locate(s, poi.lon, poi.lat)["grid"]["code"]
        assert s.scalar(select(Grid.id).where(Grid.code == grid_code))
    async with console_user(city) as user:
        await enter(user, "operator1")
        await user.open("/cases/new")
        await user.should_see(marker="new-category")
        # the category picker searches by name or code
        cat = user.find(marker="new-category").elements.pop()
        hits = [k for k, v in cat.options.items() if "暴露垃圾" in v]
        assert hits
        cat.value = hits[0]
        user.find(marker="new-description").type("市民来电：公厕门口垃圾堆积")
        user.find(marker="new-reporter").type("王先生")
        user.find(marker="new-phone").type("13800001234")
        user.find(marker="new-place-search").type(poi.name)
        user.find(marker="new-place-find").click()
        await user.should_see(marker="place-0")
        user.find(marker="place-0").click()
        await user.should_see(grid_code)  # located: the grid is shown before submitting
        user.find(marker="new-submit").click()
        await user.should_see(marker="case-number")
        await user.should_see("13800001234")  # the operator sees the caller's phone
        with city.session() as s:
            case = s.scalars(select(Case).order_by(Case.id.desc())).first()
            assert case is not None
            assert (case.source, case.stage, case.grid_code) == ("hotline", "accept", grid_code)
            assert case.reporter_phone == "13800001234"
            assert case.address == poi.address
        await user.open("/work")
        await user.should_see(marker=f"case-{case.id}")
        await user.should_see("待受理 (1)")


async def test_new_case_refusals(city) -> None:
    async with console_user(city) as user:
        await enter(user, "operator1")
        await user.open("/cases/new")
        user.find(marker="new-description").type("无类别")
        user.find(marker="new-submit").click()
        await user.should_see("请选择类别")
        cat = user.find(marker="new-category").elements.pop()
        cat.value = next(iter(cat.options))
        user.find(marker="new-lon").type("100.0")
        user.find(marker="new-lat").type("30.0")
        await user.should_see("outside every unit grid")
        user.find(marker="new-submit").click()
        await user.should_see(marker="new-error")
    with city.session() as s:
        assert s.scalar(select(Case.id)) is None
    async with console_user(city) as user:
        await enter(user, "handler1")
        await user.open("/cases/new")
        await user.should_see(marker="forbidden")
