"""The one settings object: `MILLIMETRIC_*` environment variables, overridable by CLI flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any

PEPPER_FILE = "pepper"
JWT_SECRET_FILE = "jwt-secret"  # signs the server's own admin tokens when no JWT secret is configured
EVENTS_FILE = "events.duckdb"  # the embedded event store, in the data directory
SPOOL_DIR = "spool"  # with ClickHouse: each server process's spool, in the data directory
CONTROL_FILE = "control.sqlite3"  # the embedded control plane


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./millimetric-data")
    host: str = "127.0.0.1"
    port: int = 8787
    database_url: str | None = None
    clickhouse_url: str | None = None
    spool_max_bytes: int = 1 << 30  # a ClickHouse node's spool: past it, ingest answers 503 overloaded
    redis_url: str | None = None
    redis_prefix: str = "millimetric:rl:"
    pepper: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    trust_cf_headers: bool = False
    log_level: str = "info"
    log_format: str = "text"  # or "json": one JSON object per line
    metrics_token: str | None = None  # when set, GET /metrics wants `Authorization: Bearer <it>`
    rate_limits: bool = True
    queue_limit: int = 50_000  # per worker
    workers: int = 1  # server processes (`millimetric.api.server`)
    key_cache_ttl: float = 60.0
    forget_tombstone_days: int = 30
    enrich: bool = True
    jwt_secret: str | None = None  # HS256 admin tokens (Supabase's shared-secret model)
    jwks_url: str | None = None  # RS256/ES256 admin tokens verified against this key set
    bench_routes: bool = False  # POST /bench/noop, a do-nothing route for bench/ingest.py's ceiling

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read `MILLIMETRIC_*` variables; explicit overrides (CLI flags) win when not None."""
        env = os.environ if environ is None else environ
        parsers: dict[str, Any] = {
            "data_dir": Path,
            "host": str,
            "port": int,
            "database_url": str,
            "clickhouse_url": str,
            "spool_max_bytes": int,
            "redis_url": str,
            "redis_prefix": str,
            "pepper": str,
            "trusted_proxies": _env_list,
            "trust_cf_headers": _env_bool,
            "log_level": str,
            "log_format": lambda v: v.strip().lower(),
            "metrics_token": str,
            "rate_limits": lambda v: v.strip().lower() != "off",
            "queue_limit": int,
            "workers": int,
            "key_cache_ttl": float,
            "forget_tombstone_days": int,
            "enrich": lambda v: v.strip().lower() != "off",
            "jwt_secret": str,
            "jwks_url": str,
            "bench_routes": _env_bool,
        }
        values: dict[str, Any] = {}
        for name, parse in parsers.items():
            raw = env.get(f"MILLIMETRIC_{name.upper()}")
            if raw not in (None, ""):
                values[name] = parse(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.workers < 1:
            raise ValueError(f"MILLIMETRIC_WORKERS must be 1 or more, not {settings.workers}")
        if settings.log_format not in ("text", "json"):
            raise ValueError(f"MILLIMETRIC_LOG_FORMAT must be text or json, not {settings.log_format!r}")
        for cidr in settings.trusted_proxies:
            ipaddress.ip_network(cidr, strict=False)  # fail at start-up, not per request
        return settings

    @property
    def control_plane_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / CONTROL_FILE).resolve()}"

    @property
    def event_store_path(self) -> Path:
        return self.data_dir / EVENTS_FILE

    def resolved_pepper(self) -> str:
        """The key pepper: configured, or generated once and kept in the data directory."""
        return self.pepper or self._data_dir_secret(PEPPER_FILE)

    def resolved_jwt_secret(self) -> str:
        """The HS256 secret of admin tokens: configured, or generated once into the data directory
        (then the server signs and accepts its own tokens)."""
        return self.jwt_secret or self._data_dir_secret(JWT_SECRET_FILE)

    def _data_dir_secret(self, name: str) -> str:
        """A random secret kept in the data directory (mode 0600), created by the first process
        that needs it; every other process reads that one."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        secret = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        return secret
