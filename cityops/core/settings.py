"""Settings from ``CITYOPS_*`` environment variables (documented in README.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYOPS_", extra="ignore")

    #: SQLAlchemy URL. Default: an SQLite file under ``var_dir``.
    database_url: str = ""
    #: Directory for the embedded database, attachments and caches.
    var_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8000
    #: Lifetime of a login token (API bearer token or console cookie).
    token_ttl_hours: int = 12
    #: Failed logins in a row before an account is locked, and for how long.
    login_max_failures: int = 5
    lockout_minutes: int = 15
    #: Minimum password length for new passwords.
    password_min_length: int = 10
    #: How often (seconds) a process checks whether grids/components changed elsewhere.
    index_refresh_seconds: float = 2.0
    #: Build the component index at start-up in the background (off in tests).
    warm_indexes: bool = True
    #: Run the case scheduler (临期/超期/督办/webhooks) in this process; leader-elected.
    scheduler: bool = True
    #: Seconds between scheduler ticks.
    scheduler_interval: float = 15.0
    #: Serve the web console (NiceGUI) in this process. The console keeps per-browser state in
    #: the process, so it runs in one process (or behind sticky sessions); API-only worker
    #: processes set this off.
    console: bool = True
    #: Secret for the console's session cookie; default: a random one kept in var_dir.
    console_secret: str = ""
    #: Optional basemap tile URL for the console maps (e.g. 天地图); empty = plain background.
    basemap_url: str = ""
    #: Its attribution text, shown on the map.
    basemap_attribution: str = ""

    def resolved_console_secret(self) -> str:
        if self.console_secret:
            return self.console_secret
        path = self.var_dir / "console_secret"
        if not path.exists():
            import secrets

            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_url(self.database_url)
        return f"sqlite:///{(self.var_dir / 'cityops.db').as_posix()}"


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
