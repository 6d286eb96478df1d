"""What can be monitored: facility kinds, measurands (with units and physical ranges),
device types, alarm levels and the default rules (GUIDE §7). Rules and levels are data
(``monitoring_rules``, ``city_settings``); this module holds only their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Facility kinds (监测对象) and the national matter category (GB/T 47678) of their cases.
FACILITY_KINDS: dict[str, tuple[str, str]] = {
    "gas_pipe": ("燃气管段", "01057"),
    "regulator_station": ("燃气调压站", "01049"),
    "valve_well": ("燃气阀门井", "01011"),
    "underground_space": ("相邻地下空间", "01011"),
    "water_main": ("供水干管", "01001"),
    "drainage_pipe": ("排水管道", "01003"),
    "pump_station": ("排水泵站", "01072"),
    "outfall": ("排口", "01073"),
    "bridge": ("桥梁", "02009"),
    "utility_tunnel": ("综合管廊", "01074"),
    "septic_tank": ("化粪池", "01018"),
    "underpass": ("下穿通道/积水点", "02007"),
}


@dataclass(frozen=True)
class Measurand:
    code: str
    name: str
    unit: str
    #: Physically possible range (inclusive); outside it a reading is refused.
    low: float
    high: float
    #: Other spellings of the unit accepted as the same unit.
    aliases: tuple[str, ...] = ()
    #: Only these values are possible (井盖开合 0/1).
    discrete: tuple[float, ...] | None = None


MEASURANDS: dict[str, Measurand] = {
    m.code: m
    for m in (
        Measurand("ch4", "甲烷", "%LEL", 0.0, 100.0, ("%lel", "LEL%", "lel")),
        Measurand("pressure", "压力", "MPa", -0.1, 10.0, ("mpa",)),
        Measurand("flow", "流量", "m³/h", 0.0, 100_000.0, ("m3/h", "m^3/h")),
        Measurand("level", "液位", "m", -50.0, 100.0),
        Measurand("ponding", "积水深度", "cm", 0.0, 500.0),
        Measurand("rainfall", "降雨量", "mm", 0.0, 500.0),
        Measurand("strain", "应变", "με", -10_000.0, 10_000.0, ("ue", "με", "microstrain")),
        Measurand("deflection", "挠度", "mm", -2_000.0, 2_000.0),
        Measurand("accel", "加速度", "m/s²", -200.0, 200.0, ("m/s2", "m/s^2")),
        Measurand("tilt", "倾角", "°", -90.0, 90.0, ("deg", "degree")),
        Measurand("crack", "裂缝", "mm", 0.0, 200.0),
        Measurand("temp", "温度", "°C", -60.0, 200.0, ("degC", "C", "℃")),
        Measurand("cover", "井盖开合", "0/1", 0.0, 1.0, ("", "bool"), (0.0, 1.0)),
    )
}


def unit_ok(m: Measurand, unit: str | None) -> bool:
    """Whether ``unit`` (None = not given) is the measurand's unit."""
    if unit is None:
        return True
    return unit == m.unit or unit in m.aliases or unit.strip() == m.unit


#: Device types (设备类型) and the measurands they report.
DEVICE_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "methane_detector": ("甲烷浓度监测仪", ("ch4", "temp")),
    "pressure_gauge": ("压力监测仪", ("pressure",)),
    "flow_meter": ("流量计", ("flow", "pressure")),
    "level_gauge": ("液位计", ("level",)),
    "ponding_gauge": ("积水监测仪", ("ponding",)),
    "rain_gauge": ("雨量计", ("rainfall",)),
    "strain_gauge": ("应变计", ("strain", "temp")),
    "deflection_sensor": ("挠度计", ("deflection",)),
    "accelerometer": ("加速度计", ("accel",)),
    "tilt_sensor": ("倾角计", ("tilt",)),
    "crack_meter": ("裂缝计", ("crack",)),
    "cover_sensor": ("智能井盖", ("cover", "tilt")),
}

DEVICE_STATUSES = {"online": "在线", "offline": "离线", "maintenance": "维护"}

#: Default alarm grades (一/二/三/四级 = 红/橙/黄/蓝); a city may configure fewer or more.
DEFAULT_LEVELS: list[dict[str, Any]] = [
    {"level": 1, "name": "一级", "color": "红"},
    {"level": 2, "name": "二级", "color": "橙"},
    {"level": 3, "name": "三级", "color": "黄"},
    {"level": 4, "name": "四级", "color": "蓝"},
]

