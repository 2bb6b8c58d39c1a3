"""What a signed-in user may reach: the projects of the accounts they belong to."""

from __future__ import annotations

from millimetric.auth.sessions import Claims
from millimetric.store.control import ControlPlane, Project


def looks_like_session(authorization: str | None) -> bool:
    """A JWT (three dot-separated parts) rather than an API key, which never contains a dot."""
    return bool(authorization) and authorization.count(".") == 2  # type: ignore[union-attr]


def readable_project(control: ControlPlane, claims: Claims, project_ref: str) -> Project | None:
    """Blocking. The project (id or slug) if one of the user's accounts owns it; a user seen for
    the first time gets their personal account first, like on the admin API."""
    user = control.user_for_subject(claims.subject, claims.email)
    project = control.get_project(project_ref)
    if project is None or project.account_id not in {m.account_id for m in control.memberships(user.id)}:
        return None
    return project
