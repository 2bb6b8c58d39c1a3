"""Projects and their settings: origins, rate limits, retention, bots. Validation lives here so
that the CLI and the admin API refuse the same values with the same messages (a 400
`invalid_payload` with field errors; the CLI prints them)."""

from __future__ import annotations

from typing import Any

from millimetric.auth.origins import normalise_origin
from millimetric.errors import ApiError
from millimetric.ingest.schemas import FieldErrors
from millimetric.store.control import ControlPlane, Project, ProjectChanges

MAX_ORIGINS = 100
MAX_RETENTION_DAYS = 36_500
RATE_LIMITED_ROUTES = ("/v1/track", "/v1/batch", "/v1/identify")


def check_origins(origins: list[str], field: str, errors: FieldErrors) -> list[str]:
    """Origins (`https://shop.example.com`, `https://*.example.com`) without duplicates."""
    if len(origins) > MAX_ORIGINS:
        errors.add(field, f"At most {MAX_ORIGINS} origins")
    for i, origin in enumerate(origins):
        if normalise_origin(origin.replace("://*.", "://", 1)) is None:
            errors.add(f"{field}.{i}", f"{origin!r} is not an origin (scheme://host[:port])")
    return list(dict.fromkeys(origins))


def check_rate_limits(limits: dict[str, Any], field: str, errors: FieldErrors) -> dict[str, Any]:
    """Route -> `{"rate": r > 0, "burst": b >= 1}`, `"off"` (unlimited) or None (the default)."""
    checked: dict[str, Any] = {}
    for route, limit in limits.items():
        path = f"{field}.{route}"
        if route not in RATE_LIMITED_ROUTES:
            errors.add(path, f"Unknown route; one of {', '.join(RATE_LIMITED_ROUTES)}")
        elif limit is None or limit == "off":
            checked[route] = limit
        elif isinstance(limit, dict) and set(limit) == {"rate", "burst"}:
            rate, burst = limit["rate"], limit["burst"]
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1e6:
                errors.add(f"{path}.rate", "Expected a number of tokens per second > 0 (at most 1000000)")
            elif isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 1_000_000:
                errors.add(f"{path}.burst", "Expected a whole number of tokens >= 1 (at most 1000000)")
            else:
                checked[route] = {"rate": float(rate), "burst": burst}
        else:
            errors.add(path, 'Expected {"rate": r, "burst": b}, "off", or null (the default)')
    return checked


def check_retention(days: int, field: str, errors: FieldErrors) -> int:
    if not 1 <= days <= MAX_RETENTION_DAYS:
        errors.add(field, f"Expected a whole number of days from 1 to {MAX_RETENTION_DAYS}, or null (keep forever)")
    return days


def create(
    control: ControlPlane, name: str, origins: list[str], account_id: str | None = None
) -> tuple[Project, dict[str, str]]:
    """A project and its pk, sk and rk keys (the tokens are shown once)."""
    errors = FieldErrors()
    origins = check_origins(origins, "allowed_origins", errors)
    if not name.strip():
        errors.add("name", "Must not be blank")
    errors.raise_if_any()
    return control.create_project(name.strip(), origins, account_id)


def update(control: ControlPlane, project: Project, changes: ProjectChanges) -> Project:
    """Validate and apply a change in one transaction; servers apply it within seconds."""
    errors = FieldErrors()
    if changes.name is not None and not changes.name.strip():
        errors.add("name", "Must not be blank")
    if changes.allowed_origins is not None:
        changes = changes._replace(allowed_origins=check_origins(changes.allowed_origins, "allowed_origins", errors))
    if changes.retention_days is not None:
        check_retention(changes.retention_days, "retention_days", errors)
    if changes.rate_limits is not None:
        changes = changes._replace(rate_limits=check_rate_limits(changes.rate_limits, "rate_limits", errors))
    errors.raise_if_any()
    if changes.name is not None:
        changes = changes._replace(name=changes.name.strip())
    updated = control.update_project(project.id, changes)
    if updated is None:
        raise ApiError("not_found")
    return updated


def change_origins(control: ControlPlane, project: Project, action: str, origins: list[str]) -> list[str]:
    """`add` or `remove` origins against the list stored now (under the change lock, so two
    concurrent additions both land)."""
    errors = FieldErrors()
    check_origins(origins, "origins", errors)
    errors.raise_if_any()
    add, remove = (origins, []) if action == "add" else ([], origins)
    updated = control.edit_origins(project.id, add, remove)
    if updated is None:
        raise ApiError("not_found")
    return updated.allowed_origins


def delete(control: ControlPlane, project: Project) -> str:
    """Delete the project now (keys stop working within seconds everywhere); its events go in a
    background job, whose id is returned."""
    job_id = control.delete_project(project.id)
    if job_id is None:
        raise ApiError("not_found")
    return job_id
