"""The base-model evaluations a job needs, each with its cache key and scope.

The supervisor and the training child compute these the same way, so the supervisor can hand the
child exactly the cached entries it will look up and nothing else. A key covers the model's content
(worker.model_digest, not its name), the prompt-set hashes, the judge versions and the generation
settings (sap_core.safety_eval.cache_key). The shipped prompt sets are the same for everyone, so
their entry is shared; a user's own prompt set is scoped to its tenant, so no tenant ever receives
another tenant's prompts or answers, even for an identical file.

No torch here: the supervisor imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safetune.base_models import get_base_model
from safetune.config import get_settings
from sap_core.generation_engines import TRANSFORMERS
from sap_core.llm_judge import LlmJudgeConfig
from sap_core.prompt_sets import PromptSet, default_prompt_sets, load_prompt_set
from sap_core.safety_eval import EVAL_BATCH_SIZE, EvalConfig, cache_key
from worker.model_digest import model_digest

Scope = Literal["shared", "tenant"]
USER_SET_NAME = "user"


@dataclass(frozen=True)
class BaseEvalNeed:
    scope: Scope
    prompt_sets: list[PromptSet]
    # None while the model folder is not built yet: nothing can be cached for it then.
    key: str | None


def llm_judge_config() -> LlmJudgeConfig | None:
    """The operator's LLM judge (SAFETUNE_JUDGE_*), or None: the bundled judges then decide."""
    settings = get_settings()
    if not settings.judge_url:
        return None
    return LlmJudgeConfig(
        url=settings.judge_url,
        model=settings.judge_model,
        format=settings.judge_format,
        api_key=settings.judge_api_key,
    )


def eval_config_from_options(options: dict[str, Any], engine: str = TRANSFORMERS) -> EvalConfig:
    """Supervisor and child build the same config, so both compute the same cache key."""
    llm = llm_judge_config()
    judges = ("refusal_keyword", "harm_classifier", *(("llm_judge",) if llm else ()))
    return EvalConfig(
        max_new_tokens=int(options.get("max_new_tokens", 64)),
        batch_size=int(options.get("batch_size", EVAL_BATCH_SIZE)),
        max_prompts=options.get("max_prompts"),
        judges=judges,
        primary_judge="llm_judge" if llm else "harm_classifier",
        llm_judge=llm,
        engine=engine,
    )


def model_id(base_model: str, model_cache: Path) -> str | None:
    """``name@sha256:<content digest>`` of the registered model's folder, or None if not built."""
    info = get_base_model(base_model)
    digest = model_digest(info.local_dir(model_cache))
    return f"{base_model}@sha256:{digest}{template_suffix(base_model)}" if digest else None


def template_suffix(base_model: str) -> str:
    """A chat template from outside the folder changes every answer, so it joins the model's identity."""
    identity = get_base_model(base_model).template_identity()
    return "" if identity == "tokenizer" else f"+template:{identity}"


def base_eval_needs(
    base_model: str,
    model_cache: Path,
    options: dict[str, Any],
    eval_prompts_path: str | None,
    *,
    engine: str = TRANSFORMERS,
) -> list[BaseEvalNeed]:
    """The shipped sets (shared), then the user's prompt set if the job has one (tenant-scoped).

    `engine` is the one that generates the answers: its name is part of every key.
    """
    cfg = eval_config_from_options(options, engine)
    identity = model_id(base_model, model_cache)
    groups: list[tuple[Scope, list[PromptSet]]] = [("shared", default_prompt_sets())]
    if eval_prompts_path:
        groups.append(("tenant", [load_prompt_set(Path(eval_prompts_path), USER_SET_NAME)]))
    return [
        BaseEvalNeed(scope, sets, cache_key(identity, sets, cfg) if identity else None)
        for scope, sets in groups
    ]
