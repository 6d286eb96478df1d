"""Comprehensive evaluation (综合评价): indicator tree, tasks, records, questionnaire import and
the scored report, computed by hand for two districts."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from cityops.cases.storage import default_storage
from cityops.core.db import Database
from cityops.core.errors import Conflict, Invalid
from cityops.evaluation import comprehensive as ce
from cityops.evaluation.comprehensive_api import router
from cityops.evaluation.models import CeIndicator, CeRecord
from tests.evaluation_review_support import app_client, bearer, inspected_grid, make_case
from tests.factories import photo, point_in, principal

A, B = "341602", "341621"  # 谯城区, 涡阳县
BASE = "/api/v1/evaluation/comprehensive"

#: 环境 60 (道路保洁 50 site inspection with two check items, 结案率 50 platform),
#: 满意度 40 (问卷 100 questionnaire).
SMALL_TREE: list[dict[str, Any]] = [
    {
        "code": "X",
        "name": "环境",
        "weight": 60,
        "children": [
            {
                "code": "X1",
                "name": "道路保洁",
                "weight": 50,
                "source": "site_inspection",
                "check_items": [
                    {"code": "1", "name": "无暴露垃圾", "max": 30},
                    {"code": "2", "name": "无积水", "max": 20},
                ],
            },
            {
                "code": "X2",
                "name": "结案率",
                "weight": 50,
                "source": "platform",
                "platform_metric": "结案率",
            },
        ],
    },
    {
        "code": "Y",
        "name": "满意度",
        "weight": 40,
        "children": [{"code": "Y1", "name": "问卷", "weight": 100, "source": "questionnaire"}],
    },
]


def test_default_tree_and_editing_with_weight_validation(db: Database) -> None:
    with db.session() as s:
        tree = ce.tree_out(s)
        assert [(n["name"], n["weight"]) for n in tree] == [
            ("城市形象", 30),
            ("城市管理保底线", 40),
            ("群众满意度", 30),
        ]
        level2 = [c["name"] for n in tree for c in n["children"]]
        assert level2 == ["干净", "整洁", "有序", "安全", "满意度调查"]
        ce.validate_tree(ce.load_tree(s))
        leaves = [n for n in s.scalars(select(CeIndicator)) if n.source]
        assert {n.source for n in leaves} == {"platform", "site_inspection", "questionnaire"}

    # editing: every change keeps the siblings' weights at 100 or is refused whole
    with db.session() as s:
        with pytest.raises(Invalid) as e:
            ce.update_node(s, "A1.1", {"weight": 60})  # 60 + 30 + 30
        assert "干净 (A1) sum to 120, not 100" in e.value.message
        assert e.value.details["weights"] == {"A1.1": 60, "A1.2": 30, "A1.3": 30}
        assert s.scalars(select(CeIndicator.weight).where(CeIndicator.code == "A1.1")).one() == 40
        ce.update_node(s, "A1.1", {"weight": 60, "sibling_weights": {"A1.2": 20, "A1.3": 20}})
        ce.update_node(s, "A1.2", {"name": "垃圾收运"})
        # add a leaf to 安全 and rebalance in the same change
        with pytest.raises(Invalid) as e:
            ce.add_node(
                s,
                {
                    "parent_code": "B2",
                    "code": "B2.3",
                    "name": "燃气安全",
                    "weight": 20,
                    "source": "site_inspection",
                },
            )
        assert "sum to 120" in e.value.message
        assert s.scalar(select(func.count()).where(CeIndicator.code == "B2.3")) == 0
        ce.add_node(
            s,
            {
                "parent_code": "B2",
                "code": "B2.3",
                "name": "燃气安全",
                "weight": 20,
                "source": "site_inspection",
                "sibling_weights": {"B2.1": 40, "B2.2": 40},
            },
        )
        with pytest.raises(Invalid) as e:  # a platform leaf needs a known figure
            ce.add_node(
                s,
                {
                    "parent_code": "C1",
                    "code": "C1.3",
                    "name": "x",
                    "weight": 0,
                    "source": "platform",
                    "platform_metric": "好评率",
                },
            )
        assert e.value.details == {"field": "platform_metric", "value": "好评率"}
        with pytest.raises(Invalid):  # deleting leaves 干净 at 60 + 20
            ce.delete_node(s, "A1.3", None)
        ce.delete_node(s, "A1.3", {"A1.1": 80})
        tree = ce.tree_out(s)
        a1 = tree[0]["children"][0]
        assert [(c["code"], c["name"], c["weight"]) for c in a1["children"]] == [
            ("A1.1", "道路及公共场所保洁", 80),
            ("A1.2", "垃圾收运", 20),
        ]
        with pytest.raises(Invalid) as e:
            ce.replace_tree(s, [{"code": "Z", "name": "z", "weight": 90}])
        assert "the top level sum to 90" in e.value.message
        ce.replace_tree(s, SMALL_TREE)
        assert [n["code"] for n in ce.tree_out(s)] == ["X", "Y"]


def _csv(*rows: str) -> bytes:
    return ("region_code,indicator_code,respondents,score\n" + "\n".join(rows) + "\n").encode()


def test_full_report_for_two_districts(city: Database) -> None:
    store = default_storage()
    with city.session() as s:
        # platform data of 谯城区 for 2026-11-17: two cases filed, one closed → 结案率 50;
        # 涡阳县 has none → full marks (100), as in the evaluation composites
        make_case(s, store, "341602001", 0)
        make_case(s, store, "341602001", 20, close=False)
        ce.replace_tree(s, SMALL_TREE)
        evaluator = principal(s, "evaluator1")
        task = ce.create_task(
            s,
            principal(s, "admin"),
            {
                "name": "2026年11月综合评价",
                "period_start": date(2026, 11, 1),
                "period_end": date(2026, 12, 1),
                "region_codes": [A, B],
                "evaluator_ids": [evaluator.user_id],
                "self_weight": 40,
            },
        )
        other = ce.create_task(
            s,
            None,
            {
                "name": "别的任务",
                "period_start": date(2026, 11, 1),
                "period_end": date(2026, 12, 1),
                "region_codes": [B],
            },
        )
        tid, other_id = task.id, other.id
        grid_a, _ = inspected_grid(s, "341602001")
        grid_b, _ = inspected_grid(s, "341621")
        lon_a, lat_a = point_in(grid_a)
        lon_b, lat_b = point_in(grid_b)
        grid_a_code = grid_a.code

    with app_client(city, router) as client:
        ev, admin = bearer(city, "evaluator1"), bearer(city, "admin")
        d1, leader = bearer(city, "district1"), bearer(city, "leader1")
        tasks = client.get(f"{BASE}/tasks", headers=ev).json()
        assert [t["id"] for t in tasks] == [tid]
        assert client.get(f"{BASE}/tasks/{other_id}", headers=ev).status_code == 404
        r = client.post(
            f"{BASE}/tasks/{other_id}/inspections",
            json={"indicator_code": "X1", "region_code": B, "score": 50},
            headers=ev,
        )
        assert r.status_code == 404

        up = client.post(
            "/api/v1/attachments", files={"file": ("s.jpg", photo(), "image/jpeg")}, headers=ev
        )
        assert up.status_code == 201, up.text

        def inspect(who: dict[str, str], **body: Any) -> Any:
            return client.post(f"{BASE}/tasks/{tid}/inspections", json=body, headers=who)

        # 谯城区 X1, third party: deductions 10 + 5 → 85, and a direct 75 → mean 80
        r = inspect(
            ev,
            indicator_code="X1",
            region_code=A,
            deductions={"1": 10, "2": 5},
            note="路边有垃圾",
            attachment_id=up.json()["id"],
            lon=lon_a,
            lat=lat_a,
        )
        assert r.status_code == 201, r.text
        assert r.json()["score"] == 85 and r.json()["grid_code"] == grid_a_code
        assert inspect(ev, indicator_code="X1", region_code=A, score=75).status_code == 201
        # refused: a deduction above the item's maximum, a location in the other district,
        # a questionnaire indicator, a self-evaluation by the evaluator
        r = inspect(ev, indicator_code="X1", region_code=A, deductions={"2": 25})
        assert r.status_code == 422 and r.json()["details"]["field"] == "deductions.2"
        r = inspect(ev, indicator_code="X1", region_code=A, score=90, lon=lon_b, lat=lat_b)
        assert r.status_code == 422 and r.json()["details"]["field"] == "lon"
        r = inspect(ev, indicator_code="Y1", region_code=A, score=90)
        assert r.status_code == 422 and r.json()["details"]["field"] == "indicator_code"
        assert (
            inspect(ev, indicator_code="X1", region_code=A, score=90, origin="self").status_code
            == 403
        )
        # self-evaluation of 谯城区 X1 by its district leader: 90; not for 涡阳县 (403)
        assert (
            inspect(d1, indicator_code="X1", region_code=A, score=90, origin="self").status_code
            == 201
        )
        assert (
            inspect(d1, indicator_code="X1", region_code=B, score=90, origin="self").status_code
            == 403
        )
        # 涡阳县 X1, third party: 70
        assert inspect(ev, indicator_code="X1", region_code=B, score=70).status_code == 201

        # questionnaire: a bad row → 422 naming row, field and value; nothing written
        with city.session() as s:
            before = s.scalar(select(func.count()).select_from(CeRecord))
        bad = _csv(f"{A},Y1,100,80", f"{B},Y1,200,abc", f"{A},X1,5,60", "999999,Y1,1,50")
        r = client.post(
            f"{BASE}/tasks/{tid}/questionnaires",
            files={"file": ("q.csv", bad, "text/csv")},
            headers=ev,
        )
        assert r.status_code == 422, r.text
        errors = r.json()["details"]["errors"]
        assert [(e["row"], e["field"], e["value"]) for e in errors] == [
            (2, "score", "abc"),
            (3, "indicator_code", "X1"),
            (4, "region_code", "999999"),
        ]
        assert "row 2, field 'score', value 'abc'" in r.json()["message"]
        with city.session() as s:
            assert s.scalar(select(func.count()).select_from(CeRecord)) == before
        # the corrected file: 谯城区 (100 × 80 + 300 × 60) / 400 = 65; 涡阳县 90
        good = _csv(f"{A},Y1,100,80", f"{A},Y1,300,60", f"{B},Y1,200,90")
        r = client.post(
            f"{BASE}/tasks/{tid}/questionnaires",
            files={"file": ("q.csv", good, "text/csv")},
            headers=ev,
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"rows": 3, "written": 3, "replaced": 0, "notes": []}

        rep = client.get(f"{BASE}/tasks/{tid}/report", headers=leader)
        assert rep.status_code == 200, rep.text
        data = rep.json()
        assert client.get(f"{BASE}/tasks/{tid}/report", headers=ev).status_code == 403

    by = {r["code"]: r for r in data["regions"]}
    nodes_a = {n["code"]: n for n in by[A]["nodes"]}
    nodes_b = {n["code"]: n for n in by[B]["nodes"]}
    # 谯城区: X1 = 40% × 90 (self) + 60% × 80 (third party) = 84; X2 = 50; X = (84 + 50) / 2
    # = 67; Y1 = Y = 65; total = 0.6 × 67 + 0.4 × 65 = 66.2
    assert {
        c: (n["self"], n["third_party"], n["score"], n["contribution"]) for c, n in nodes_a.items()
    } == {
        "X": (70.0, 65.0, 67.0, 40.2),
        "X1": (90.0, 80.0, 84.0, 25.2),
        "X2": (50.0, 50.0, 50.0, 15.0),
        "Y": (None, 65.0, 65.0, 26.0),
        "Y1": (None, 65.0, 65.0, 26.0),
    }
    assert [n["global_weight"] for n in by[A]["nodes"]] == [60, 30, 30, 40, 40]
    # self total: only 环境 has self scores (70); third party 0.6 × 65 + 0.4 × 65 = 65
    assert (by[A]["total"], by[A]["self_total"], by[A]["third_party_total"]) == (66.2, 70.0, 65.0)
    # 涡阳县: X1 = 70 (third party only), X2 = 100, X = 85; Y1 = 90; total = 51 + 36 = 87
    assert {c: (n["score"], n["contribution"]) for c, n in nodes_b.items()} == {
        "X": (85.0, 51.0),
        "X1": (70.0, 21.0),  # 70 × 30%
        "X2": (100.0, 30.0),
        "Y": (90.0, 36.0),
        "Y1": (90.0, 36.0),
    }
    assert by[B]["total"] == 87.0 and by[A]["complete"] and by[B]["complete"]
    assert data["ranking"] == [
        {"rank": 1, "code": B, "name": "涡阳县", "total": 87.0},
        {"rank": 2, "code": A, "name": "谯城区", "total": 66.2},
    ]

    with app_client(city, router) as client:
        d1 = bearer(city, "district1")
        mine = client.get(f"{BASE}/tasks/{tid}/report", headers=d1).json()
        assert mine["ranking"] == [{"rank": 2, "code": A, "name": "谯城区", "total": 66.2}]
        x = client.get(f"{BASE}/tasks/{tid}/report.xlsx", headers=bearer(city, "leader1"))
        assert x.status_code == 200
        wb = load_workbook(io.BytesIO(x.content))
        assert wb.sheetnames == ["排名", "涡阳县", "谯城区"]
        assert [c.value for c in wb["排名"][2]][:4] == [1, B, "涡阳县", 87.0]
        # the tree cannot be replaced once scores exist; a scored leaf cannot be deleted
        admin = bearer(city, "admin")
        r = client.put(f"{BASE}/indicators", json=SMALL_TREE, headers=admin)
        assert r.status_code == 409
        r = client.request("DELETE", f"{BASE}/indicators/Y1", headers=admin)
        assert r.status_code == 409
        r = client.patch(
            f"{BASE}/indicators/X1",
            json={"weight": 30, "sibling_weights": {"X2": 70}},
            headers=admin,
        )
        assert r.status_code == 200
        assert (
            client.patch(f"{BASE}/indicators/X1", json={"weight": 30}, headers=ev).status_code
            == 403
        )


def test_questionnaire_file_problems(city: Database) -> None:
    with city.session() as s:
        ce.replace_tree(s, SMALL_TREE)
        admin = principal(s, "admin")
        task = ce.create_task(
            s,
            admin,
            {
                "name": "t",
                "period_start": date(2026, 11, 1),
                "period_end": date(2026, 12, 1),
                "region_codes": [A],
            },
        )
        with pytest.raises(Invalid) as e:
            ce.import_questionnaire(s, admin, task.id, "q.csv", b"region_code,score\n341602,80\n")
        assert [(x["row"], x["field"]) for x in e.value.details["errors"]] == [
            (0, "indicator_code"),
            (0, "respondents"),
        ]
        with pytest.raises(Invalid) as e:
            ce.import_questionnaire(s, admin, task.id, "q.csv", _csv(f"{A},Y1,0,80"))
        assert e.value.details["errors"][0] == {
            "row": 1,
            "field": "respondents",
            "value": "0",
            "message": "must be a whole number ≥ 1",
        }
        # a second import of the same region and indicator replaces the first
        ce.import_questionnaire(s, admin, task.id, "q.csv", _csv(f"{A},Y1,10,80"))
        res = ce.import_questionnaire(s, admin, task.id, "q.csv", _csv(f"{A},Y1,10,70"))
        assert (res.written, res.replaced) == (1, 1)
        assert s.scalars(select(CeRecord.score)).all() == [70]
        ce.update_task(s, task.id, {"status": "closed"})
        with pytest.raises(Conflict):
            ce.import_questionnaire(s, admin, task.id, "q.csv", _csv(f"{A},Y1,10,70"))
