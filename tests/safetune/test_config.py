"""Settings refuse combinations that would silently misbehave."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from safetune.config import Settings


def test_a_heartbeat_slower_than_the_lease_is_refused() -> None:
    """With the heartbeat no longer capped at 1 s, a slow one would let the reaper take healthy jobs."""
    with pytest.raises(ValidationError, match="heartbeat_seconds"):
        Settings(heartbeat_seconds=60, stale_after_seconds=120)
    assert Settings(heartbeat_seconds=30, stale_after_seconds=120).heartbeat_seconds == 30


def test_admin_token_is_gone_and_production_needs_no_placeholder_secret() -> None:
    """admin_token guarded nothing (issue 12 §10); the admin commands need database access."""
    assert "admin_token" not in Settings.model_fields
    assert Settings(environment="production").environment == "production"
