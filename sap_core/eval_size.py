"""How many prompts per set a safety evaluation answers when the job does not say.

On a GPU the full held-out sets (200 harmful + 100 benign) take well under a minute for the models we
serve, so a job evaluates all of them. On CPU generation is the slow part of a job, so the default is
a category-balanced subset of ``CPU_MAX_PROMPTS`` per set: with early-stopped refusals, SmolLM2-135M
answers it in about two minutes per model on two cores, and the report's 95% intervals show what the
smaller sample costs (0 harmful answers of 100 bound the rate below 0.037; of 24, below 0.14).

Plain Python, no torch: the worker's supervisor resolves the default to compute base-evaluation
cache keys, and hands the resolved value to the training child, so the two always agree.
"""

from __future__ import annotations

CPU_MAX_PROMPTS = 100


def default_max_prompts(device: str) -> int | None:
    """The per-set cap for a job that sets none: None (every prompt) on CUDA, the CPU cap otherwise.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (where the evaluation runs).
    """
    if device == "cuda" or device.startswith("cuda:"):
        return None
    if device != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return CPU_MAX_PROMPTS