COMPARATORS = {
    "above": "高于",
    "below": "低于",
    "outside": "超出区间",
    "drop": "每分钟下降",
    "rise": "每分钟上升",
    "offline": "设备离线",
}

#: Default rules per device type (seeded by the migration's data step and ``ensure_defaults``).
DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "name": "甲烷浓度超限",
        "device_type": "methane_detector",
        "measurand": "ch4",
        "comparator": "above",
        # GUIDE §7: warn from a few %LEL; detectors alarm at 25 %LEL (level 1 here)
        "levels": [
            {"level": 4, "value": 1.0},
            {"level": 3, "value": 5.0},
            {"level": 2, "value": 10.0},
            {"level": 1, "value": 25.0},
        ],
        "duration_s": 0,
        "hysteresis": 0.5,
        "auto_confirm": True,
        "description": "燃气相邻空间甲烷: 1 %LEL 起预警, 25 %LEL 一级",
    },
    {
        "name": "积水深度超限",
        "device_type": "ponding_gauge",
        "measurand": "ponding",
        "comparator": "above",
        # GUIDE §7: > 15 cm = waterlogged (warning); 30 cm = close the underpass
        "levels": [{"level": 3, "value": 15.0}, {"level": 1, "value": 30.0}],
        "duration_s": 0,
        "hysteresis": 2.0,
        "auto_confirm": True,
        "description": "积水 15 cm 预警, 30 cm 封闭下穿通道",
    },
    {
        "name": "管网压力骤降(爆管)",
        "device_type": "pressure_gauge",
        "measurand": "pressure",
        "comparator": "drop",
        "levels": [{"level": 2, "value": 0.05}, {"level": 1, "value": 0.1}],
        "duration_s": 0,
        "hysteresis": 0.0,
        "auto_confirm": False,
        "description": "压力每分钟下降 ≥ 0.05 MPa: 疑似爆管",
    },
    {
        "name": "管网压力偏低",
        "device_type": "pressure_gauge",
        "measurand": "pressure",
        "comparator": "below",
        "levels": [{"level": 3, "value": 0.15}, {"level": 2, "value": 0.1}],
        "duration_s": 300,
        "hysteresis": 0.02,
        "auto_confirm": False,
        "description": "压力低于 0.15 MPa 持续 5 分钟",
    },
    {
        "name": "桥梁应变超限",
        "device_type": "strain_gauge",
        "measurand": "strain",
        "comparator": "outside",
        "levels": [
            {"level": 3, "low": -300.0, "high": 300.0},
            {"level": 2, "low": -500.0, "high": 500.0},
            {"level": 1, "low": -800.0, "high": 800.0},
        ],
        "duration_s": 0,
        "hysteresis": 20.0,
        "auto_confirm": False,
        "description": "应变超出 ±300/±500/±800 με",
    },
    {
        "name": "桥梁挠度超限",
        "device_type": "deflection_sensor",
        "measurand": "deflection",
        "comparator": "above",
        "levels": [{"level": 3, "value": 20.0}, {"level": 2, "value": 40.0}],
        "duration_s": 60,
        "hysteresis": 2.0,
        "auto_confirm": False,
        "description": "挠度超过 20/40 mm 持续 1 分钟",
    },
    {
        "name": "管廊/泵站液位超限",
        "device_type": "level_gauge",
        "measurand": "level",
        "comparator": "above",
        "levels": [{"level": 3, "value": 3.0}, {"level": 2, "value": 4.0}],
        "duration_s": 120,
        "hysteresis": 0.2,
        "auto_confirm": False,
        "description": "液位超过 3/4 m 持续 2 分钟",
    },
    {
        "name": "井盖开启",
        "device_type": "cover_sensor",
        "measurand": "cover",
        "comparator": "above",
        "levels": [{"level": 3, "value": 1.0}],
        "duration_s": 0,
        "hysteresis": 0.0,
        "auto_confirm": False,
        "description": "井盖被打开",
    },
    {
        "name": "设备离线",
        "device_type": None,
        "measurand": None,
        "comparator": "offline",
        "levels": [{"level": 4, "value": 3.0}],
        "duration_s": 0,
        "hysteresis": 0.0,
        "auto_confirm": False,
        "description": "超过 3 个采样周期无数据",
    },
]
