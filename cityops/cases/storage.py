"""Attachment storage behind a small interface (local disk under ``var/`` today; object
storage later), with the photo rules: allowed types and sizes, the EXIF GPS position
offered as the case location, and an EXIF-free copy for anything shown to the public."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image, UnidentifiedImageError
from PIL.ExifTags import GPS, IFD

from cityops.core.errors import Invalid
from cityops.core.settings import get_settings

PHOTO_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
DOCUMENT_TYPES = {"application/pdf": "pdf"}
MAX_PHOTO_BYTES = 10 * 2**20
MAX_DOCUMENT_BYTES = 20 * 2**20
_PIL_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...


class LocalStorage:
    """Files under ``<var_dir>/attachments/<key>``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or get_settings().var_dir / "attachments"

    def _path(self, key: str) -> Path:
        if ".." in key or key.startswith("/"):
            raise ValueError(f"bad storage key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(p)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def default_storage() -> Storage:
    return LocalStorage()


@dataclass
class Prepared:
    """A checked upload: what to store and what to record."""

    content_type: str
    size: int
    sha256: str
    data: bytes
    public_data: bytes | None
    exif_lon: float | None
    exif_lat: float | None
    ext: str


def _dms(value: object) -> float:
    d, m, s = (float(x) for x in value)  # type: ignore[attr-defined]
    return d + m / 60.0 + s / 3600.0


def exif_position(img: Image.Image) -> tuple[float, float] | None:
    """(lon, lat) from the photo's EXIF GPS block, or None."""
    try:
        gps = img.getexif().get_ifd(IFD.GPSInfo)
    except Exception:
        return None
    if not gps or GPS.GPSLatitude not in gps or GPS.GPSLongitude not in gps:
        return None
    try:
        lat = _dms(gps[GPS.GPSLatitude])
        lon = _dms(gps[GPS.GPSLongitude])
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if gps.get(GPS.GPSLatitudeRef) == "S":
        lat = -lat
    if gps.get(GPS.GPSLongitudeRef) == "W":
        lon = -lon
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lon, lat


def strip_exif(img: Image.Image, fmt: str) -> bytes:
    """Re-encode the pixels only: no EXIF, GPS, maker notes or comments survive."""
    clean = Image.frombytes(img.mode, img.size, img.tobytes())
    palette = img.getpalette() if img.mode == "P" else None
    if palette:
        clean.putpalette(palette)
    out = io.BytesIO()
    clean.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def prepare(filename: str, declared_type: str | None, data: bytes) -> Prepared:
    """Check an upload's type (by content, not by name) and size; read and strip EXIF."""
    if not data:
        raise Invalid(f"{filename}: the file is empty", field="file", value=filename)
    sha = hashlib.sha256(data).hexdigest()
    if data[:5] == b"%PDF-":
        if len(data) > MAX_DOCUMENT_BYTES:
            raise Invalid(
                f"{filename}: documents may be at most {MAX_DOCUMENT_BYTES // 2**20} MB",
                field="file",
                value=len(data),
            )
        return Prepared("application/pdf", len(data), sha, data, None, None, None, "pdf")
    try:
        img = Image.open(io.BytesIO(data))
        img.verify()
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise Invalid(
            f"{filename}: not an allowed file type (photos: JPEG, PNG, WebP; documents: PDF)",
            field="file",
            value=declared_type,
        ) from None
    ctype = _PIL_FORMATS.get(img.format or "")
    if ctype is None:
        raise Invalid(
            f"{filename}: image type {img.format} is not allowed (JPEG, PNG, WebP)",
            field="file",
            value=img.format,
        )
    if len(data) > MAX_PHOTO_BYTES:
        raise Invalid(
            f"{filename}: photos may be at most {MAX_PHOTO_BYTES // 2**20} MB",
            field="file",
            value=len(data),
        )
    pos = exif_position(img)
    public = strip_exif(img, img.format or "JPEG")
    return Prepared(
        ctype,
        len(data),
        sha,
        data,
        public,
        pos[0] if pos else None,
        pos[1] if pos else None,
        PHOTO_TYPES[ctype],
    )
