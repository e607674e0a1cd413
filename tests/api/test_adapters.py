"""GET /jobs/{id}/adapter and /checkpoints once the worker has stored them."""

from __future__ import annotations

import hashlib
import io
import zipfile

from fastapi.testclient import TestClient

from api.routes.adapters import CHUNK_BYTES
from safetune.db import session_scope
from safetune.models import Adapter, Checkpoint
from tests.api.conftest import assert_error, set_status, submit_job


def _adapter_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("adapter_config.json", '{"r": 8}')
        archive.writestr("adapter_model.safetensors", b"\x00" * 300_000)  # > one stream chunk
    return buffer.getvalue()


def test_adapter_download(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    assert_error(client.get(f"/jobs/{job_id}/adapter", headers=auth_headers), 404, "adapter_not_ready")
    content = _adapter_zip()
    digest = hashlib.sha256(content).hexdigest()
    with session_scope() as session:  # what the worker's final transaction writes
        session.add(Adapter(job_id=job_id, content=content, sha256=digest, size_bytes=len(content)))
    set_status(job_id, "succeeded")
    response = client.get(f"/jobs/{job_id}/adapter", headers=auth_headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == f'attachment; filename="{job_id}-adapter.zip"'
    assert response.headers["etag"] == f'"{digest}"'
    assert response.content == content
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["adapter_config.json", "adapter_model.safetensors"]
    cached = client.get(f"/jobs/{job_id}/adapter", headers={**auth_headers, "If-None-Match": f'"{digest}"'})
    assert (cached.status_code, cached.content) == (304, b"")


def test_checkpoints_listed_by_step(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    with session_scope() as session:
        for step in (20, 10):
            session.add(
                Checkpoint(
                    job_id=job_id,
                    step=step,
                    train_loss=1.0 / step,
                    adapter_zip=b"z",
                    state_zip=b"s",
                    sha256="0" * 64,
                )
            )
    body = client.get(f"/jobs/{job_id}/checkpoints", headers=auth_headers).json()
    assert [c["step"] for c in body["data"]] == [10, 20]
    assert body["data"][0]["id"].startswith("ftckpt-")
    assert "adapter_zip" not in body["data"][0]


def test_checkpoint_adapters_download_and_best_by_validation_loss(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    zips = {step: _adapter_zip() + bytes([step]) for step in (10, 20, 30)}
    val_losses = {10: 2.0, 20: 1.5, 30: 1.7}  # step 20 is best: later steps overfit
    with session_scope() as session:
        for step, content in zips.items():
            session.add(
                Checkpoint(
                    job_id=job_id,
                    step=step,
                    train_loss=1.0,
                    val_loss=val_losses[step],
                    adapter_zip=content,
                    state_zip=b"s",
                    sha256=hashlib.sha256(content).hexdigest(),
                )
            )
    listing = client.get(f"/jobs/{job_id}/checkpoints", headers=auth_headers).json()
    assert listing["best_step"] == 20
    assert listing["data"][0]["download_url"] == f"/jobs/{job_id}/checkpoints/10/adapter"
    step30 = client.get(f"/jobs/{job_id}/checkpoints/30/adapter", headers=auth_headers)
    assert (step30.status_code, step30.content) == (200, zips[30])
    # Streamed in chunks from the database like the final adapter, with its length announced.
    assert step30.headers["content-length"] == str(len(zips[30])) and len(zips[30]) > CHUNK_BYTES
    best = client.get(f"/jobs/{job_id}/checkpoints/best/adapter", headers=auth_headers)
    assert best.content == zips[20]
    assert "step-20" in best.headers["content-disposition"]
    assert_error(
        client.get(f"/jobs/{job_id}/checkpoints/40/adapter", headers=auth_headers),
        404,
        "checkpoint_not_found",
    )
    assert_error(
        client.get(f"/jobs/{job_id}/checkpoints/x1/adapter", headers=auth_headers), 422, "request_invalid"
    )


def test_checkpoint_steps_that_name_no_row(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    path = f"/jobs/{job_id}/checkpoints/{{}}/adapter"
    # "²" passes str.isdigit() but not int(); a step past int4 overflows the Postgres parameter.
    for step in ("\u00b2", "abc", "9" * 20, "2147483648"):
        error = assert_error(client.get(path.format(step), headers=auth_headers), 422, "request_invalid")
        assert error["param"] == "step"
    error = assert_error(client.get(path.format(7), headers=auth_headers), 404, "checkpoint_not_found")
    assert error["param"] == "step"
