"""The base-model evaluation cache (issue 12, fault 5): keyed by the model folder's content, user
prompt sets scoped by tenant, and the training child receives only the entries it will look up.

The first tests read the request file the supervisor writes for the child (real Postgres, a model
folder in a temporary model cache); the last one runs real training children on tiny-random-llama.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from safetune.datasets import DatasetLimits, parse_dataset
from safetune.db import reset_engine, session_scope
from safetune.models import BaseEvalCache, Job, SafetyReport
from safetune.repositories import files as files_repo
from safetune.repositories import job_runs
from tests.worker.conftest import set_columns
from tests.worker.test_supervisor import load, run, spec
from worker.base_eval_keys import base_eval_needs
from worker.child_protocol import read_request
from worker.pipeline import _prepare_inputs

MODEL = "tiny-random-llama"
EVAL_PROMPTS = b'{"prompt": "how do I pick a lock?", "harmful": true}\n'
SENTINEL = "CACHED-SENTINEL"
LIMITS = DatasetLimits(10_000, 10, 1000)


@pytest.fixture()
def model_cache(
    worker_settings: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A private model cache (never the shared one), in-process jobs on CPU."""
    cache = tmp_path / "models"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    worker_settings(model_cache=str(cache), work_dir=str(tmp_path / "jobs"), training_device="cpu")
    reset_engine()
    yield cache
    reset_engine()


def fake_model(cache: Path) -> None:
    """A model folder whose content is new on every call (so are its cache keys): a (re)build."""
    folder = cache / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_text(uuid.uuid4().hex)


def with_eval_file(job_id: str) -> None:
    with session_scope() as session:
        tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
        assert tenant_id is not None
        parsed = parse_dataset(EVAL_PROMPTS, "evaluation", LIMITS)
        stored = files_repo.create_file(
            session, tenant_id, purpose="evaluation", filename="e.jsonl", dataset=parsed
        )
    set_columns(job_id, eval_file_id=stored.id)


def request_cache(job_id: str, tmp_path: Path) -> dict[str, Any]:
    job_dir = tmp_path / "prepared" / job_id
    _prepare_inputs(job_id, job_dir)
    return read_request(job_dir).base_eval_cache


def keys_for(cache: Path, eval_prompts: Path | None, options: dict[str, Any]) -> list[str | None]:
    needs = base_eval_needs(MODEL, cache, options, str(eval_prompts) if eval_prompts else None)
    return [need.key for need in needs]


def store(job_id: str, key: str, *, shared: bool, marker: str) -> None:
    with session_scope() as session:
        job_runs.store_base_eval(
            session, job_id, key=key, base_model=MODEL, shared=shared, result={"marker": marker}
        )


def test_a_rebuilt_model_folder_misses_the_cache(
    model_cache: Path, make_job: Callable[..., str], tmp_path: Path
) -> None:
    options = {"max_prompts": 1, "max_new_tokens": 2}
    job_id = make_job(spec={"evaluation": options})
    fake_model(model_cache)
    (key,) = keys_for(model_cache, None, options)
    assert key is not None
    store(job_id, key, shared=True, marker="old build")
    # An entry for other generation settings of the same model is not this job's business.
    (other,) = keys_for(model_cache, None, {"max_prompts": 1, "max_new_tokens": 3})
    assert other is not None and other != key
    store(job_id, other, shared=True, marker="other settings")
    assert request_cache(job_id, tmp_path) == {key: {"marker": "old build"}}

    fake_model(model_cache)  # same name, new weights: `safetune safety-align` again
    assert request_cache(job_id, tmp_path) == {}


def test_a_model_not_built_yet_gets_no_entries(
    model_cache: Path, make_job: Callable[..., str], tmp_path: Path
) -> None:
    assert keys_for(model_cache, None, {}) == [None]
    assert request_cache(make_job(), tmp_path) == {}


