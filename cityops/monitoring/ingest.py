"""Telemetry intake (数据接入): validate a batch of readings, store them once, roll them up,
and evaluate the alarm rules for the batch. HTTP (``POST /api/v1/monitoring/telemetry``)
and MQTT (:mod:`cityops.monitoring.mqtt`) both call :func:`ingest_readings`.

Per-reading validation — a reading is refused, with its reason, and counted on its device
(``monitoring_devices.rejected_count``), while the valid readings of the same batch are kept:
unknown device; measurand not one the device reports; unit not the measurand's unit;
non-numeric, NaN or infinite value; a value outside the measurand's physical range
(:data:`cityops.monitoring.catalog.MEASURANDS`); a timestamp without time zone or more than
5 minutes in the future.

The batch is handled column-wise (numpy): the fields of the readings are pulled out once,
device/measurand pairs and timestamps are checked once per distinct value, values are
checked as arrays, and only the readings that fail a check go through the per-reading
validator that words the reason. The valid readings become a :class:`Batch`: arrays sorted
by (device, measurand, ts) with in-batch duplicates removed (the first one is kept).

Storage (the choice written down here, as the design asks):

* **PostgreSQL**: ``monitoring_readings`` is declaratively range-partitioned by month on
  ``ts`` (partitions ``monitoring_readings_yYYYYmMM``, created three months ahead by the
  ``monitoring.partitions`` job, plus a DEFAULT partition so that nothing is ever refused).
  A batch is binary-``COPY``ed straight into it inside a savepoint: the primary key refuses
  the whole COPY if any reading is already stored (or is being stored by a concurrent
  writer), in which case the savepoint is rolled back and the batch goes the careful way —
  into a temporary table, then ``INSERT … ON CONFLICT DO NOTHING RETURNING`` tells which
  readings are new. Either way the 1-minute and 1-hour rollups and the latest values are
  computed from exactly the new readings (numpy) and written with one statement
  (``unnest`` arrays, in key order). Duplicates are thus never counted twice, even with
  concurrent writers. Retention drops whole partitions.
* **SQLite**: one ``WITHOUT ROWID`` table whose primary key (device_id, measurand, ts) is the
  clustered index. Writers are serialised (write lock). The batch is inserted in key order
  inside a savepoint; if a reading was stored before, the savepoint is rolled back, the
  stored keys are looked up through a temporary table and only the others are inserted.
  Rollups (1 min, 1 h) and latest values come from the new readings as above
  (``executemany`` of one row per series and bucket). Retention deletes by ``ts``.

Idempotency: the key (device, measurand, ts) is stored once on both databases. Rules are
evaluated only on readings newer than the last one each rule has seen for the device
(late, out-of-order readings are stored and rolled up but do not trigger alarms).
"""

from __future__ import annotations

import gc
import math
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from cityops.core.db import utcnow
from cityops.core.security import lock_for_write
from cityops.monitoring.catalog import MEASURANDS, Measurand, unit_ok

#: Readings stamped further than this in the future are refused.
MAX_FUTURE = timedelta(minutes=5)
#: Raw readings older than this are deleted by the retention job (rollups are kept).
RETENTION_DAYS_ENV = "CITYOPS_MONITORING_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 180

#: Naive UTC datetimes ↔ integer microseconds since 1970-01-01 (the batch arrays' unit).
EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
MINUTE_US = 60_000_000
HOUR_US = 3_600_000_000
#: PostgreSQL's binary timestamps count microseconds from 2000-01-01.
_PG_EPOCH_US = 946_684_800_000_000


def retention_days() -> int:
    try:
        return max(1, int(os.environ.get(RETENTION_DAYS_ENV, DEFAULT_RETENTION_DAYS)))
    except ValueError:
        return DEFAULT_RETENTION_DAYS


def to_us(naive: datetime) -> int:
    """Microseconds since 1970 of a naive UTC datetime."""
    return (naive - EPOCH) // _US


def from_us(us: int) -> datetime:
    """The naive UTC datetime of microseconds since 1970."""
    return EPOCH + timedelta(microseconds=int(us))


def datetimes(us: np.ndarray) -> list[datetime]:
    """Naive UTC datetimes of an array of microseconds since 1970."""
    return list(us.astype("datetime64[us]").tolist())


@dataclass
class Rejection:
    index: int
    device_code: str | None
    measurand: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "device_code": self.device_code,
            "measurand": self.measurand,
            "reason": self.reason,
        }


@dataclass
class IngestResult:
    received: int = 0
    #: Valid readings (stored now or already stored before).
    accepted: int = 0
    #: Newly stored readings.
    stored: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    #: Alarms raised by this batch (ids) and alarms that changed (repeat/level/normal).
    alarms_raised: list[int] = field(default_factory=list)
    alarms_updated: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected_count": len(self.rejected),
            "rejected": [r.to_dict() for r in self.rejected[:1000]],
            "alarms_raised": self.alarms_raised,
            "alarms_updated": self.alarms_updated,
        }


