"""The vLLM evaluation engine: one vLLM engine in a child process, base and base+adapter per request.

The parent (the training process) renders every prompt with the job's own tokenizer and chat
template and sends token ids, so both engines see the same prompts; vLLM returns token ids, and the
parent decodes them and applies the same early stop as sap_core.generate (a settled refusal ends
an answer at the same token), so the two engines' answers differ only by numerics. The child
process owns vLLM's GPU memory, which is freed when it exits.

Everything but `_serve` is plain Python, tested on CPU without vllm. NOT yet run on real hardware:
vllm cannot be installed on the CPU-only machine this was built on.

Child usage (spawned by `answer`): python -m sap_core.vllm_generation JOB.json OUT.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sap_core.generate import STOP_CHECK_EVERY, render_prompt
from sap_core.generation_engines import EngineFailed, GenerationRequest, GenerationSettings, VllmEngine

# The LoRA ranks vLLM's kernels are built for; max_lora_rank must be one of them.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
ADAPTER_NAME, ADAPTER_ID = "job-adapter", 1
# Share of the GPU memory still free when the engine starts that vLLM may take (weights + KV cache).
FREE_MEMORY_SHARE = 0.85
# Set by torchrun for the training ranks; a vLLM child that saw them would try to join that group.
_LAUNCHER_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_WORLD_SIZE",
)


def vllm_lora_rank(r: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds a rank-`r` adapter."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise EngineFailed(f"LoRA rank {r} exceeds vLLM's largest supported rank {VLLM_LORA_RANKS[-1]}")


def memory_fraction(free_bytes: int, total_bytes: int) -> float:
    """`gpu_memory_utilization` for an engine that may take FREE_MEMORY_SHARE of what is free now.

    vLLM's setting is a share of the whole GPU and it refuses to start when that much is not free;
    the training process still holds its model, so the share is computed from the free memory.
    """
    if total_bytes <= 0:
        raise EngineFailed("no GPU memory reported")
    share = round(FREE_MEMORY_SHARE * free_bytes / total_bytes, 3)
    if share < 0.05:
        raise EngineFailed(f"only {free_bytes / 2**30:.1f} GiB of GPU memory is free for vLLM")
    return share


def prompt_token_ids(tokenizer: Any, prompts: Sequence[str], system: str | None) -> list[list[int]]:
    """Token ids of each chat-templated prompt, exactly as sap_core.generate feeds the model.

    The template already holds the special tokens; letting vLLM tokenize the text would add a BOS.
    """
    return [
        list(tokenizer(render_prompt(tokenizer, p, system), add_special_tokens=False)["input_ids"])
        for p in prompts
    ]


def eos_token_ids(tokenizer: Any, base_dir: Path) -> list[int]:
    """The tokenizer's EOS and the base folder's generation_config EOS (sap_core.generate's set)."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    config = Path(base_dir) / "generation_config.json"
    configured = json.loads(config.read_text()).get("eos_token_id") if config.is_file() else None
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list):
        ids.update(int(x) for x in configured)
    return sorted(ids)


def build_job(
    engine: VllmEngine,
    requests: Sequence[GenerationRequest],
    settings: GenerationSettings,
    gpu_memory_utilization: float,
) -> dict[str, Any]:
    """The child's whole input: engine arguments, greedy sampling, the adapter and every prompt."""
    ids = prompt_token_ids(engine.tokenizer, [r.prompt for r in requests], settings.system)
    longest = max((len(x) for x in ids), default=1)
    return {
        "engine": {
            "model": str(engine.base_dir),
            "tokenizer": str(engine.base_dir),
            "enable_lora": True,
            "max_loras": 1,
            "max_lora_rank": vllm_lora_rank(engine.lora_rank),
            "max_model_len": longest + settings.max_new_tokens,
            "dtype": "bfloat16",
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": 0,
            "trust_remote_code": False,
        },
        "sampling": {
            "temperature": 0.0,  # greedy, as the transformers engine
            "max_tokens": settings.max_new_tokens,
            "stop_token_ids": eos_token_ids(engine.tokenizer, engine.base_dir),
        },
        "adapter": {"name": ADAPTER_NAME, "id": ADAPTER_ID, "path": str(engine.adapter_dir)},
        "prompts": [
            {"prompt_token_ids": x, "adapter": r.adapter} for x, r in zip(ids, requests, strict=True)
        ],
    }