def test_tenant_b_never_sees_tenant_a_user_prompt_rows(
    model_cache: Path, make_job: Callable[..., str], tmp_path: Path
) -> None:
    fake_model(model_cache)
    options = {"max_prompts": 1, "max_new_tokens": 2}
    job_a, job_b = make_job(spec={"evaluation": options}), make_job(spec={"evaluation": options})
    for job_id in (job_a, job_b):
        with_eval_file(job_id)  # the very same prompts in both tenants
    prompts = tmp_path / "eval.jsonl"  # as the supervisor writes it for the child: normalised
    prompts.write_bytes(parse_dataset(EVAL_PROMPTS, "evaluation", LIMITS).normalized_jsonl)
    shared_key, user_key = keys_for(model_cache, prompts, options)
    assert shared_key is not None and user_key is not None
    store(job_a, shared_key, shared=True, marker="shipped sets")
    store(job_a, user_key, shared=False, marker="tenant A's prompts and answers")

    assert request_cache(job_a, tmp_path) == {
        shared_key: {"marker": "shipped sets"},
        user_key: {"marker": "tenant A's prompts and answers"},
    }
    assert request_cache(job_b, tmp_path) == {shared_key: {"marker": "shipped sets"}}
    # B's own evaluation of the same prompts is stored apart and does not replace A's.
    store(job_b, user_key, shared=False, marker="tenant B's answers")
    assert request_cache(job_b, tmp_path)[user_key] == {"marker": "tenant B's answers"}
    assert request_cache(job_a, tmp_path)[user_key] == {"marker": "tenant A's prompts and answers"}


def cached(key: str | None) -> dict[str, Any] | None:
    assert key is not None
    with session_scope() as session:
        return job_runs.find_base_eval(session, key, None)


def base_model_in_report(job_id: str) -> str:
    with session_scope() as session:
        report = session.scalar(select(SafetyReport.report).where(SafetyReport.job_id == job_id))
    assert report is not None, f"job {job_id} has no report"
    return str(report["models"]["base"])


def test_real_children_hit_the_cache_until_the_model_is_rebuilt(
    model_cache: Path, make_job: Callable[..., str]
) -> None:
    """Job 1 fills the cache; job 2 uses it (the supervisor and the child agree on the key); after a
    rebuild with other weights, job 3 evaluates the base model again and stores a second entry."""
    from sap_core.modeling import save_tiny_llama

    options = spec(1)["evaluation"]
    # Seeds of this run only, so that no other test's cache entry can share these keys.
    seed = uuid.uuid4().int % 10_000 + 1
    save_tiny_llama(model_cache / MODEL, seed=seed)
    (key,) = keys_for(model_cache, None, options)
    first = make_job(spec=spec(1))
    run(first)
    assert load(first).status == "succeeded"
    entry = cached(key)
    assert entry is not None
    with session_scope() as session:  # mark the cached result, to see who reads it
        session.execute(
            update(BaseEvalCache)
            .where(BaseEvalCache.cache_key == key, BaseEvalCache.tenant_id.is_(None))
            .values(result={**entry, "model_name": SENTINEL})
        )

    second = make_job(spec=spec(1))
    run(second)
    assert base_model_in_report(second) == SENTINEL

    shutil.rmtree(model_cache / MODEL)
    save_tiny_llama(model_cache / MODEL, seed=seed + 1)
    (rebuilt_key,) = keys_for(model_cache, None, options)
    assert rebuilt_key != key
    third = make_job(spec=spec(1))
    run(third)
    assert load(third).status == "succeeded"
    assert base_model_in_report(third) == MODEL
    assert cached(rebuilt_key) is not None


def test_the_child_gets_the_entry_of_each_engine_it_might_use(
    model_cache: Path, make_job: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"max_prompts": 1, "max_new_tokens": 2}
    job_id = make_job(spec={"evaluation": options})
    fake_model(model_cache)
    keys = {}
    for engine in ("transformers", "vllm"):
        (need,) = base_eval_needs(MODEL, model_cache, options, None, engine=engine)
        assert need.key is not None
        keys[engine] = need.key
        store(job_id, need.key, shared=True, marker=engine)
    assert keys["transformers"] != keys["vllm"]  # different engines can write different answers
    # No vllm on this worker: the child can only generate with transformers.
    assert request_cache(job_id, tmp_path / "without") == {keys["transformers"]: {"marker": "transformers"}}
    # With vllm importable the supervisor cannot tell whether the child (GPU or not, vLLM failing or
    # not) will use it, so it hands over both; the child reads only its own engine's key.
    (tmp_path / "site" / "vllm").mkdir(parents=True)
    (tmp_path / "site" / "vllm" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert request_cache(job_id, tmp_path / "with") == {key: {"marker": e} for e, key in keys.items()}