@dataclass(frozen=True)
class DeviceInfo:
    id: int
    code: str
    device_type: str
    facility_id: int
    measurands: frozenset[str]
    status: str
    interval_s: int


@dataclass
class Batch:
    """The valid readings of a batch, column-wise, sorted by (device_id, measurand, ts) and
    unique on that key. Series ``s`` (``series[s]`` = (device_id, measurand)) holds the
    readings ``bounds[s]:bounds[s + 1]``; ``t`` is microseconds since 1970 (naive UTC)."""

    series: list[tuple[int, str]]
    sid: np.ndarray
    t: np.ndarray
    v: np.ndarray
    bounds: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def empty(cls) -> Batch:
        z = np.zeros(0, np.int64)
        return cls([], z, z, np.zeros(0, np.float64), np.zeros(1, np.int64))

    @classmethod
    def of(
        cls, series: list[tuple[int, str]], sid: np.ndarray, t: np.ndarray, v: np.ndarray
    ) -> Batch:
        """From arrays already sorted by (series, t), unique, every series present."""
        bounds = np.searchsorted(sid, np.arange(len(series) + 1)).astype(np.int64)
        return cls(series, sid, t, v, bounds)

    def select(self, mask: np.ndarray) -> Batch:
        """The readings where ``mask`` holds (series without any are dropped)."""
        if bool(mask.all()):
            return self
        sid = self.sid[mask]
        present = np.unique(sid)
        return Batch.of(
            [self.series[int(s)] for s in present],
            np.searchsorted(present, sid).astype(np.int64),
            self.t[mask],
            self.v[mask],
        )

    def device_ids(self) -> np.ndarray:
        """The device id of each series."""
        return np.fromiter((d for d, _ in self.series), np.int64, len(self.series))

    def measurand_codes(self) -> np.ndarray:
        """The measurand of each series (object array)."""
        out = np.empty(len(self.series), object)
        out[:] = [m for _, m in self.series]
        return out

    def points(self, s: int) -> list[tuple[datetime, float]]:
        """(naive UTC ts, value) of series ``s``, in time order."""
        a, b = int(self.bounds[s]), int(self.bounds[s + 1])
        return list(zip(datetimes(self.t[a:b]), self.v[a:b].tolist(), strict=True))

    def last(self) -> np.ndarray:
        """Index of the last (newest) reading of each series."""
        return self.bounds[1:] - 1


