"""safetune.repositories.tenants: one statement finds an active key's tenant and that tenant's job."""

from __future__ import annotations

import uuid

import pytest

from safetune.db import read_connection, session_scope
from safetune.models import Job
from safetune.repositories import tenants as tenants_repo
from tests.safetune.repositories.test_jobs import make_job


@pytest.fixture()
def two_keys_and_a_job(database_url: str) -> tuple[str, str, str, str, str]:
    """(owner tenant id, owner key, other tenant id, other key, the owner's job id), committed."""
    with session_scope() as session:
        owner = tenants_repo.create_tenant(session, f"owner-{uuid.uuid4().hex[:8]}")
        other = tenants_repo.create_tenant(session, f"other-{uuid.uuid4().hex[:8]}")
        owner_key = tenants_repo.create_api_key(session, owner.id)[1]
        other_key = tenants_repo.create_api_key(session, other.id)[1]
        job = make_job(session, owner.id)
        return owner.id, owner_key, other.id, other_key, job.id


def test_the_owner_gets_the_job_and_another_tenant_only_its_own_id(
    two_keys_and_a_job: tuple[str, str, str, str, str],
) -> None:
    owner_id, owner_key, other_id, other_key, job_id = two_keys_and_a_job
    with session_scope() as session:
        mine = tenants_repo.authenticate_for_job(session, owner_key, job_id)
        theirs = tenants_repo.authenticate_for_job(session, other_key, job_id)
        assert mine is not None and isinstance(mine.job, Job)
        assert (mine.tenant_id, mine.job.id, mine.job.tenant_id) == (owner_id, job_id, owner_id)
        assert theirs is not None and (theirs.tenant_id, theirs.job) == (other_id, None)
    with read_connection() as connection:
        row = tenants_repo.authenticate_for_job_row(connection, owner_key, job_id)
        foreign = tenants_repo.authenticate_for_job_row(connection, other_key, job_id)
    assert row is not None and row.job is not None
    assert (row.tenant_id, row.job.id, row.job.tenant_id, row.job.status) == (
        owner_id,
        job_id,
        owner_id,
        "queued",
    )
    assert foreign is not None and (foreign.tenant_id, foreign.job) == (other_id, None)


def test_unknown_and_revoked_keys_find_nothing_and_no_job_id_finds_no_job(
    two_keys_and_a_job: tuple[str, str, str, str, str],
) -> None:
    owner_id, owner_key, _other_id, _other_key, job_id = two_keys_and_a_job
    with session_scope() as session:
        assert tenants_repo.authenticate_for_job(session, "st-made-up", job_id) is None
        no_id = tenants_repo.authenticate_for_job(session, owner_key, None)
        assert no_id is not None and (no_id.tenant_id, no_id.job) == (owner_id, None)
        (key,) = tenants_repo.list_api_keys(session, owner_id)
        assert tenants_repo.revoke_api_key(session, owner_id, key.id)
    with session_scope() as session:
        assert tenants_repo.authenticate_for_job(session, owner_key, job_id) is None
        assert tenants_repo.authenticate(session, owner_key) is None
    with read_connection() as connection:
        assert tenants_repo.authenticate_for_job_row(connection, owner_key, job_id) is None
