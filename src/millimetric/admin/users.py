"""Users: local accounts with argon2id passwords, sign-in, and who a verified token is."""

from __future__ import annotations

import re
from typing import NamedTuple

import sqlalchemy as sa

from millimetric.auth.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, hash_password, password_matches
from millimetric.auth.sessions import Claims
from millimetric.errors import ApiError
from millimetric.ingest.schemas import FieldErrors, invalid_payload
from millimetric.store.control import ControlPlane, Membership, User

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class Caller(NamedTuple):
    user: User
    accounts: list[Membership]

    @property
    def account_ids(self) -> set[str]:
        return {a.account_id for a in self.accounts}


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_credentials(email: str, password: str) -> FieldErrors:
    errors = FieldErrors()
    if not EMAIL_RE.match(normalise_email(email)):
        errors.add("email", "Expected an email address")
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        errors.add("password", f"Expected {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    return errors


def create_user(control: ControlPlane, email: str, password: str) -> User:
    """A local user who owns the local account (the projects the CLI creates). An email that
    exists is an error (`invalid_payload` on `email`)."""
    check_credentials(email, password).raise_if_any()
    try:
        return control.create_user(normalise_email(email), hash_password(password))
    except sa.exc.IntegrityError:
        errors = FieldErrors()
        errors.add("email", "A user with this email exists")
        raise invalid_payload(errors) from None


def authenticate(control: ControlPlane, email: str, password: str) -> User:
    """Blocking (argon2, by design slow). Unknown email and wrong password both end in 401
    `invalid_credentials` after one full hash verification each: no timing difference."""
    user = control.find_user_by_email(normalise_email(email))
    if not password_matches(password, user.password_hash if user else None) or user is None:
        raise ApiError("invalid_credentials")
    return user


def caller(control: ControlPlane, claims: Claims) -> Caller:
    """The token's user (created with a personal account on first sight) and their accounts."""
    user = control.user_for_subject(claims.subject, claims.email)
    return Caller(user, control.memberships(user.id))
