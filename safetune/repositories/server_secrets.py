"""Server-side secrets by name (safetune.models.ServerSecret). Only add/flush here."""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from safetune.models import ServerSecret, utcnow

REPORT_LINK_SECRET = "report_link"


def get_secret(session: Session, name: str) -> str:
    """The secret, created at random on first use (two replicas racing agree on the first insert)."""
    row = session.get(ServerSecret, name)
    if row is not None:
        return row.value
    try:
        with session.begin_nested():
            session.add(ServerSecret(name=name, value=secrets.token_hex(32)))
    except IntegrityError:
        pass  # another process created it first: use theirs
    row = session.get(ServerSecret, name, populate_existing=True)
    assert row is not None
    return row.value


def rotate_secret(session: Session, name: str) -> None:
    """Replace the secret: everything derived from the old one (e.g. every report link) stops working."""
    row = session.get(ServerSecret, name)
    if row is None:
        session.add(ServerSecret(name=name, value=secrets.token_hex(32)))
    else:
        row.value = secrets.token_hex(32)
        row.rotated_at = utcnow()
    session.flush()
