"""Every bad input is a 4xx with the error envelope, and leaves no files/jobs/events behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from safetune.config import get_settings
from tests.api.conftest import TINY_MODEL, assert_error, chat_jsonl, row_counts, submit_job

GOOD_LINE = json.dumps(
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
).encode()


@pytest.mark.parametrize(
    ("dataset", "status", "code", "param", "line"),
    [
        (GOOD_LINE + b"\n" + b'{"messages": [}\n', 422, "dataset_invalid_line", "dataset", 2),
        (
            GOOD_LINE
            + b'\n{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}\n',
            422,
            "dataset_invalid_line",
            "messages[1].role",
            2,
        ),
        (b"", 422, "dataset_empty", "dataset", None),
        (GOOD_LINE + b"\n" + GOOD_LINE + b"\n" + b'{"x": "\xff"}\n', 422, "dataset_encoding", "dataset", 3),
        (
            GOOD_LINE + b"\n" + GOOD_LINE.replace(b'"q"', b'"q\\u0000"') + b"\n",
            422,
            "dataset_invalid_line",
            "messages[0].content",
            2,
        ),
        (
            GOOD_LINE + b"\n" + GOOD_LINE.replace(b'"q"', b'"q\\ud800"') + b"\n",
            422,
            "dataset_encoding",
            "dataset",
            2,
        ),
    ],
    ids=["malformed-json", "wrong-role", "empty", "non-utf8", "nul", "lone-surrogate"],
)
def test_bad_dataset(
    client: TestClient,
    auth_headers: dict[str, str],
    tenant: tuple[str, str],
    dataset: bytes,
    status: int,
    code: str,
    param: str,
    line: int | None,
) -> None:
    error = assert_error(submit_job(client, auth_headers, dataset=dataset), status, code)
    assert (error["param"], error["line"]) == (param, line)
    assert row_counts(tenant[0]) == {"files": 0, "jobs": 0, "job_events": 0}


def test_dataset_over_size_limit(
    client: TestClient, make_tenant: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, key = make_tenant(max_dataset_bytes=2048)
    headers = {"Authorization": f"Bearer {key}"}
    error = assert_error(submit_job(client, headers, dataset=chat_jsonl(200)), 413, "dataset_too_large")
    assert error["param"] == "dataset"
    upload = client.post(
        "/files", headers=headers, files={"file": ("a.jsonl", chat_jsonl(200))}, data={"purpose": "training"}
    )
    assert_error(upload, 413, "dataset_too_large")
    assert row_counts(tenant_id) == {"files": 0, "jobs": 0, "job_events": 0}


@pytest.fixture()
def small_limit_client(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An app whose request body limit is 64 KiB, so the test need not stream 64 MiB."""
    monkeypatch.setenv("SAFETUNE_MAX_REQUEST_BYTES", str(64 * 1024))
    get_settings.cache_clear()
    with TestClient(create_app()) as small:
        yield small
    monkeypatch.delenv("SAFETUNE_MAX_REQUEST_BYTES")
    get_settings.cache_clear()


