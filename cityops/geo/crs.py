"""Coordinate systems used by Chinese phones and web maps, and metric distances.

* ``wgs84`` (also CGCS2000: for city work the two agree to centimetres) is what we store.
* ``gcj02`` (国测局坐标, used by 高德/腾讯 maps) is WGS84 plus a published obfuscation offset.
* ``bd09`` (百度坐标) is GCJ-02 with a further rotation/offset.

The GCJ-02 forward transform is the public algorithm; its inverse has no closed form, so
we iterate the forward transform to a fixed point (converges to < 1e-9° in a few steps,
i.e. sub-millimetre). All functions accept scalars or numpy arrays. Outside mainland China
GCJ-02 applies no offset. No maintained PyPI package does this (the ones that exist are
unmaintained since 2018–2019), so the few lines live here, tested against published pairs.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from pyproj import Geod

CRS = Literal["wgs84", "cgcs2000", "gcj02", "bd09"]
CRS_NAMES: tuple[str, ...] = ("wgs84", "cgcs2000", "gcj02", "bd09")

_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = np.pi * 3000.0 / 180.0

T = TypeVar("T", float, NDArray[np.float64])

GEOD = Geod(ellps="WGS84")


def _out_of_china(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.bool_]:
    return (lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271)


def _delta(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    x = lon - 105.0
    y = lat - 35.0
    sx = np.sqrt(np.abs(x))
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * sx
        + common
        + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
        + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    )
    dlon = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * x * y
        + 0.1 * sx
        + common
        + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
        + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    )
    radlat = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(radlat) ** 2
    sqrtmagic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrtmagic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * np.cos(radlat) * np.pi)
    outside = _out_of_china(lon, lat)
    return np.where(outside, 0.0, dlon), np.where(outside, 0.0, dlat)


def _arr(v: float | NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(v, dtype=np.float64)


def _ret(like: float | NDArray[np.float64], a: NDArray[np.float64]) -> T:  # type: ignore[type-var]
    """A float for scalar input, an array for array input."""
    return float(a) if np.ndim(like) == 0 else a  # type: ignore[return-value]


def wgs84_to_gcj02(lon: T, lat: T) -> tuple[T, T]:
    lo, la = _arr(lon), _arr(lat)
    dlon, dlat = _delta(lo, la)
    return _ret(lon, lo + dlon), _ret(lat, la + dlat)


def gcj02_to_wgs84(lon: T, lat: T) -> tuple[T, T]:
    """Exact inverse by fixed-point iteration (error < 1e-9°)."""
    glo, gla = _arr(lon), _arr(lat)
    wlo, wla = glo.copy(), gla.copy()
    for _ in range(30):
        dlon, dlat = _delta(wlo, wla)
        elo = wlo + dlon - glo
        ela = wla + dlat - gla
        wlo = wlo - elo
        wla = wla - ela
        if np.max(np.abs(elo), initial=0.0) < 1e-11 and np.max(np.abs(ela), initial=0.0) < 1e-11:
            break
    return _ret(lon, wlo), _ret(lat, wla)


def gcj02_to_bd09(lon: T, lat: T) -> tuple[T, T]:
    x, y = _arr(lon), _arr(lat)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return _ret(lon, z * np.cos(theta) + 0.0065), _ret(lat, z * np.sin(theta) + 0.006)


def bd09_to_gcj02_approx(lon: T, lat: T) -> tuple[T, T]:
    """The published closed-form inverse (error up to ~1e-6°, ~15 cm)."""
    x, y = _arr(lon) - 0.0065, _arr(lat) - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return _ret(lon, z * np.cos(theta)), _ret(lat, z * np.sin(theta))


def bd09_to_gcj02(lon: T, lat: T) -> tuple[T, T]:
    """Exact inverse of :func:`gcj02_to_bd09`: the closed form, refined by iteration."""
    blo, bla = _arr(lon), _arr(lat)
    glo, gla = (np.asarray(v, dtype=np.float64) for v in bd09_to_gcj02_approx(blo, bla))
    for _ in range(10):
        flo, fla = gcj02_to_bd09(glo, gla)
        elo, ela = np.asarray(flo) - blo, np.asarray(fla) - bla
        glo, gla = glo - elo, gla - ela
        if np.max(np.abs(elo), initial=0.0) < 1e-12 and np.max(np.abs(ela), initial=0.0) < 1e-12:
            break
    return _ret(lon, glo), _ret(lat, gla)


def to_wgs84(lon: T, lat: T, crs: str = "wgs84") -> tuple[T, T]:
    """Convert input coordinates in ``crs`` to WGS84/CGCS2000 (what we store)."""
    crs = crs.lower()
    if crs in ("wgs84", "cgcs2000"):
        return lon, lat
    if crs == "gcj02":
        return gcj02_to_wgs84(lon, lat)
    if crs == "bd09":
        glon, glat = bd09_to_gcj02(lon, lat)
        return gcj02_to_wgs84(glon, glat)
    raise ValueError(f"unknown crs {crs!r}: expected one of {', '.join(CRS_NAMES)}")


def from_wgs84(lon: T, lat: T, crs: str = "wgs84") -> tuple[T, T]:
    """Convert stored WGS84 coordinates to ``crs`` (e.g. for a 高德/百度 base map)."""
    crs = crs.lower()
    if crs in ("wgs84", "cgcs2000"):
        return lon, lat
    if crs == "gcj02":
        return wgs84_to_gcj02(lon, lat)
    if crs == "bd09":
        glon, glat = wgs84_to_gcj02(lon, lat)
        return gcj02_to_bd09(glon, glat)
    raise ValueError(f"unknown crs {crs!r}: expected one of {', '.join(CRS_NAMES)}")


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Geodesic distance on the WGS84 ellipsoid, in metres."""
    return float(GEOD.inv(lon1, lat1, lon2, lat2)[2])