def parse_ts(v: Any) -> datetime | None:
    """A timezone-aware datetime from a datetime, ISO 8601 text or epoch seconds; None if
    impossible (naive values are refused: the device must say which time it means)."""
    if isinstance(v, datetime):
        return v if v.tzinfo is not None else None
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        try:
            return datetime.fromtimestamp(float(v), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(v, str):
        s = v.strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        try:
            d = datetime.fromisoformat(s)
        except ValueError:
            return None
        return d if d.tzinfo is not None else None
    return None


def load_devices(session: Session, codes: Iterable[str]) -> dict[str, DeviceInfo]:
    """The devices of these codes (one raw query, whatever their number)."""
    wanted = sorted({c for c in codes if isinstance(c, str)})
    out: dict[str, DeviceInfo] = {}
    if not wanted:
        return out
    conn = session.connection()
    sql = (
        "SELECT id, code, device_type, facility_id, measurands{cast}, status, interval_s"
        " FROM monitoring_devices WHERE code {cond}"
    )
    if conn.dialect.name == "postgresql":
        rows = fetch_all(
            session, sql.format(cast="::text", cond="= ANY(%(c)b::text[])"), {"c": wanted}
        )
    else:
        rows = fetch_all(
            session,
            sql.format(cast="", cond="IN (SELECT value FROM json_each(?))"),
            (orjson.dumps(wanted).decode(),),
        )
    kinds: dict[Any, frozenset[str]] = {}
    for i, code, dtype, fac, ms, status, interval in rows:
        m = kinds.get(ms)
        if m is None:
            m = kinds[ms] = frozenset(orjson.loads(ms) if ms else ())
        out[code] = DeviceInfo(i, code, dtype, fac, m, status, interval)
    return out


def fetch_all(session: Session, sql: str, params: Any) -> list[Any]:
    """All rows of a query run on the session's DBAPI cursor (no per-row processing: for
    the queries that read one row per device or series of a batch)."""
    cur = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()


class _Memo(dict[Any, int]):
    """A dict that computes a missing value once (so ``map(memo.__getitem__, keys)`` runs
    in C for every key seen before)."""

    def __init__(self, make: Callable[[Any], int]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: Any) -> int:
        v = self[key] = self.make(key)
        return v


class _Validator:
    """Per-batch caches: device/measurand pairs → series, timestamps → microseconds."""

    def __init__(
        self, devices: dict[str, DeviceInfo], only_device: str | None, limit: datetime
    ) -> None:
        self.devices = devices
        self.only_device = only_device
        self.limit = limit
        #: series id → (device id, measurand)
        self.series: list[tuple[int, Measurand]] = []
        self.series_of: dict[tuple[int, str], int] = {}
        #: pair → series id (≥ 0) or -1 - index of its refusal in ``pair_reasons``
        self.pair_reasons: list[str] = []
        self.pairs = _Memo(self._pair)
        #: raw ts → index into ``stamp_us`` / ``stamp_reason``
        self.stamp_us: list[int] = []
        self.stamp_reason: list[str | None] = []
        self.stamps = _Memo(self._stamp)

    def _pair(self, key: tuple[Any, Any]) -> int:
        r = _check_pair(key[0], key[1], self.devices, self.only_device)
        if isinstance(r, str):
            self.pair_reasons.append(r)
            return -len(self.pair_reasons)
        k = (r[0], r[1].code)
        s = self.series_of.get(k)
        if s is None:
            s = self.series_of[k] = len(self.series)
            self.series.append(r)
        return s

    def _stamp(self, raw: Any) -> int:
        r = _check_ts(raw, self.limit)
        if isinstance(r, str):
            self.stamp_us.append(0)
            self.stamp_reason.append(r)
        else:
            self.stamp_us.append(to_us(r))
            self.stamp_reason.append(None)
        return len(self.stamp_us) - 1

    # -- column-wise, the usual case

    def columns(
        self, rows: list[Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(series id, ts µs, value, suspect) per row; suspect rows failed a check (or need
        a closer look: text values). None when the batch is too odd for this path."""
        n = len(rows)
        if set(map(type, rows)) != {dict}:
            return None
        codes = [r.get("device_code") for r in rows]
        mcodes = [r.get("measurand") for r in rows]
        values = [r.get("value") for r in rows]
        stamps = [r.get("ts") for r in rows]
        units = [r.get("unit") for r in rows]
        try:
            sid = np.fromiter(
                map(self.pairs.__getitem__, zip(codes, mcodes, strict=True)), np.int64, n
            )
            tix = np.fromiter(map(self.stamps.__getitem__, stamps), np.int64, n)
        except TypeError:  # unhashable junk somewhere
            return None
        suspect = sid < 0
        if [r for r in rows if "_error" in r]:
            suspect |= np.fromiter(("_error" in r for r in rows), bool, n)
        t = np.array(self.stamp_us, np.int64)[tix]
        suspect |= np.array([x is not None for x in self.stamp_reason], bool)[tix]
        try:
            if not set(map(type, values)) <= {float, int}:
                raise TypeError
            v = np.array(values, np.float64)
        except (OverflowError, TypeError, ValueError):
            # odd values (text, booleans, None, huge integers): the per-reading validator
            # looks at them
            conv = [_as_float(x) for x in values]
            ok = np.fromiter((c is not None for c in conv), bool, n)
            v = np.array([0.0 if c is None else c for c in conv], np.float64)
            suspect |= ~ok
        if not self.series:
            return sid, t, v, np.ones(n, bool)
        sidc = np.where(sid >= 0, sid, 0)
        ms = [m for _, m in self.series]
        low = np.array([m.low for m in ms], np.float64)[sidc]
        high = np.array([m.high for m in ms], np.float64)[sidc]
        with np.errstate(invalid="ignore"):
            suspect |= ~np.isfinite(v) | (v < low) | (v > high)
        for k, m in enumerate(ms):
            if m.discrete is not None:
                of_m = sidc == k
                suspect |= of_m & ~np.isin(v, np.array(m.discrete, np.float64))
        if units.count(None) != n:
            suspect |= np.fromiter(
                (
                    u is not None and not (u.__class__ is str and unit_ok(ms[s], u))
                    for s, u in zip(sidc.tolist(), units, strict=True)
                ),
                bool,
                n,
            )
        return sid, t, v, suspect

    # -- one reading, the way it is worded

    def row(self, i: int, r: Any) -> tuple[int, int, float] | Rejection:
        if not isinstance(r, dict):
            return Rejection(i, None, None, "a reading must be an object")
        code = r.get("device_code")
        mcode = r.get("measurand")
        if "_error" in r:  # a message the transport could not even parse
            return Rejection(i, _s(code), _s(mcode), str(r["_error"]))
        try:
            s = self.pairs[(code, mcode)]
        except TypeError:  # unhashable junk
            code, mcode = _s(code), _s(mcode)
            s = self.pairs[(code, mcode)]
        if s < 0:
            return Rejection(i, _s(code), _s(mcode), self.pair_reasons[-1 - s])
        m = self.series[s][1]
        unit = r.get("unit")
        if unit is not None and not (isinstance(unit, str) and unit_ok(m, unit)):
            return Rejection(
                i, code, mcode, f"unknown unit {unit!r} for {m.name} (expected {m.unit})"
            )
        raw = r.get("value")
        if raw.__class__ is float or raw.__class__ is int:
            try:
                v = float(raw)
            except OverflowError:
                return Rejection(i, code, mcode, f"non-numeric value {raw!r}")
        elif isinstance(raw, bool) or raw is None or isinstance(raw, list | dict):
            return Rejection(i, code, mcode, f"non-numeric value {raw!r}")
        else:
            try:
                v = float(str(raw).strip())
            except (ValueError, OverflowError):
                return Rejection(i, code, mcode, f"non-numeric value {raw!r}")
        if not math.isfinite(v):
            return Rejection(i, code, mcode, f"value {raw!r} is NaN or infinite")
        if v < m.low or v > m.high or (m.discrete is not None and v not in m.discrete):
            return Rejection(
                i,
                code,
                mcode,
                f"physically impossible {m.name} {v:g} {m.unit} (possible: {m.low:g}..{m.high:g})",
            )
        ts_raw = r.get("ts")
        try:
            k = self.stamps[ts_raw]
        except TypeError:
            k = self.stamps[repr(ts_raw)]
        reason = self.stamp_reason[k]
        if reason is not None:
            return Rejection(i, code, mcode, reason)
        return s, self.stamp_us[k], v


def validate(
    rows: list[dict[str, Any]],
    devices: dict[str, DeviceInfo],
    now: datetime,
    result: IngestResult,
    only_device: str | None = None,
) -> Batch:
    """The valid readings of ``rows`` as a :class:`Batch`; refusals go to
    ``result.rejected`` (in row order). A key repeated inside the batch counts as a
    duplicate (the first reading is kept)."""
    n = len(rows)
    if n == 0:
        return Batch.empty()
    limit = (now + MAX_FUTURE).astimezone(UTC).replace(tzinfo=None)
    val = _Validator(devices, only_device, limit)
    cols = val.columns(rows)
    if cols is None:
        sid = np.full(n, -1, np.int64)
        t = np.zeros(n, np.int64)
        v = np.zeros(n, np.float64)
        suspect = np.ones(n, bool)
    else:
        sid, t, v, suspect = cols
    good = ~suspect
    if bool(suspect.any()):
        rejected = result.rejected
        for i in np.flatnonzero(suspect).tolist():
            r = val.row(i, rows[i])
            if isinstance(r, Rejection):
                rejected.append(r)
            else:
                sid[i], t[i], v[i] = r
                good[i] = True
        sid, t, v = sid[good], t[good], v[good]
    if len(sid) == 0:
        return Batch.empty()
    # key order: series by (device id, measurand), then time; stable, so the first of
    # equal keys stays first
    keys = [(d, m.code) for d, m in val.series]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys))
    sid = rank[sid]
    perm = np.lexsort((t, sid))
    sid, t, v = sid[perm], t[perm], v[perm]
    if len(t) > 1:
        dup = (sid[1:] == sid[:-1]) & (t[1:] == t[:-1])
        if bool(dup.any()):
            result.duplicates += int(dup.sum())
            keep = np.concatenate(([True], ~dup))
            sid, t, v = sid[keep], t[keep], v[keep]
    present = np.unique(sid)
    series = [keys[order[int(r)]] for r in present]
    if len(present) != len(keys):
        sid = np.searchsorted(present, sid).astype(np.int64)
    return Batch.of(series, sid, t, v)


def _check_pair(
    code: Any, mcode: Any, devices: dict[str, DeviceInfo], only_device: str | None
) -> tuple[int, Measurand] | str:
    dev = devices.get(code) if isinstance(code, str) else None
    if dev is None:
        return f"unknown device {code!r}"
    if only_device is not None and code != only_device:
        return f"this credential covers only device {only_device}"
    m = MEASURANDS.get(mcode) if isinstance(mcode, str) else None
    if m is None or mcode not in dev.measurands:
        return f"unknown measurand {mcode!r} for device {code}"
    return dev.id, m


def _check_ts(ts_raw: Any, limit: datetime) -> datetime | str:
    ts = parse_ts(ts_raw)
    if ts is None:
        return f"timestamp {ts_raw!r} is not a time with a time zone"
    naive = (ts if ts.tzinfo is UTC else ts.astimezone(UTC)).replace(tzinfo=None)
    if naive > limit:
        return f"timestamp {ts.isoformat()} is more than 5 min ahead"
    return naive


def _as_float(x: Any) -> float | None:
    """A float or int as float (None for anything else, or an int too big for a float)."""
    if x.__class__ is float:
        return float(x)
    if x.__class__ is int:
        try:
            return float(x)
        except OverflowError:
            return None
    return None


def _s(v: Any) -> str | None:
    return None if v is None else str(v)[:60]


# --------------------------------------------------------------------------- storage


def sqlite_ts(d: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores for a naive datetime."""
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}"
    )


def sqlite_texts(us: np.ndarray) -> list[str]:
    """:func:`sqlite_ts` of each of an array of microseconds (formatted once per value)."""
    if len(us) == 0:
        return []
    uniq, inv = np.unique(us, return_inverse=True)
    texts = np.empty(len(uniq), object)
    texts[:] = [
        s[:10] + " " + s[11:]
        for s in np.datetime_as_string(uniq.astype("datetime64[us]"), unit="us").tolist()
    ]
    return list(texts[inv.reshape(-1)].tolist())


def _is_duplicate_key(exc: BaseException) -> bool:
    import sqlite3

    import psycopg
    from sqlalchemy.exc import IntegrityError

    if isinstance(exc, IntegrityError):
        exc = exc.orig or exc
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return True
    return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)


