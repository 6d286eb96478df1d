"""Telemetry intake (数据接入): validate a batch of readings, store them once, roll them up,
and evaluate the alarm rules for the batch. HTTP (``POST /api/v1/monitoring/telemetry``)
and MQTT (:mod:`cityops.monitoring.mqtt`) both call :func:`ingest_readings`.

Per-reading validation — a reading is refused, with its reason, and counted on its device
(``monitoring_devices.rejected_count``), while the valid readings of the same batch are kept:
unknown device; measurand not one the device reports; unit not the measurand's unit;
non-numeric, NaN or infinite value; a value outside the measurand's physical range
(:data:`cityops.monitoring.catalog.MEASURANDS`); a timestamp without time zone or more than
5 minutes in the future.

Storage (the choice written down here, as the design asks):

* **PostgreSQL**: ``monitoring_readings`` is declaratively range-partitioned by month on
  ``ts`` (partitions ``monitoring_readings_yYYYYmMM``, created three months ahead by the
  ``monitoring.partitions`` job, plus a DEFAULT partition so that nothing is ever refused).
  A batch is COPYed into a temporary table, then one statement inserts it with
  ``ON CONFLICT DO NOTHING`` and, from the rows actually inserted (``RETURNING`` in a CTE),
  updates the 1-minute and 1-hour rollups and the latest-value table. Duplicates are thus
  never counted twice, even with concurrent writers. Retention drops whole partitions.
* **SQLite**: one ``WITHOUT ROWID`` table whose primary key (device_id, measurand, ts) is the
  clustered index. Writers are serialised (write lock): a batch goes into a temporary table,
  the readings already stored are removed from it by primary-key lookups, the rest is
  inserted (``ON CONFLICT DO NOTHING``) and rolled up (1 min, 1 h, latest) by set-based
  statements. Retention deletes by ``ts``.

Idempotency: the key (device, measurand, ts) is stored once on both databases. Rules are
evaluated only on readings newer than the last one each rule has seen for the device
(late, out-of-order readings are stored and rolled up but do not trigger alarms).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cityops.core.db import utcnow
from cityops.core.security import lock_for_write
from cityops.monitoring.catalog import MEASURANDS, Measurand, unit_ok
from cityops.monitoring.models import Device

#: Readings stamped further than this in the future are refused.
MAX_FUTURE = timedelta(minutes=5)
#: Raw readings older than this are deleted by the retention job (rollups are kept).
RETENTION_DAYS_ENV = "CITYOPS_MONITORING_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 180


def retention_days() -> int:
    try:
        return max(1, int(os.environ.get(RETENTION_DAYS_ENV, DEFAULT_RETENTION_DAYS)))
    except ValueError:
        return DEFAULT_RETENTION_DAYS


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
    wanted = list({c for c in codes if isinstance(c, str)})
    out: dict[str, DeviceInfo] = {}
    for i in range(0, len(wanted), 500):
        for row in session.execute(
            select(
                Device.id,
                Device.code,
                Device.device_type,
                Device.facility_id,
                Device.measurands,
                Device.status,
                Device.interval_s,
            ).where(Device.code.in_(wanted[i : i + 500]))
        ):
            out[row.code] = DeviceInfo(
                row.id,
                row.code,
                row.device_type,
                row.facility_id,
                frozenset(row.measurands or ()),
                row.status,
                row.interval_s,
            )
    return out


#: A valid reading: (device_id, measurand, naive UTC ts, value).
Valid = tuple[int, str, datetime, float]


def validate(
    rows: list[dict[str, Any]],
    devices: dict[str, DeviceInfo],
    now: datetime,
    result: IngestResult,
    only_device: str | None = None,
) -> dict[tuple[int, str, datetime], float]:
    """The valid readings of ``rows`` keyed (device_id, measurand, naive ts); refusals go to
    ``result.rejected``. A key repeated inside the batch counts as a duplicate.

    Device/measurand checks and timestamp parsing are cached per distinct value: a batch
    holds many readings of the same series and of the same instants."""
    limit = (now + MAX_FUTURE).astimezone(UTC).replace(tzinfo=None)
    good: dict[tuple[int, str, datetime], float] = {}
    rejected = result.rejected
    pairs: dict[tuple[Any, Any], tuple[int, Measurand] | str] = {}
    stamps: dict[Any, datetime | str] = {}
    isfinite = math.isfinite
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            rejected.append(Rejection(i, None, None, "a reading must be an object"))
            continue
        code = r.get("device_code")
        mcode = r.get("measurand")
        if "_error" in r:  # a message the transport could not even parse
            rejected.append(Rejection(i, _s(code), _s(mcode), str(r["_error"])))
            continue
        try:
            pair = pairs.get((code, mcode))
        except TypeError:  # unhashable junk
            pair = None
            code, mcode = _s(code), _s(mcode)
        if pair is None:
            pair = _check_pair(code, mcode, devices, only_device)
            pairs[(code, mcode)] = pair
        if isinstance(pair, str):
            rejected.append(Rejection(i, _s(code), _s(mcode), pair))
            continue
        dev_id, m = pair
        unit = r.get("unit")
        if unit is not None and not (isinstance(unit, str) and unit_ok(m, unit)):
            rejected.append(
                Rejection(i, code, mcode, f"unknown unit {unit!r} for {m.name} (expected {m.unit})")
            )
            continue
        raw = r.get("value")
        if raw.__class__ is float or raw.__class__ is int:
            v = float(raw)
        elif isinstance(raw, bool) or raw is None or isinstance(raw, list | dict):
            rejected.append(Rejection(i, code, mcode, f"non-numeric value {raw!r}"))
            continue
        else:
            try:
                v = float(str(raw).strip())
            except ValueError:
                rejected.append(Rejection(i, code, mcode, f"non-numeric value {raw!r}"))
                continue
        if not isfinite(v):
            rejected.append(Rejection(i, code, mcode, f"value {raw!r} is NaN or infinite"))
            continue
        if v < m.low or v > m.high or (m.discrete is not None and v not in m.discrete):
            rejected.append(
                Rejection(
                    i,
                    code,
                    mcode,
                    f"physically impossible {m.name} {v:g} {m.unit} "
                    f"(possible: {m.low:g}..{m.high:g})",
                )
            )
            continue
        ts_raw = r.get("ts")
        try:
            naive = stamps.get(ts_raw)
        except TypeError:
            naive = None
            ts_raw = repr(ts_raw)
        if naive is None:
            naive = _check_ts(ts_raw, limit)
            stamps[ts_raw] = naive
        if isinstance(naive, str):
            rejected.append(Rejection(i, code, mcode, naive))
            continue
        key = (dev_id, m.code, naive)
        if key in good:
            result.duplicates += 1
            continue
        good[key] = v
    return good


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


def _s(v: Any) -> str | None:
    return None if v is None else str(v)[:60]


# --------------------------------------------------------------------------- storage


def sqlite_ts(d: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores for a naive datetime."""
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}"
    )