def test_request_body_limit_is_enforced_while_streaming(
    small_limit_client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]
) -> None:
    client = small_limit_client
    limit = 64 * 1024
    big = b"x" * (limit + 10)

    def chunks() -> Any:  # no Content-Length: only counting the streamed bytes can catch it
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = client.post(
        "/jobs", headers={**auth_headers, "Content-Type": "application/json"}, content=chunks()
    )
    assert_error(streamed, 413, "payload_too_large")
    boundary = "fuzzboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ntraining\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
    ).encode()

    def multipart() -> Any:
        yield head
        yield from chunks()

    form = client.post(
        "/files",
        headers={**auth_headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=multipart(),
    )
    assert_error(form, 413, "payload_too_large")
    declared = client.post(
        "/files", headers={**auth_headers, "Content-Length": str(limit + 1)}, content=b"{}"
    )
    assert_error(declared, 413, "payload_too_large")
    assert row_counts(tenant[0]) == {"files": 0, "jobs": 0, "job_events": 0}


@pytest.mark.parametrize(
    ("spec", "code", "param"),
    [
        ({"base_model": "gpt-17"}, "base_model_unknown", "base_model"),
        (
            {"base_model": TINY_MODEL, "hyperparameters": {"epochs": 0}},
            "spec_invalid",
            "hyperparameters.epochs",
        ),
        (
            {"base_model": TINY_MODEL, "hyperparameters": {"learning_rate": 1.0}},
            "spec_invalid",
            "hyperparameters.learning_rate",
        ),
        (
            {"base_model": TINY_MODEL, "hyperparameters": {"lora_r": 1000}},
            "spec_invalid",
            "hyperparameters.lora_r",
        ),
        (
            {"base_model": TINY_MODEL, "hyperparameters": {"target_modules": ["lm_head"]}},
            "spec_invalid",
            "hyperparameters.target_modules",
        ),
        ({"base_model": TINY_MODEL, "validation_split": 0.9}, "spec_invalid", "validation_split"),
        ({"base_model": TINY_MODEL, "suffix": "Bad Suffix!"}, "spec_invalid", "suffix"),
        ({"base_model": TINY_MODEL, "webhook_url": "ftp://x"}, "spec_invalid", "webhook_url"),
        ({"base_model": TINY_MODEL, "sap": {"refresh_every": 0}}, "spec_invalid", "sap.refresh_every"),
        ({"base_model": TINY_MODEL, "learning_rate": 0.1}, "spec_invalid", "learning_rate"),
        ({"base_model": TINY_MODEL, "guard": "magic"}, "spec_invalid", "guard"),
        ({"guard": "sap"}, "spec_invalid", "base_model"),
        (
            {"base_model": TINY_MODEL, "hyperparameters": {"max_seq_len": 1024}},
            "spec_invalid",
            "hyperparameters.max_seq_len",
        ),
        (
            {"base_model": TINY_MODEL, "guard": "sap", "hyperparameters": {"max_seq_len": 64}},
            "spec_invalid",
            "hyperparameters.max_seq_len",
        ),
        ({"base_model": TINY_MODEL, "sap": {"probe_layers": [4]}}, "spec_invalid", "sap.probe_layers"),
        (
            {"base_model": TINY_MODEL, "evaluation": {"max_new_tokens": 0}},
            "spec_invalid",
            "evaluation.max_new_tokens",
        ),
        (
            {"base_model": TINY_MODEL, "evaluation": {"thresholds": {"max_harmful_score": 2}}},
            "spec_invalid",
            "evaluation.thresholds.max_harmful_score",
        ),
        ({"base_model": TINY_MODEL, "suffix": "a\u0000b"}, "spec_invalid", "spec"),
    ],
)
def test_bad_spec(
    client: TestClient,
    auth_headers: dict[str, str],
    tenant: tuple[str, str],
    spec: dict[str, Any],
    code: str,
    param: str,
) -> None:
    error = assert_error(submit_job(client, auth_headers, spec=spec), 422, code)
    assert error["param"] == param
    assert row_counts(tenant[0]) == {"files": 0, "jobs": 0, "job_events": 0}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://localhost:5432/",
        "http://10.0.0.1/hook",
    ],
)
def test_webhook_url_to_an_internal_address_is_refused(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str], url: str
) -> None:
    spec = {"base_model": TINY_MODEL, "webhook_url": url}
    error = assert_error(submit_job(client, auth_headers, spec=spec), 422, "spec_invalid")
    assert error["param"] == "webhook_url" and "not a public address" in error["message"]
    assert row_counts(tenant[0]) == {"files": 0, "jobs": 0, "job_events": 0}


def test_webhook_url_to_a_public_or_allowed_receiver_is_accepted(
    client: TestClient, auth_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    public = {"base_model": TINY_MODEL, "webhook_url": "https://93.184.215.14/hook"}
    assert submit_job(client, auth_headers, spec=public).status_code == 201
    monkeypatch.setenv("SAFETUNE_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    get_settings.cache_clear()
    try:
        local = {"base_model": TINY_MODEL, "webhook_url": "http://127.0.0.1:8080/hook"}
        assert submit_job(client, auth_headers, spec=local).status_code == 201
    finally:
        monkeypatch.delenv("SAFETUNE_WEBHOOK_ALLOWED_HOSTS")
        get_settings.cache_clear()


def test_missing_parts_and_wrong_content_type(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]
) -> None:
    no_spec = client.post("/jobs", headers=auth_headers, files={"dataset": ("t.jsonl", chat_jsonl())})
    assert assert_error(no_spec, 422, "spec_invalid")["param"] == "spec"
    no_data = client.post(
        "/jobs", headers=auth_headers, files={"spec": (None, json.dumps({"base_model": TINY_MODEL}))}
    )
    assert assert_error(no_data, 422, "request_invalid")["param"] == "dataset"
    text = client.post("/jobs", headers={**auth_headers, "Content-Type": "text/plain"}, content=b"hi")
    assert_error(text, 415, "unsupported_media_type")
    missing_file = client.post(
        "/jobs", headers=auth_headers, json={"training_file": "file-nope", "base_model": TINY_MODEL}
    )
    assert assert_error(missing_file, 404, "file_not_found")["param"] == "training_file"
    not_json = client.post(
        "/jobs", headers={**auth_headers, "Content-Type": "application/json"}, content=b"{oops"
    )
    assert_error(not_json, 422, "spec_invalid")
    bad_purpose = client.post(
        "/files", headers=auth_headers, files={"file": ("a.jsonl", chat_jsonl())}, data={"purpose": "x"}
    )
    assert assert_error(bad_purpose, 422, "request_invalid")["param"] == "purpose"
    assert row_counts(tenant[0]) == {"files": 0, "jobs": 0, "job_events": 0}


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/ftjob-missing",
        "/jobs/ftjob-missing/events",
        "/jobs/ftjob-missing/safety-report",
        "/jobs/ftjob-missing/adapter",
    ],
)
def test_unknown_job_id(client: TestClient, auth_headers: dict[str, str], path: str) -> None:
    error = assert_error(client.get(path, headers=auth_headers), 404, "job_not_found")
    assert error["param"] == "job_id"