@dataclass
class Rollup:
    """One row per (series, bucket) of a set of readings."""

    sid: np.ndarray
    bucket: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    vsum: np.ndarray
    n: np.ndarray


def rollup(batch: Batch, width_us: int) -> Rollup:
    """min/max/sum/count of the batch's readings per series and bucket of ``width_us``."""
    t, sid, v = batch.t, batch.sid, batch.v
    bucket = t - t % width_us
    brk = np.ones(len(t), bool)
    brk[1:] = (sid[1:] != sid[:-1]) | (bucket[1:] != bucket[:-1])
    st = np.flatnonzero(brk)
    return Rollup(
        sid[st],
        bucket[st],
        np.minimum.reduceat(v, st),
        np.maximum.reduceat(v, st),
        np.add.reduceat(v, st),
        np.diff(np.append(st, len(t))),
    )


def _pg_copy_data(batch: Batch) -> bytes:
    """The batch in PostgreSQL's binary COPY format (device_id, measurand, ts, value), built
    with numpy: rows are grouped by the byte length of their measurand, the only
    variable-width field, and each group is one packed record array."""
    mbytes = [m.encode() for _, m in batch.series]
    mlen = np.fromiter(map(len, mbytes), np.int64, len(mbytes))
    devs = batch.device_ids()
    parts = [b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)]
    row_len = mlen[batch.sid]
    for L in np.unique(mlen).tolist():
        rows = np.flatnonzero(row_len == L) if len(mbytes) > 1 else np.arange(len(batch))
        s = batch.sid[rows]
        rec = np.empty(
            len(rows),
            np.dtype(
                [
                    ("nf", ">i2"),
                    ("l1", ">i4"),
                    ("d", ">i4"),
                    ("l2", ">i4"),
                    ("m", f"S{L}"),
                    ("l3", ">i4"),
                    ("t", ">i8"),
                    ("l4", ">i4"),
                    ("v", ">f8"),
                ]
            ),
        )
        rec["nf"] = 4
        rec["l1"] = 4
        rec["d"] = devs[s]
        rec["l2"] = L
        rec["m"] = _fixed(mbytes, L)[s]
        rec["l3"] = 8
        rec["t"] = batch.t[rows] - _PG_EPOCH_US
        rec["l4"] = 8
        rec["v"] = batch.v[rows]
        parts.append(rec.tobytes())
    parts.append(b"\xff\xff")
    return b"".join(parts)