_PG_TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS _mon_batch (device_id integer, measurand varchar(16),"
    " ts timestamp, value double precision) ON COMMIT DELETE ROWS"
)
_PG_UPSERT = """
WITH ins AS (
    INSERT INTO monitoring_readings (device_id, measurand, ts, value)
    SELECT device_id, measurand, ts, value FROM _mon_batch
    ON CONFLICT DO NOTHING
    RETURNING device_id, measurand, ts, value
), m1 AS (
    INSERT INTO monitoring_rollups_1m (device_id, measurand, bucket, vmin, vmax, vsum, n)
    SELECT device_id, measurand, date_trunc('minute', ts), min(value), max(value),
           sum(value), count(*)
    FROM ins GROUP BY 1, 2, 3
    ON CONFLICT (device_id, measurand, bucket) DO UPDATE SET
        vmin = LEAST(monitoring_rollups_1m.vmin, excluded.vmin),
        vmax = GREATEST(monitoring_rollups_1m.vmax, excluded.vmax),
        vsum = monitoring_rollups_1m.vsum + excluded.vsum,
        n = monitoring_rollups_1m.n + excluded.n
), h1 AS (
    INSERT INTO monitoring_rollups_1h (device_id, measurand, bucket, vmin, vmax, vsum, n)
    SELECT device_id, measurand, date_trunc('hour', ts), min(value), max(value),
           sum(value), count(*)
    FROM ins GROUP BY 1, 2, 3
    ON CONFLICT (device_id, measurand, bucket) DO UPDATE SET
        vmin = LEAST(monitoring_rollups_1h.vmin, excluded.vmin),
        vmax = GREATEST(monitoring_rollups_1h.vmax, excluded.vmax),
        vsum = monitoring_rollups_1h.vsum + excluded.vsum,
        n = monitoring_rollups_1h.n + excluded.n
), lt AS (
    INSERT INTO monitoring_latest (device_id, measurand, ts, value)
    SELECT DISTINCT ON (device_id, measurand) device_id, measurand, ts, value
    FROM ins ORDER BY device_id, measurand, ts DESC
    ON CONFLICT (device_id, measurand) DO UPDATE SET ts = excluded.ts, value = excluded.value
    WHERE excluded.ts > monitoring_latest.ts
)
SELECT device_id, count(*) FROM ins GROUP BY device_id
"""