def test_unknown_route_and_method_use_the_envelope(client: TestClient, auth_headers: dict[str, str]) -> None:
    assert_error(client.get("/nope", headers=auth_headers), 404, "not_found")
    assert_error(client.delete("/jobs", headers=auth_headers), 405, "method_not_allowed")
    assert_error(
        client.get("/jobs", headers=auth_headers, params={"after": "ftjob-unknown"}), 422, "request_invalid"
    )


def test_lone_surrogate_escapes_in_any_upload_name_the_line(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]
) -> None:
    # json.loads reads "\ud800" (an unpaired UTF-16 surrogate escape) into a str that UTF-8 cannot
    # encode: storing it, or an error message naming it, used to fail as a 500.
    training = GOOD_LINE + b"\n" + GOOD_LINE.replace(b'"a"', b'"a\\udfff"') + b"\n"
    in_a_key = GOOD_LINE + b"\n" + GOOD_LINE[:-1] + b', "\\ud800": 1}\n'
    evaluation = b'{"prompt": "p", "harmful": true}\n{"prompt": "\\ud800", "harmful": true}\n'
    uploads = [
        ("/files", "training", training),
        ("/files", "training", in_a_key),
        ("/files", "evaluation", evaluation),
        ("/v1/files", "fine-tune", training),
    ]
    for path, purpose, dataset in uploads:
        response = client.post(
            path, headers=auth_headers, files={"file": ("d.jsonl", dataset)}, data={"purpose": purpose}
        )
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "dataset_encoding" and "line 2" in error["message"], error
    assert row_counts(tenant[0]) == {"files": 0, "jobs": 0, "job_events": 0}


def raw_multipart(field: str, filename: bytes, dataset: bytes, **fields: str) -> tuple[bytes, str]:
    """A multipart body written by hand: httpx would percent-escape control bytes in a filename."""
    boundary = "rawboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="'.encode()
        + filename
        + b'"\r\n\r\n'
        + dataset
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_nul_byte_in_a_multipart_filename(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]
) -> None:
    # Postgres text cannot hold NUL: the filename used to fail at INSERT as a 500.
    spec = json.dumps({"base_model": TINY_MODEL})
    uploads = [
        ("/files", "file", {"purpose": "training"}),
        ("/v1/files", "file", {"purpose": "fine-tune"}),
        ("/jobs", "dataset", {"spec": spec}),
    ]
    for path, field, fields in uploads:
        body, content_type = raw_multipart(field, b"train\x00.jsonl", chat_jsonl(), **fields)
        response = client.post(path, headers={**auth_headers, "Content-Type": content_type}, content=body)
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("request_invalid", field), error
        assert "filename" in error["message"]
    assert row_counts(tenant[0]) == {"files": 0, "jobs": 0, "job_events": 0}


def test_qlora_is_refused_when_the_workers_cannot_quantize(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # bitsandbytes is not installed here, so by default the deployment cannot train a 4-bit base.
    spec = {"base_model": TINY_MODEL, "hyperparameters": {"quantization": "4bit"}}
    error = assert_error(submit_job(client, auth_headers, spec=spec), 422, "spec_invalid")
    assert error["param"] == "hyperparameters.quantization" and "bitsandbytes" in error["message"]
    assert row_counts(tenant[0]) == {"files": 0, "jobs": 0, "job_events": 0}
    # An operator whose GPU workers have it says so; the worker then checks again before loading.
    monkeypatch.setenv("SAFETUNE_QLORA_AVAILABLE", "true")
    get_settings.cache_clear()
    try:
        assert submit_job(client, auth_headers, spec=spec).status_code == 201
    finally:
        monkeypatch.delenv("SAFETUNE_QLORA_AVAILABLE")
        get_settings.cache_clear()


def test_gradient_checkpointing_takes_only_its_three_settings(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    ok = {"base_model": TINY_MODEL, "hyperparameters": {"gradient_checkpointing": "on"}}
    assert submit_job(client, auth_headers, spec=ok).status_code == 201
    bad = {"base_model": TINY_MODEL, "hyperparameters": {"gradient_checkpointing": "yes"}}
    error = assert_error(submit_job(client, auth_headers, spec=bad), 422, "spec_invalid")
    assert error["param"] == "hyperparameters.gradient_checkpointing"