def _fixed(values: list[bytes], length: int) -> np.ndarray:
    """``values`` as a fixed-width bytes array (those of another length as blanks: they are
    never picked for this width)."""
    return np.array([b if len(b) == length else b"" for b in values], f"S{length}")


_PG_TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS _mon_keys (device_id integer, measurand varchar(16),"
    " ts timestamp, value double precision) ON COMMIT DELETE ROWS"
)

_PG_AGGREGATES = """
WITH m1 AS (
    INSERT INTO monitoring_rollups_1m (device_id, measurand, bucket, vmin, vmax, vsum, n)
    SELECT * FROM unnest(%(m1_d)b::int4[], %(m1_m)b::text[], %(m1_b)b::timestamp[],
        %(m1_lo)b::float8[], %(m1_hi)b::float8[], %(m1_s)b::float8[], %(m1_n)b::int4[])
    ON CONFLICT (device_id, measurand, bucket) DO UPDATE SET
        vmin = LEAST(monitoring_rollups_1m.vmin, excluded.vmin),
        vmax = GREATEST(monitoring_rollups_1m.vmax, excluded.vmax),
        vsum = monitoring_rollups_1m.vsum + excluded.vsum,
        n = monitoring_rollups_1m.n + excluded.n
), h1 AS (
    INSERT INTO monitoring_rollups_1h (device_id, measurand, bucket, vmin, vmax, vsum, n)
    SELECT * FROM unnest(%(h1_d)b::int4[], %(h1_m)b::text[], %(h1_b)b::timestamp[],
        %(h1_lo)b::float8[], %(h1_hi)b::float8[], %(h1_s)b::float8[], %(h1_n)b::int4[])
    ON CONFLICT (device_id, measurand, bucket) DO UPDATE SET
        vmin = LEAST(monitoring_rollups_1h.vmin, excluded.vmin),
        vmax = GREATEST(monitoring_rollups_1h.vmax, excluded.vmax),
        vsum = monitoring_rollups_1h.vsum + excluded.vsum,
        n = monitoring_rollups_1h.n + excluded.n
), lt AS (
    INSERT INTO monitoring_latest (device_id, measurand, ts, value)
    SELECT * FROM unnest(%(lt_d)b::int4[], %(lt_m)b::text[], %(lt_t)b::timestamp[],
        %(lt_v)b::float8[])
    ON CONFLICT (device_id, measurand) DO UPDATE SET ts = excluded.ts, value = excluded.value
    WHERE excluded.ts > monitoring_latest.ts
)
SELECT 1
"""


