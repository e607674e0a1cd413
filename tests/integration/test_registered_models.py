"""Operator-registered models end to end: a models file with two random-weight folders of different
architectures (Llama with a Zephyr-style .jinja template, Qwen2 with its tokenizer's [INST]
template), a real uvicorn API and a real celery worker reading it, the official openai client, an
LLM judge served over HTTP, and the downloaded adapters checked with plain PEFT."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
import yaml
from openai import OpenAI
from peft import PeftModel
from transformers import AutoTokenizer

from sap_core.modeling import load_base_model
from tests.integration.conftest import REPO, wait_for
from tests.judge_server import JudgeServer, judge_server
from tests.live_api import live_api
from tests.model_folders import INST_TEMPLATE, ZEPHYR_TEMPLATE, save_random_model

pytestmark = pytest.mark.integration

SAMPLE = REPO / "sap_core" / "resources" / "datasets" / "sample_chat.jsonl"
TERMINAL = {"succeeded", "failed", "cancelled"}
SAFETY = {
    "guard": "none",
    "hyperparameters": {"max_steps": 2, "checkpoint_every": 0, "max_seq_len": 384},
    "evaluation": {"max_prompts": 4, "max_new_tokens": 8},
}
MODELS = {"llama-zephyr": ZEPHYR_TEMPLATE, "qwen2-inst": INST_TEMPLATE}


@pytest.fixture(scope="module")
def models_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("operator-models")
    save_random_model(root / "llama", "llama", tokenizer_template=None, seed=1)
    save_random_model(root / "qwen2", "qwen2", tokenizer_template=INST_TEMPLATE, seed=2)
    (root / "zephyr.jinja").write_text(ZEPHYR_TEMPLATE)
    entries = [
        {"name": "llama-zephyr", "path": "llama", "chat_template": "zephyr.jinja", "max_seq_len": 512},
        {"name": "qwen2-inst", "path": "qwen2", "max_seq_len": 512, "probe_layers": [1]},
    ]
    path = root / "models.yaml"
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


@pytest.fixture(scope="module")
def judge() -> Iterator[JudgeServer]:
    with judge_server() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    worker_env: dict[str, str], models_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {**worker_env, "SAFETUNE_MODELS_FILE": str(models_file), "SAFETUNE_RATE_LIMIT_PER_MINUTE": "100000"}
    with live_api(env, tmp_path_factory.mktemp("uvicorn") / "uvicorn.log") as url:
        yield url


def test_registered_models_train_through_the_worker_and_their_adapters_load_with_peft(
    server: str,
    models_file: Path,
    judge: JudgeServer,
    make_tenant: Callable[..., tuple[str, str]],
    start_worker: Callable[..., Any],
    tmp_path: Path,
) -> None:
    key = make_tenant()[1]
    sdk = OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0, timeout=30)
    listed = [m.id for m in sdk.models.list()]
    assert listed[:5] == ["tiny-random-llama", "smollm2-135m-instruct", "smollm2-135m-safe", *MODELS]
    rest = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    ours = {m["name"]: m for m in rest.get("/models").json()["data"]}
    assert ours["qwen2-inst"]["source"] == "file" and ours["qwen2-inst"]["num_layers"] == 2

    worker = start_worker(
        SAFETUNE_MODELS_FILE=str(models_file), SAFETUNE_JUDGE_URL=judge.url, SAFETUNE_JUDGE_MODEL="guard-test"
    )
    data = b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:8])
    uploaded = sdk.files.create(file=("train.jsonl", data), purpose="fine-tune")
    with pytest.raises(openai.UnprocessableEntityError) as unknown:
        sdk.fine_tuning.jobs.create(model="mistral-7b", training_file=uploaded.id)
    assert unknown.value.code == "base_model_unknown" and "llama-zephyr, qwen2-inst" in str(unknown.value)
    jobs = {
        name: sdk.fine_tuning.jobs.create(
            model=name, training_file=uploaded.id, extra_body={"safety": SAFETY}
        ).id
        for name in MODELS
    }
    for name, job_id in jobs.items():
        final = wait_for(
            lambda job_id=job_id: sdk.fine_tuning.jobs.retrieve(job_id).model_dump(),
            lambda j: j["status"] in TERMINAL,
            240,
            f"the {name} job",
        )
        assert final["status"] == "succeeded", (final["error"], worker.log())
        _check_report_and_adapter(rest, name, job_id, models_file.parent, tmp_path)
    # Every judged answer went to the endpoint, as the served guard model's name.
    assert judge.requests and all(r["model"] == "guard-test" for r in judge.requests)


def _check_report_and_adapter(rest: httpx.Client, name: str, job_id: str, root: Path, tmp_path: Path) -> None:
    report = rest.get(f"/jobs/{job_id}/safety-report").json()["report"]
    template = report["chat_template"]
    assert template["text"] == MODELS[name]
    assert template["sha256"] == hashlib.sha256(MODELS[name].encode()).hexdigest()
    assert report["primary_judge"] == "llm_judge" and report["llm_judge"]["model"] == "guard-test"
    assert {"name": "llm_judge", "version": "1+llama_guard:guard-test"} in report["judges"]
    lora = report["training"]["lora"]["target_modules"]
    assert set(lora) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

    download = rest.get(f"/jobs/{job_id}/adapter")
    assert download.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
    } <= set(archive.namelist())
    folder = tmp_path / job_id
    archive.extractall(folder)
    assert (folder / "chat_template.jinja").read_text() == MODELS[name]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == name  # never a hub id or the worker's path

    # Plain PEFT on the operator's folder, with the tokenizer shipped in the adapter.
    base_dir = root / ("llama" if name == "llama-zephyr" else "qwen2")
    base, _ = load_base_model(base_dir, "cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert tokenizer.chat_template == MODELS[name]
    tuned = PeftModel.from_pretrained(base, str(folder))
    fingerprint = report["adapter_fingerprint"]
    with torch.no_grad():
        ids = tokenizer(fingerprint["text"], return_tensors="pt")
        logits = tuned(**ids).logits[0, -1]
        with tuned.disable_adapter():
            base_logits = tuned(**ids).logits[0, -1]
    assert torch.allclose(logits[:16], torch.tensor(fingerprint["last_logits_head"]), atol=1e-4)
    assert not torch.allclose(base_logits[:16], logits[:16], atol=1e-6), "adapter had no effect"


def test_the_worker_refuses_to_start_on_an_entry_that_fails_the_heavy_checks(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    # Passes the API's cheap checks (files, architecture, positions) but its template has no
    # generation prompt, which only rendering finds: the worker must not take jobs with it.
    save_random_model(tmp_path / "m", "llama")
    (tmp_path / "no-gen.jinja").write_text(ZEPHYR_TEMPLATE.split("{% if add_generation_prompt %}")[0])
    entry = {"name": "no-gen", "path": "m", "chat_template": "no-gen.jinja", "max_seq_len": 256}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--concurrency=1",
        "-Q",
        "training",
    ]
    env = {**worker_env, "SAFETUNE_MODELS_FILE": str(tmp_path / "models.yaml")}
    refused = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert refused.returncode == 78, refused.stderr[-3000:]
    assert "refuses to start: models file: entry 'no-gen' field 'chat_template'" in refused.stderr
    assert "generation prompt" in refused.stderr and "ready." not in refused.stderr + refused.stdout
