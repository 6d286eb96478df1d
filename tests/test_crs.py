"""CRS conversions against published reference pairs (WGS84 ↔ GCJ-02 ↔ BD-09)."""

from __future__ import annotations

import numpy as np
import pytest

from cityops.geo import crs
from cityops.geo.crs import (
    bd09_to_gcj02,
    distance_m,
    from_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    to_wgs84,
    wgs84_to_gcj02,
)

# Published pairs: wandergis/coordtransform README/test (Tiananmen area, 116.404 E 39.915 N)
# and eviltransform's test table (Shanghai, Shenzhen, Beijing), as (lon, lat).
WGS_TO_GCJ = [
    ((116.404, 39.915), (116.41024449916938, 39.91640428150164)),
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),
]
GCJ_TO_BD = [((116.404, 39.915), (116.41036949371029, 39.92133699351021))]
BD_TO_GCJ = [((116.404, 39.915), (116.39762729119315, 39.90865673957631))]


@pytest.mark.parametrize(("wgs", "gcj"), WGS_TO_GCJ)
def test_wgs84_to_gcj02_matches_published_values(wgs, gcj) -> None:
    lon, lat = wgs84_to_gcj02(*wgs)
    assert lon == pytest.approx(gcj[0], abs=1e-9)
    assert lat == pytest.approx(gcj[1], abs=1e-9)


@pytest.mark.parametrize(("wgs", "gcj"), WGS_TO_GCJ)
def test_gcj02_to_wgs84_inverts_exactly(wgs, gcj) -> None:
    lon, lat = gcj02_to_wgs84(*gcj)
    # the exact inverse must come back within a millimetre
    assert distance_m(lon, lat, *wgs) < 0.001


@pytest.mark.parametrize(("gcj", "bd"), GCJ_TO_BD)
def test_gcj02_to_bd09_matches_published_value(gcj, bd) -> None:
    assert gcj02_to_bd09(*gcj) == pytest.approx(bd, abs=1e-9)


@pytest.mark.parametrize(("bd", "gcj"), BD_TO_GCJ)
def test_bd09_to_gcj02_matches_published_value(bd, gcj) -> None:
    # the published value comes from the closed-form inverse; ours refines it by iteration
    assert crs.bd09_to_gcj02_approx(*bd) == pytest.approx(gcj, abs=1e-9)
    assert bd09_to_gcj02(*bd) == pytest.approx(gcj, abs=2e-6)
    assert gcj02_to_bd09(*bd09_to_gcj02(*bd)) == pytest.approx(bd, abs=1e-11)


def test_bd09_round_trip_through_wgs84_is_within_a_millimetre_for_bozhou() -> None:
    wgs = (115.7783, 33.8446)  # 亳州 city centre
    bd = from_wgs84(*wgs, "bd09")
    back = to_wgs84(*bd, "bd09")
    assert distance_m(*back, *wgs) < 0.001
    # and the offsets themselves are the real, hundreds-of-metres ones
    assert distance_m(*bd, *wgs) > 300


def test_vectorised_conversion_equals_scalar() -> None:
    rng = np.random.default_rng(3)
    lons = 115.5 + rng.random(500)
    lats = 33.5 + rng.random(500)
    vlon, vlat = crs.wgs84_to_gcj02(lons, lats)
    for i in range(0, 500, 37):
        s = crs.wgs84_to_gcj02(float(lons[i]), float(lats[i]))
        assert (vlon[i], vlat[i]) == pytest.approx(s, abs=1e-12)
    wl, wa = crs.gcj02_to_wgs84(vlon, vlat)
    assert np.max(np.abs(wl - lons)) < 1e-9
    assert np.max(np.abs(wa - lats)) < 1e-9


def test_outside_china_gcj02_applies_no_offset() -> None:
    assert wgs84_to_gcj02(2.3522, 48.8566) == (2.3522, 48.8566)  # Paris


def test_cgcs2000_is_stored_as_is_and_unknown_crs_is_refused() -> None:
    assert to_wgs84(115.78, 33.85, "cgcs2000") == (115.78, 33.85)
    with pytest.raises(ValueError, match="unknown crs 'utm'"):
        to_wgs84(115.78, 33.85, "utm")


def test_geodesic_distance_of_one_degree_of_latitude() -> None:
    # one degree of latitude at 33–34°N is 110.9 km on the WGS84 ellipsoid
    assert distance_m(115.78, 33.0, 115.78, 34.0) == pytest.approx(110_900, rel=2e-3)