def _aggregate_params(batch: Batch, r: Rollup, prefix: str) -> dict[str, Any]:
    devs = batch.device_ids()
    ms = batch.measurand_codes()
    return {
        f"{prefix}_d": devs[r.sid].tolist(),
        f"{prefix}_m": ms[r.sid].tolist(),
        f"{prefix}_b": datetimes(r.bucket),
        f"{prefix}_lo": r.vmin.tolist(),
        f"{prefix}_hi": r.vmax.tolist(),
        f"{prefix}_s": r.vsum.tolist(),
        f"{prefix}_n": r.n.tolist(),
    }


def _store_pg(session: Session, batch: Batch) -> np.ndarray | None:
    data = _pg_copy_data(batch)
    new: np.ndarray | None = None
    savepoint = session.begin_nested()
    try:
        _pg_copy(session, "monitoring_readings", data)
    except Exception as exc:
        savepoint.rollback()
        if not _is_duplicate_key(exc):
            raise
        new = _store_pg_careful(session, batch, data)
    else:
        savepoint.commit()
    _pg_write_aggregates(session, batch if new is None else batch.select(new))
    return new


def _pg_copy(session: Session, table: str, data: bytes) -> None:
    raw = session.connection().connection.driver_connection
    with (
        raw.cursor() as cur,  # type: ignore[union-attr]
        cur.copy(
            f"COPY {table} (device_id, measurand, ts, value) FROM STDIN (FORMAT BINARY)"
        ) as cp,
    ):
        cp.write(data)


def _store_pg_careful(session: Session, batch: Batch, data: bytes) -> np.ndarray:
    """Some readings are stored already: insert through a temporary table and learn which
    readings are new from ``RETURNING`` (exact even with concurrent writers)."""
    conn = session.connection()
    conn.exec_driver_sql(_PG_TEMP)
    _pg_copy(session, "_mon_keys", data)
    inserted = conn.exec_driver_sql(
        "INSERT INTO monitoring_readings (device_id, measurand, ts, value)"
        " SELECT device_id, measurand, ts, value FROM _mon_keys ORDER BY 1, 2, 3"
        " ON CONFLICT DO NOTHING RETURNING device_id, measurand, ts"
    ).all()
    conn.exec_driver_sql("TRUNCATE _mon_keys")
    return _mask_of(batch, ((d, m, to_us(ts)) for d, m, ts in inserted))


def _mask_of(batch: Batch, keys: Iterable[tuple[int, str, int]]) -> np.ndarray:
    """A mask of the batch's readings with these (device_id, measurand, µs) keys."""
    index = {k: s for s, k in enumerate(batch.series)}
    mask = np.zeros(len(batch), bool)
    for d, m, us in keys:
        s = index.get((d, m))
        if s is None:
            continue
        a, b = int(batch.bounds[s]), int(batch.bounds[s + 1])
        j = a + int(np.searchsorted(batch.t[a:b], us))
        if j < b and batch.t[j] == us:
            mask[j] = True
    return mask


def _pg_write_aggregates(session: Session, batch: Batch) -> None:
    if not len(batch):
        return
    devs = batch.device_ids()
    ms = batch.measurand_codes()
    last = batch.last()
    params = {
        **_aggregate_params(batch, rollup(batch, MINUTE_US), "m1"),
        **_aggregate_params(batch, rollup(batch, HOUR_US), "h1"),
        "lt_d": devs.tolist(),
        "lt_m": ms.tolist(),
        "lt_t": datetimes(batch.t[last]),
        "lt_v": batch.v[last].tolist(),
    }
    session.connection().exec_driver_sql(_PG_AGGREGATES, params)


_SQLITE_TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS _mon_keys (i INTEGER PRIMARY KEY, device_id INTEGER NOT"
    " NULL, measurand TEXT NOT NULL, ts TEXT NOT NULL, value REAL NOT NULL)"
)
_SQLITE_INSERT = (
    "INSERT INTO monitoring_readings (device_id, measurand, ts, value) VALUES (?, ?, ?, ?)"
)
_SQLITE_ROLLUP = """
INSERT INTO {table} (device_id, measurand, bucket, vmin, vmax, vsum, n)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, measurand, bucket) DO UPDATE SET
    vmin = min({table}.vmin, excluded.vmin),
    vmax = max({table}.vmax, excluded.vmax),
    vsum = {table}.vsum + excluded.vsum,
    n = {table}.n + excluded.n
"""
_SQLITE_LATEST = (
    "INSERT INTO monitoring_latest (device_id, measurand, ts, value) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (device_id, measurand) DO UPDATE SET ts = excluded.ts,"
    " value = excluded.value WHERE excluded.ts > monitoring_latest.ts"
)