def finish_answer(
    token_ids: Sequence[int],
    tokenizer: Any,
    stop_ids: Sequence[int],
    stop_when: Callable[[str], bool] | None,
) -> str:
    """Decode a full greedy answer, cut where sap_core.generate would have stopped it.

    generate() ends a row at its first EOS, or after token k (k a multiple of STOP_CHECK_EVERY, not
    the last one) when `stop_when` holds for the text so far. vLLM cannot run a Python test per
    token, so the same rule is applied to its finished answer.
    """
    kept: list[int] = []
    for tok in token_ids:
        if tok in stop_ids:
            break
        kept.append(int(tok))
    if stop_when is not None:
        for k in range(STOP_CHECK_EVERY, len(kept), STOP_CHECK_EVERY):
            if stop_when(tokenizer.decode(kept[:k], skip_special_tokens=True)):
                kept = kept[:k]
                break
    return str(tokenizer.decode(kept, skip_special_tokens=True)).strip()


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The vLLM child's environment: the worker's, minus the training launcher's rank variables."""
    return {k: v for k, v in environ.items() if k not in _LAUNCHER_ENV and not k.startswith("TORCHELASTIC_")}


def run_job(job: dict[str, Any], timeout_s: float) -> list[list[int]]:
    """Run the vLLM child on `job` and return one token-id list per prompt.

    Raises:
        EngineFailed: the child exited non-zero, timed out, or wrote no usable output.
    """
    with tempfile.TemporaryDirectory(prefix="safetune-vllm-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "sap_core.vllm_generation", str(job_path), str(out_path)]
        try:
            done = subprocess.run(
                cmd, env=child_env(os.environ), capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineFailed(f"vLLM generation exceeded {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            raise EngineFailed(f"vLLM child exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        try:
            token_ids = json.loads(out_path.read_text())["token_ids"]
        except (OSError, ValueError, KeyError) as exc:
            raise EngineFailed(f"vLLM child wrote no usable output: {exc}") from exc
    if len(token_ids) != len(job["prompts"]):
        raise EngineFailed(f"vLLM child answered {len(token_ids)} of {len(job['prompts'])} prompts")
    return [list(map(int, t)) for t in token_ids]


def answer(engine: VllmEngine, requests: list[GenerationRequest], settings: GenerationSettings) -> list[str]:
    """Every request's answer through one vLLM engine in a child process (VllmEngine.answer)."""
    if not requests:
        return []
    import torch

    try:
        torch.cuda.empty_cache()  # the training process's cached blocks would count as used to vLLM
        free, total = torch.cuda.mem_get_info()
    except RuntimeError as exc:  # no usable CUDA context: not a reason to fail the job
        raise EngineFailed(f"cannot read the free GPU memory: {exc}") from exc
    job = build_job(engine, requests, settings, memory_fraction(free, total))
    token_ids = run_job(job, engine.timeout_s)
    stops = job["sampling"]["stop_token_ids"]
    return [finish_answer(t, engine.tokenizer, stops, settings.stop_when) for t in token_ids]


def _serve(job: dict[str, Any]) -> list[list[int]]:
    """In the child: build the engine once and generate every prompt, each with its own LoRA request."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(**job["engine"])
    adapter = job["adapter"]
    lora = LoRARequest(adapter["name"], adapter["id"], adapter["path"])
    prompts = [{"prompt_token_ids": p["prompt_token_ids"]} for p in job["prompts"]]
    loras = [lora if p["adapter"] else None for p in job["prompts"]]
    outputs = llm.generate(prompts, SamplingParams(**job["sampling"]), lora_request=loras, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def main(argv: Sequence[str]) -> int:
    """Child entry point: read JOB.json, write OUT.json with {"token_ids": [...]}."""
    job_path, out_path = Path(argv[0]), Path(argv[1])
    token_ids = _serve(json.loads(job_path.read_text()))
    out_path.write_text(json.dumps({"token_ids": token_ids}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