def _store_pg(session: Session, good: dict[tuple[int, str, datetime], float]) -> dict[int, int]:
    conn = session.connection()
    conn.exec_driver_sql(_PG_TEMP)
    raw = conn.connection.driver_connection
    with (
        raw.cursor() as cur,  # type: ignore[union-attr]
        cur.copy("COPY _mon_batch (device_id, measurand, ts, value) FROM STDIN") as cp,
    ):
        for (d, m, ts), v in good.items():
            cp.write_row((d, m, ts, v))
    counts = {int(d): int(n) for d, n in conn.exec_driver_sql(_PG_UPSERT)}
    conn.exec_driver_sql("TRUNCATE _mon_batch")
    return counts


_SQLITE_TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS _mon_batch (device_id INTEGER NOT NULL,"
    " measurand TEXT NOT NULL, ts TEXT NOT NULL, value REAL NOT NULL)"
)
_SQLITE_ROLLUP = """
INSERT INTO {table} (device_id, measurand, bucket, vmin, vmax, vsum, n)
SELECT device_id, measurand, {bucket}, min(value), max(value), sum(value), count(*)
FROM _mon_batch WHERE 1 GROUP BY 1, 2, 3
ON CONFLICT (device_id, measurand, bucket) DO UPDATE SET
    vmin = min({table}.vmin, excluded.vmin),
    vmax = max({table}.vmax, excluded.vmax),
    vsum = {table}.vsum + excluded.vsum,
    n = {table}.n + excluded.n
"""