def _store_sqlite(session: Session, batch: Batch) -> np.ndarray | None:
    devs = batch.device_ids()[batch.sid].tolist()
    ms = batch.measurand_codes()[batch.sid].tolist()
    texts = sqlite_texts(batch.t)
    values = batch.v.tolist()
    cur = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    new: np.ndarray | None = None
    savepoint = session.begin_nested()
    try:
        cur.executemany(_SQLITE_INSERT, zip(devs, ms, texts, values, strict=True))
    except Exception as exc:
        savepoint.rollback()
        if not _is_duplicate_key(exc):
            raise
        # stored before: look the keys up, insert the others (writers are serialised)
        cur.execute(_SQLITE_TEMP)
        cur.execute("DELETE FROM _mon_keys")
        cur.executemany(
            "INSERT INTO _mon_keys (i, device_id, measurand, ts, value) VALUES (?, ?, ?, ?, ?)",
            zip(range(len(values)), devs, ms, texts, values, strict=True),
        )
        stored = [
            i
            for (i,) in cur.execute(
                "SELECT b.i FROM _mon_keys b JOIN monitoring_readings r ON r.device_id ="
                " b.device_id AND r.measurand = b.measurand AND r.ts = b.ts"
            )
        ]
        cur.execute(
            "INSERT INTO monitoring_readings (device_id, measurand, ts, value) SELECT"
            " device_id, measurand, ts, value FROM _mon_keys WHERE 1 ON CONFLICT DO NOTHING"
        )
        cur.execute("DELETE FROM _mon_keys")
        new = np.ones(len(values), bool)
        new[stored] = False
    else:
        savepoint.commit()
    fresh = batch if new is None else batch.select(new)
    if len(fresh):
        sdevs = fresh.device_ids()
        sms = fresh.measurand_codes()
        for table, width in (
            ("monitoring_rollups_1m", MINUTE_US),
            ("monitoring_rollups_1h", HOUR_US),
        ):
            r = rollup(fresh, width)
            cur.executemany(
                _SQLITE_ROLLUP.format(table=table),
                zip(
                    sdevs[r.sid].tolist(),
                    sms[r.sid].tolist(),
                    sqlite_texts(r.bucket),
                    r.vmin.tolist(),
                    r.vmax.tolist(),
                    r.vsum.tolist(),
                    r.n.tolist(),
                    strict=True,
                ),
            )
        last = fresh.last()
        cur.executemany(
            _SQLITE_LATEST,
            zip(
                sdevs.tolist(),
                sms.tolist(),
                sqlite_texts(fresh.t[last]),
                fresh.v[last].tolist(),
                strict=True,
            ),
        )
    cur.close()
    return new


def store(session: Session, batch: Batch) -> np.ndarray | None:
    """Store the valid readings once; update rollups and latest values. Returns the mask of
    the newly stored readings (None: all of them)."""
    if not len(batch):
        return None
    if session.get_bind().dialect.name == "postgresql":
        return _store_pg(session, batch)
    return _store_sqlite(session, batch)


# --------------------------------------------------------------------------- the entry point


