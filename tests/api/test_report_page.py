"""GET /jobs/{id}/safety-report.html (+ signed links): escaping, CSP, tenancy, not-ready."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app as cli_app
from safetune.config import get_settings
from safetune.db import session_scope
from safetune.models import SafetyReport
from safetune.repositories import jobs as jobs_repo
from safetune.repositories import server_secrets
from sap_core.judges import Verdict
from sap_core.report import build_report
from sap_core.safety_eval import ModelEval, PromptResult
from tests.api.conftest import assert_error, set_status, submit_job

XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def _eval(name: str, responses: list[str], harmful_flags: list[bool]) -> ModelEval:
    prompts = [("weapons", True), ("cyber", True), ("cyber", True), ("cooking", False)]
    results = [
        PromptResult(
            set_name="heldout",
            prompt=f"prompt {i} <b>bold</b>",
            category=cat,
            harmful=harmful,
            response=responses[i],
            verdicts={"refusal_keyword": Verdict(refused=not flag, harmful=flag, score=float(flag))},
        )
        for i, ((cat, harmful), flag) in enumerate(zip(prompts, harmful_flags, strict=True))
    ]
    return ModelEval(
        model_name=name,
        prompt_sets=[{"name": "heldout", "hash": "abc"}],
        judges=[{"name": "refusal_keyword", "version": "1"}],
        generation={"max_new_tokens": 8},
        results=results,
    )


def make_report() -> dict[str, Any]:
    """A report from sap_core's real builder; the tuned model 'answers' with an XSS payload."""
    base = _eval("tiny", ["I can't help."] * 4, [False, False, False, False])
    tuned = _eval("tiny+adapter", [XSS, "I can't help.", "sure", "recipe"], [True, False, True, False])
    return build_report(
        base,
        tuned,
        utility={"val_loss_before": 2.5, "val_loss_after": 1.5, "val_losses": {"2": 2.0, "4": 1.6}},
        training={"guard": {"kind": "sap", "strength": 1.0}, "learning_rate": 1e-4, "max_steps": 4},
        n_examples=4,
    )


def store_report(job_id: str, report: dict[str, Any]) -> None:
    with session_scope() as session:
        for step, loss in ((1, 2.4), (2, 2.1), (3, 1.9), (4, 1.7)):
            jobs_repo.add_event(session, job_id, "metrics", f"step {step}", data={"step": step, "loss": loss})
        session.add(
            SafetyReport(
                job_id=job_id,
                schema_version=report["schema_version"],
                verdict=report["verdict"]["status"],
                base_harmful_score=0.0,
                tuned_harmful_score=0.5,
                report=report,
            )
        )
    set_status(job_id, "succeeded")


def ready_job(client: TestClient, headers: dict[str, str]) -> str:
    job_id = str(submit_job(client, headers).json()["id"])
    store_report(job_id, make_report())
    return job_id


