"""Opaque, signed page cursors for GET /v1/query.

A cursor carries the position the event store returned for the next page (opaque here: each
backend encodes its own) and is bound to the project, time range and filters it was issued for.
It is signed with a key derived from the server's pepper, so it cannot be forged or reused with
another query. Layout: base64url(version | binding | position) + "." + MAC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from millimetric.events.queries import RowsPlan
from millimetric.query.params import invalid

VERSION = 2
_BINDING_BYTES = 8
_MAC_BYTES = 16
_MAX_POSITION_BYTES = 256


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    def __init__(self, pepper: str) -> None:
        self._key = hashlib.sha256(b"millimetric-cursor-v1\x00" + pepper.encode()).digest()

    @staticmethod
    def _binding(project_id: str, plan: RowsPlan) -> bytes:
        """What must not change between pages: project, range and filters (limit may)."""
        text = repr((project_id, plan.range.start.isoformat(), plan.range.end.isoformat(), tuple(plan.filters)))
        return hashlib.sha256(text.encode()).digest()[:_BINDING_BYTES]

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, project_id: str, plan: RowsPlan, position: bytes) -> str:
        body = bytes([VERSION]) + self._binding(project_id, plan) + position
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def apply(self, token: str, project_id: str, plan: RowsPlan) -> RowsPlan:
        """The plan for the page after `token`; 400 invalid_params for a bad or foreign cursor."""
        try:
            body_text, _, mac_text = token.partition(".")
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise invalid("cursor", "malformed") from None
        if not 1 + _BINDING_BYTES < len(body) <= 1 + _BINDING_BYTES + _MAX_POSITION_BYTES:
            raise invalid("cursor", "malformed")
        if not hmac.compare_digest(mac, self._mac(body)):
            raise invalid("cursor", "malformed")
        if body[0] != VERSION:
            raise invalid("cursor", "from an older server version; start again without cursor")
        if not hmac.compare_digest(body[1 : 1 + _BINDING_BYTES], self._binding(project_id, plan)):
            raise invalid("cursor", "issued for another project, time range or filter set")
        return plan._replace(after=body[1 + _BINDING_BYTES :])