def ingest_readings(
    session: Session,
    rows: list[dict[str, Any]],
    now: datetime | None = None,
    *,
    only_device: str | None = None,
    evaluate: bool = True,
) -> IngestResult:
    """Validate, store and evaluate one batch. ``rows``: dicts with ``device_code``,
    ``measurand``, ``ts`` (tz-aware datetime, ISO text or epoch seconds), ``value`` and an
    optional ``unit``. ``only_device`` restricts the batch to one device (device keys).

    Runs in the caller's transaction; on SQLite it takes the write lock first. Python's
    cyclic garbage collector is paused meanwhile (:func:`gc_paused`)."""
    with gc_paused():
        return _ingest(session, rows, now, only_device, evaluate)


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (process-wide; nested and concurrent uses
    resume it once the last one ends, and only if it was enabled). A batch allocates
    millions of short-lived, acyclic objects — none of which the collector can free —
    and with a large batch alive a full collection walks all of it: on a 200,000-reading
    batch collections took 10-30 % of the intake time."""
    global _gc_depth, _gc_resume
    with _gc_lock:
        if _gc_depth == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_resume:
                gc.enable()


def _ingest(
    session: Session,
    rows: list[dict[str, Any]],
    now: datetime | None,
    only_device: str | None,
    evaluate: bool,
) -> IngestResult:
    t = now or utcnow()
    lock_for_write(session)
    result = IngestResult(received=len(rows))
    devices = load_devices(session, _codes(rows))
    batch = validate(rows, devices, t, result, only_device)
    result.accepted = len(batch) + result.duplicates
    new = store(session, batch)
    result.stored = len(batch) if new is None else int(new.sum())
    result.duplicates += len(batch) - result.stored
    _update_devices(session, devices, batch, new, result, t)
    if evaluate and len(batch):
        from cityops.monitoring.rules import evaluate_batch

        by_id = {d.id: d for d in devices.values()}
        evaluate_batch(session, by_id, batch, t, result)
    return result


def _codes(rows: list[Any]) -> set[str]:
    try:
        codes = {r.get("device_code") for r in rows}
    except (AttributeError, TypeError):
        codes = {
            c for r in rows if isinstance(r, dict) for c in [r.get("device_code")] if _hashable(c)
        }
    return {c for c in codes if isinstance(c, str)}


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _update_devices(
    session: Session,
    devices: dict[str, DeviceInfo],
    batch: Batch,
    new: np.ndarray | None,
    result: IngestResult,
    now: datetime,
) -> None:
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    stamp: Any = now.astimezone(UTC).replace(tzinfo=None)
    if not pg:
        stamp = sqlite_ts(stamp)
    if len(batch):
        # readings newly stored per device (devices whose readings were all stored before
        # count 0 but are still seen)
        sdev = batch.device_ids()
        ids, dev_of_series = np.unique(sdev, return_inverse=True)
        per_row = dev_of_series.reshape(-1)[batch.sid]
        counts = np.bincount(per_row if new is None else per_row[new], minlength=len(ids))
        if pg:
            conn.exec_driver_sql(
                "UPDATE monitoring_devices AS d SET last_seen_at = %(t)s, accepted_count ="
                " d.accepted_count + u.n, status = CASE WHEN d.status = 'offline' THEN"
                " 'online' ELSE d.status END FROM unnest(%(ids)b::int4[], %(ns)b::int8[])"
                " AS u(id, n) WHERE d.id = u.id",
                {"t": stamp, "ids": ids.tolist(), "ns": counts.tolist()},
            )
        else:
            conn.exec_driver_sql(
                "UPDATE monitoring_devices SET last_seen_at = ?, accepted_count ="
                " accepted_count + ?, status = CASE WHEN status = 'offline' THEN 'online'"
                " ELSE status END WHERE id = ?",
                list(zip([stamp] * len(ids), counts.tolist(), ids.tolist(), strict=True)),
            )
    bad: dict[int, tuple[int, str]] = {}
    for r in result.rejected:
        dev = devices.get(r.device_code) if r.device_code else None
        if dev is None:
            continue
        n, _ = bad.get(dev.id, (0, ""))
        bad[dev.id] = (n + 1, r.reason[:300])
    if bad:
        conn.exec_driver_sql(
            "UPDATE monitoring_devices SET rejected_count = rejected_count + %(n)s,"
            " last_reject_at = %(t)s, last_reject_reason = %(r)s WHERE id = %(id)s"
            if pg
            else "UPDATE monitoring_devices SET rejected_count = rejected_count + :n,"
            " last_reject_at = :t, last_reject_reason = :r WHERE id = :id",
            [{"n": n, "t": stamp, "r": reason, "id": d} for d, (n, reason) in sorted(bad.items())],
        )


# --------------------------------------------------------------------------- maintenance


def ensure_partitions(session: Session, now: datetime, months_ahead: int = 3) -> list[str]:
    """PostgreSQL: create the monthly partitions of ``monitoring_readings`` from this month to
    ``months_ahead`` months ahead (idempotent). Returns the partitions created."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return []
    existing = {
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'monitoring_readings'::regclass"
        )
    }
    created: list[str] = []
    y, m = now.year, now.month
    for _ in range(months_ahead + 1):
        ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
        name = f"monitoring_readings_y{y:04d}m{m:02d}"
        if name not in existing:
            # rows already in the default partition for this month move into the new one
            conn.exec_driver_sql(
                f"CREATE TABLE {name} (LIKE monitoring_readings INCLUDING DEFAULTS)"
            )
            conn.exec_driver_sql(
                f"INSERT INTO {name} SELECT * FROM monitoring_readings_default"
                f" WHERE ts >= '{y:04d}-{m:02d}-01' AND ts < '{ny:04d}-{nm:02d}-01'"
            )
            conn.exec_driver_sql(
                "DELETE FROM monitoring_readings_default"
                f" WHERE ts >= '{y:04d}-{m:02d}-01' AND ts < '{ny:04d}-{nm:02d}-01'"
            )
            conn.exec_driver_sql(
                f"ALTER TABLE monitoring_readings ATTACH PARTITION {name}"
                f" FOR VALUES FROM ('{y:04d}-{m:02d}-01') TO ('{ny:04d}-{nm:02d}-01')"
            )
            created.append(name)
        y, m = ny, nm
    return created


def enforce_retention(session: Session, now: datetime, days: int | None = None) -> int:
    """Delete raw readings older than the retention period (rollups stay). PostgreSQL drops
    whole monthly partitions that lie entirely before the cut-off. Returns rows deleted
    (partitions dropped count their rows)."""
    keep = days if days is not None else retention_days()
    cutoff = (now - timedelta(days=keep)).astimezone(UTC).replace(tzinfo=None)
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        n = 0
        for (name,) in conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'monitoring_readings'::regclass"
            " AND c.relname LIKE 'monitoring_readings_y%%' ORDER BY 1"
        ).all():
            y, m = int(name[-7:-3]), int(name[-2:])
            ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
            if datetime(ny, nm, 1) <= cutoff:
                n += int(conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one())
                conn.exec_driver_sql(f"DROP TABLE {name}")
        res = conn.execute(text("DELETE FROM monitoring_readings WHERE ts < :c"), {"c": cutoff})
        return n + int(res.rowcount or 0)
    res = conn.exec_driver_sql("DELETE FROM monitoring_readings WHERE ts < ?", (sqlite_ts(cutoff),))
    return int(res.rowcount or 0)