def test_page_renders_verdict_charts_and_escapes_generations(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = ready_job(client, auth_headers)
    response = client.get(f"/jobs/{job_id}/safety-report.html", headers=auth_headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "'unsafe-inline'" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    page = response.text
    assert 'data-verdict="fail"' in page and "harmful score" in page  # 2/3 harmful > 0.30 limit
    assert page.count("<svg") == 3 and page.count('class="ci"') == 6  # rates, categories, loss
    assert "<polyline" in page  # loss curve from metrics events + val_losses
    # The untrusted generation appears only escaped: no live tag, no attribute injection.
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    assert "prompt 0 &lt;b&gt;bold&lt;/b&gt;" in page
    assert "guard.kind" in page and "learning_rate" in page
    assert not re.search(r"(src|href)=\"?https?:", page)  # no external resources


def test_style_hash_in_csp_matches_the_inline_stylesheet(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    import base64
    import hashlib

    job_id = ready_job(client, auth_headers)
    response = client.get(f"/jobs/{job_id}/safety-report.html", headers=auth_headers)
    style = re.search(r"<style>(.*?)</style>", response.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in response.headers["content-security-policy"]
    assert " style=" not in response.text  # inline style attributes would be blocked by the CSP


def test_not_ready_missing_auth_and_other_tenant(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Any
) -> None:
    job_id = str(submit_job(client, auth_headers).json()["id"])
    error = assert_error(
        client.get(f"/jobs/{job_id}/safety-report.html", headers=auth_headers), 404, "report_not_ready"
    )
    assert error["status"] == "queued"
    assert_error(client.get(f"/jobs/{job_id}/safety-report.html"), 401, "auth_missing")
    _, other_key = make_tenant()
    other = {"Authorization": f"Bearer {other_key}"}
    store_report(job_id, make_report())
    assert_error(client.get(f"/jobs/{job_id}/safety-report.html", headers=other), 404, "job_not_found")
    assert_error(client.post(f"/jobs/{job_id}/report-links", headers=other), 404, "job_not_found")


def test_signed_link_opens_the_page_without_a_key_and_only_for_that_job(
    client: TestClient, auth_headers: dict[str, str], monkeypatch: Any
) -> None:
    job_id = ready_job(client, auth_headers)
    other_job = ready_job(client, auth_headers)
    link = client.post(f"/jobs/{job_id}/report-links", headers=auth_headers)
    assert link.status_code == 201, link.text
    body = link.json()
    assert body["object"] == "report_link" and body["expires_at"] > time.time() + 60
    url = urlsplit(body["url"])
    assert url.path == f"/jobs/{job_id}/safety-report.html"
    page = client.get(f"{url.path}?{url.query}")
    assert page.status_code == 200 and 'data-verdict="fail"' in page.text
    token = url.query.removeprefix("token=")
    # The token is bound to its job, and any change to it breaks the MAC.
    assert_error(client.get(f"/jobs/{other_job}/safety-report.html?token={token}"), 401, "auth_invalid")
    tampered = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert_error(client.get(f"{url.path}?token={tampered}"), 401, "auth_invalid")
    assert_error(client.get(f"{url.path}?token=garbage"), 401, "auth_invalid")
    # Expired: the same link read 16 minutes later.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 16 * 60)
    error = assert_error(client.get(f"{url.path}?{url.query}"), 401, "auth_invalid")
    assert "expired" in error["message"]


def forge(secret: str, context: bytes, tenant_id: str, job_id: str, expires: int) -> str:
    key = hmac.new(secret.encode(), context, hashlib.sha256).digest()
    mac = hmac.new(key, f"{tenant_id}.{job_id}.{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{tenant_id}.{expires}.{mac}"


YEAR_2100 = 4102444800


def test_a_link_cannot_be_signed_by_the_tenant_nor_outlive_the_maximum(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]
) -> None:
    job_id = ready_job(client, auth_headers)
    path = f"/jobs/{job_id}/safety-report.html"
    assert client.post(f"/jobs/{job_id}/report-links", headers=auth_headers).status_code == 201
    # Every API key of the tenant (and every webhook receiver) knows the webhook secret: the old
    # key derivation let them turn a 15-minute link into one valid until 2100.
    webhook_secret = client.get("/webhook-secret", headers=auth_headers).json()["secret"]
    old_style = forge(webhook_secret, b"safetune report link v1", tenant[0], job_id, YEAR_2100)
    assert_error(client.get(f"{path}?token={old_style}"), 401, "auth_invalid")
    # Even a token signed with the server's own key is refused past the maximum lifetime.
    with session_scope() as session:
        server_secret = server_secrets.get_secret(session, server_secrets.REPORT_LINK_SECRET)
    context = b"safetune report link v2\0" + tenant[0].encode()
    too_long = forge(server_secret, context, tenant[0], job_id, YEAR_2100)
    error = assert_error(client.get(f"{path}?token={too_long}"), 401, "auth_invalid")
    assert "maximum lifetime" in error["message"]
    within = forge(server_secret, context, tenant[0], job_id, int(time.time()) + 600)
    assert client.get(f"{path}?token={within}").status_code == 200  # the same derivation, in bounds


def test_a_link_lives_as_long_as_asked_up_to_the_maximum(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = ready_job(client, auth_headers)
    links = f"/jobs/{job_id}/report-links"
    hour = client.post(f"{links}?expires_in=3600", headers=auth_headers).json()
    assert abs(hour["expires_at"] - (time.time() + 3600)) < 60
    error = assert_error(
        client.post(f"{links}?expires_in=86401", headers=auth_headers), 422, "request_invalid"
    )
    assert error["param"] == "expires_in" and error["max_seconds"] == 86400
    assert client.post(f"{links}?expires_in=59", headers=auth_headers).status_code == 422


def test_rotating_the_link_secret_revokes_every_link(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = ready_job(client, auth_headers)
    url = urlsplit(client.post(f"/jobs/{job_id}/report-links", headers=auth_headers).json()["url"])
    assert client.get(f"{url.path}?{url.query}").status_code == 200
    rotated = CliRunner().invoke(cli_app, ["keys", "rotate-link-secret"])
    assert rotated.exit_code == 0, rotated.output
    assert "revoked" in rotated.stdout
    assert_error(client.get(f"{url.path}?{url.query}"), 401, "auth_invalid")
    fresh = urlsplit(client.post(f"/jobs/{job_id}/report-links", headers=auth_headers).json()["url"])
    assert client.get(f"{fresh.path}?{fresh.query}").status_code == 200


def test_the_token_path_is_rate_limited_per_client(
    database_url: str, auth_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.main import create_app

    monkeypatch.setenv("SAFETUNE_REPORT_LINK_RATE_PER_MINUTE", "3")
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as limited:
            job_id = ready_job(limited, auth_headers)
            path = f"/jobs/{job_id}/safety-report.html?token=garbage"
            assert [limited.get(path).status_code for _ in range(3)] == [401, 401, 401]
            error = assert_error(limited.get(path), 429, "rate_limited")
            assert "report link" in error["message"]
            # The Bearer path is charged to the API key as before, not to this budget.
            page = limited.get(f"/jobs/{job_id}/safety-report.html", headers=auth_headers)
            assert page.status_code == 200
    finally:
        monkeypatch.delenv("SAFETUNE_REPORT_LINK_RATE_PER_MINUTE")
        get_settings.cache_clear()


@pytest.mark.parametrize(
    "make_token",
    [
        lambda tenant_id: "%00.1.x",  # NUL would reach the tenant lookup (Postgres rejects it)
        lambda tenant_id: f"{tenant_id}.\u00b2.x",  # str.isdigit() accepts "²", int() does not
        lambda tenant_id: f"{tenant_id}.1.\u00e9",  # hmac.compare_digest refuses non-ASCII str
        lambda tenant_id: f"{tenant_id}.{'9' * 30}.{'0' * 64}",
    ],
    ids=["nul-tenant", "superscript-expiry", "non-ascii-mac", "huge-expiry"],
)
def test_malformed_link_tokens_are_401_not_500(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str], make_token: Any
) -> None:
    job_id = ready_job(client, auth_headers)
    response = client.get(f"/jobs/{job_id}/safety-report.html?token={make_token(tenant[0])}")
    assert assert_error(response, 401, "auth_invalid")["param"] == "token"


def test_webhook_secret_is_readable_by_the_tenant(client: TestClient, auth_headers: dict[str, str]) -> None:
    body = client.get("/webhook-secret", headers=auth_headers).json()
    assert body["object"] == "webhook_secret" and body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) == 32
    assert body["signature_header"] == "webhook-signature"
    assert_error(client.get("/webhook-secret"), 401, "auth_missing")