def _store_sqlite(session: Session, good: dict[tuple[int, str, datetime], float]) -> dict[int, int]:
    conn = session.connection()
    conn.exec_driver_sql(_SQLITE_TEMP)
    conn.exec_driver_sql("DELETE FROM _mon_batch")
    text_of: dict[datetime, str] = {}

    def fmt(t: datetime) -> str:
        x = text_of.get(t)
        if x is None:
            x = text_of[t] = sqlite_ts(t)
        return x

    conn.exec_driver_sql(
        "INSERT INTO _mon_batch (device_id, measurand, ts, value) VALUES (?, ?, ?, ?)",
        [(d, m, fmt(ts), v) for (d, m, ts), v in good.items()],
    )
    # readings stored before (duplicates) leave the batch: primary-key lookups in SQLite
    conn.exec_driver_sql(
        "DELETE FROM _mon_batch WHERE EXISTS (SELECT 1 FROM monitoring_readings r"
        " WHERE r.device_id = _mon_batch.device_id AND r.measurand = _mon_batch.measurand"
        " AND r.ts = _mon_batch.ts)"
    )
    conn.exec_driver_sql(
        "INSERT INTO monitoring_readings (device_id, measurand, ts, value)"
        " SELECT device_id, measurand, ts, value FROM _mon_batch WHERE 1 ON CONFLICT DO NOTHING"
    )
    conn.exec_driver_sql(
        _SQLITE_ROLLUP.format(
            table="monitoring_rollups_1m", bucket="substr(ts, 1, 16) || ':00.000000'"
        )
    )
    conn.exec_driver_sql(
        _SQLITE_ROLLUP.format(
            table="monitoring_rollups_1h", bucket="substr(ts, 1, 13) || ':00:00.000000'"
        )
    )
    # SQLite: the bare column ``value`` comes from the row holding max(ts)
    conn.exec_driver_sql(
        "INSERT INTO monitoring_latest (device_id, measurand, ts, value)"
        " SELECT device_id, measurand, max(ts), value FROM _mon_batch WHERE 1 GROUP BY 1, 2"
        " ON CONFLICT (device_id, measurand) DO UPDATE SET ts = excluded.ts,"
        " value = excluded.value WHERE excluded.ts > monitoring_latest.ts"
    )
    counts = {
        int(d): int(n)
        for d, n in conn.exec_driver_sql(
            "SELECT device_id, count(*) FROM _mon_batch GROUP BY device_id"
        )
    }
    conn.exec_driver_sql("DELETE FROM _mon_batch")
    return counts


def store(session: Session, good: dict[tuple[int, str, datetime], float]) -> dict[int, int]:
    """Store the valid readings once; update rollups and latest values. Returns the number
    of newly stored readings per device id."""
    if not good:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        return _store_pg(session, good)
    return _store_sqlite(session, good)


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

    Runs in the caller's transaction; on SQLite it takes the write lock first."""
    t = now or utcnow()
    lock_for_write(session)
    result = IngestResult(received=len(rows))
    codes = [r.get("device_code") for r in rows if isinstance(r, dict)]
    devices = load_devices(session, (c for c in codes if isinstance(c, str)))
    good = validate(rows, devices, t, result, only_device)
    result.accepted = len(good) + result.duplicates
    stored = store(session, good)
    result.stored = sum(stored.values())
    result.duplicates += len(good) - result.stored
    _update_devices(session, devices, good, stored, result, t)
    if evaluate and good:
        from cityops.monitoring.rules import evaluate_batch

        by_id = {d.id: d for d in devices.values()}
        evaluate_batch(session, by_id, good, t, result)
    return result


def _update_devices(
    session: Session,
    devices: dict[str, DeviceInfo],
    good: dict[tuple[int, str, datetime], float],
    stored: dict[int, int],
    result: IngestResult,
    now: datetime,
) -> None:
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    stamp: Any = now.astimezone(UTC).replace(tzinfo=None)
    if not pg:
        stamp = sqlite_ts(stamp)
    seen = {d for d, _, _ in good}
    if seen:
        conn.exec_driver_sql(
            "UPDATE monitoring_devices SET last_seen_at = %(t)s, accepted_count ="
            " accepted_count + %(n)s, status = CASE WHEN status = 'offline' THEN 'online'"
            " ELSE status END WHERE id = %(id)s"
            if pg
            else "UPDATE monitoring_devices SET last_seen_at = :t, accepted_count ="
            " accepted_count + :n, status = CASE WHEN status = 'offline' THEN 'online'"
            " ELSE status END WHERE id = :id",
            [{"t": stamp, "n": stored.get(d, 0), "id": d} for d in sorted(seen)],
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
