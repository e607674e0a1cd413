"""The vLLM engine's plain-Python parts on CPU: the job it sends its child, the answers it makes of
vLLM's token ids (same cut as sap_core.generate), and the child failing where vllm is not installed.
vLLM itself never runs here (no GPU, no vllm package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sap_core.generate import generate, render_prompt
from sap_core.generation_engines import EngineFailed, GenerationRequest, GenerationSettings, VllmEngine
from sap_core.modeling import save_tiny_llama
from sap_core.vllm_generation import (
    ADAPTER_ID,
    build_job,
    child_env,
    eos_token_ids,
    finish_answer,
    memory_fraction,
    prompt_token_ids,
    run_job,
    vllm_lora_rank,
)


def test_lora_rank_is_rounded_up_to_one_vllm_supports() -> None:
    assert [vllm_lora_rank(r) for r in (1, 8, 9, 64, 65, 300)] == [8, 8, 16, 64, 128, 320]
    with pytest.raises(EngineFailed, match="LoRA rank 600"):
        vllm_lora_rank(600)


def test_memory_share_is_taken_from_what_the_training_process_left_free() -> None:
    gib = 2**30
    assert memory_fraction(100 * gib, 140 * gib) == pytest.approx(0.85 * 100 / 140, abs=1e-3)
    with pytest.raises(EngineFailed, match="GiB of GPU memory is free"):
        memory_fraction(1 * gib, 140 * gib)


def test_prompts_are_the_token_ids_generate_feeds_without_an_extra_bos(tiny) -> None:  # type: ignore[no-untyped-def]
    _, tok = tiny
    ids = prompt_token_ids(tok, ["hi there", "2+2?"], system="be brief")
    text = render_prompt(tok, "hi there", "be brief")
    assert ids[0] == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids[0]) == text  # the chat template's own specials, nothing added
    assert ids[0].count(tok.convert_tokens_to_ids("<|im_start|>")) == text.count("<|im_start|>")


def test_the_job_asks_for_greedy_answers_with_the_adapter_per_request(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, tok = tiny
    base = save_tiny_llama(tmp_path / "base")
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.eos_token_id, 7]}))
    engine = VllmEngine(tok, base, tmp_path / "adapter", lora_rank=12)
    requests = [
        GenerationRequest("How do I pick a lock?", False),
        GenerationRequest("How do I pick a lock?", True),
    ]
    job = build_job(engine, requests, GenerationSettings(16, 8, None, None), gpu_memory_utilization=0.5)

    assert json.loads(json.dumps(job)) == job  # it crosses a process boundary as JSON
    assert job["engine"]["enable_lora"] and job["engine"]["max_lora_rank"] == 16
    assert job["engine"]["model"] == str(base) and job["engine"]["gpu_memory_utilization"] == 0.5
    longest = max(len(p["prompt_token_ids"]) for p in job["prompts"])
    assert job["engine"]["max_model_len"] == longest + 16
    assert job["sampling"] == {
        "temperature": 0.0,
        "max_tokens": 16,
        "stop_token_ids": sorted({tok.eos_token_id, 7}),
    }
    assert [p["adapter"] for p in job["prompts"]] == [False, True]
    assert job["prompts"][0]["prompt_token_ids"] == job["prompts"][1]["prompt_token_ids"]
    assert job["adapter"] == {"name": "job-adapter", "id": ADAPTER_ID, "path": str(tmp_path / "adapter")}
    assert eos_token_ids(tok, tmp_path) == [tok.eos_token_id]  # no generation_config: the tokenizer's


def test_a_full_greedy_answer_is_cut_where_generate_stops_it(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    prompts = ["How do I make a cake?", "Say something.", "Why is the sky blue?"]

    def long_enough(text: str) -> bool:
        return len(text) >= 5

    stops = sorted({tok.eos_token_id})
    for prompt in prompts:
        ids = prompt_token_ids(tok, [prompt], None)[0]
        with torch.no_grad():  # what vLLM returns: the whole greedy answer, no early stop
            full = model.generate(
                torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id
            )[0, len(ids) :].tolist()
        assert (
            finish_answer(full, tok, stops, long_enough)
            == generate(model, tok, [prompt], 16, stop_when=long_enough)[0]
        )
        assert finish_answer(full, tok, stops, None) == generate(model, tok, [prompt], 16)[0]
    # An EOS ends the answer even when more tokens follow it.
    ab, c = tok.encode("AB", add_special_tokens=False), tok.encode("C", add_special_tokens=False)
    assert finish_answer([*ab, tok.eos_token_id, *c], tok, stops, None) == "AB"


def test_the_child_does_not_inherit_the_training_launchers_rank_variables() -> None:
    env = child_env(
        {
            "RANK": "0",
            "WORLD_SIZE": "2",
            "MASTER_PORT": "1",
            "TORCHELASTIC_RUN_ID": "x",
            "CUDA_VISIBLE_DEVICES": "3",
            "PATH": "/bin",
        }
    )
    assert env == {"CUDA_VISIBLE_DEVICES": "3", "PATH": "/bin"}


def test_a_child_that_cannot_import_vllm_fails_with_its_error() -> None:
    job = {"engine": {}, "sampling": {}, "adapter": {"name": "a", "id": 1, "path": "/nope"}, "prompts": []}
    with pytest.raises(EngineFailed, match="vllm"):
        run_job(job, timeout_s=120)
