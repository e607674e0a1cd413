"""Run a model over prompt sets, judge every answer, and keep the results in a cacheable form.

``evaluate_model`` produces a :class:`ModelEval`; ``sap_core.report.build_report`` compares a base
and a fine-tuned ``ModelEval``. The base model's evaluation does not depend on the user's job, so
the worker caches it under :func:`cache_key` (model id, prompt-set hashes, judge versions and the
generation settings: anything that could change a verdict).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sap_core.generation_engines import ENGINES, TRANSFORMERS, GenerationSettings
from sap_core.judges import Judge, Verdict, build_judges, is_settled_refusal, judge_version
from sap_core.llm_judge import LlmJudgeConfig
from sap_core.prompt_sets import PromptSet

KNOWN_JUDGES = ("refusal_keyword", "harm_classifier", "llm_judge")
# On 2 CPU cores SmolLM2 answers 128 prompts in 28 s in batches of 64 and in 51 s in batches of 8; a
# batch that does not fit an accelerator is halved by sap_core.generate, so a large default is safe.
# safetune.schemas.EvaluationOptions repeats the number (it may not import sap_core).
EVAL_BATCH_SIZE = 64


@dataclass
class EvalConfig:
    """Settings of one safety evaluation."""

    max_new_tokens: int = field(default=64, metadata={"help": "tokens generated per prompt (greedy)"})
    batch_size: int = field(default=EVAL_BATCH_SIZE, metadata={"help": "prompts per generation batch"})
    max_prompts: int | None = field(
        default=None, metadata={"help": "cap per prompt set (category-balanced subset); None = all"}
    )
    judges: tuple[str, ...] = field(
        default=("refusal_keyword", "harm_classifier"), metadata={"help": "judge names, see judges.py"}
    )
    primary_judge: str = field(
        default="harm_classifier", metadata={"help": "judge whose harmful score drives the verdict"}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "system message for every prompt"})
    stop_settled_refusals: bool = field(
        default=True,
        metadata={"help": "end an answer once it is a settled refusal (verdicts unchanged, much faster)"},
    )
    llm_judge: LlmJudgeConfig | None = field(
        default=None, metadata={"help": "the endpoint behind judge 'llm_judge' (see llm_judge.py)"}
    )
    engine: str = field(
        default=TRANSFORMERS,
        metadata={"help": "what generated the answers: transformers | vllm (sap_core.generation_engines)"},
    )

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"EvalConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"EvalConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ValueError(f"EvalConfig.max_prompts must be >= 1 or None, got {self.max_prompts}")
        self.judges = tuple(self.judges)
        if not self.judges:
            raise ValueError("EvalConfig.judges must name at least one judge")
        unknown = [j for j in self.judges if j not in KNOWN_JUDGES]
        if unknown:
            raise ValueError(f"EvalConfig.judges has unknown judge(s) {unknown}; known: {list(KNOWN_JUDGES)}")
        if "llm_judge" in self.judges and self.llm_judge is None:
            raise ValueError("EvalConfig.judges names 'llm_judge' but llm_judge (its endpoint) is None")
        if self.engine not in ENGINES:
            raise ValueError(f"EvalConfig.engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.primary_judge not in self.judges:
            raise ValueError(
                f"EvalConfig.primary_judge {self.primary_judge!r} is not in judges {self.judges}"
            )


@dataclass
class PromptResult:
    """One prompt, the model's answer and each judge's verdict."""

    set_name: str
    prompt: str
    category: str
    harmful: bool
    response: str
    verdicts: dict[str, Verdict]


@dataclass
class ModelEval:
    """Evaluation of one model over prompt sets (JSON round-trip via to_dict/from_dict)."""

    model_name: str
    prompt_sets: list[dict[str, Any]]
    judges: list[dict[str, str]]
    generation: dict[str, Any]
    results: list[PromptResult]

    def rows(self, set_name: str | None = None, harmful: bool | None = None) -> list[PromptResult]:
        """Results filtered by prompt set and/or prompt label."""
        return [
            r
            for r in self.results
            if (set_name is None or r.set_name == set_name) and (harmful is None or r.harmful == harmful)
        ]

    def counts(self, judge: str, harmful: bool) -> dict[str, int]:
        """Totals over prompts with label ``harmful``: ``n``, ``harmful`` and ``refused`` verdict counts."""
        rows = self.rows(harmful=harmful)
        return {
            "n": len(rows),
            "harmful": sum(r.verdicts[judge].harmful for r in rows),
            "refused": sum(r.verdicts[judge].refused for r in rows),
        }

    def per_category(self, judge: str) -> dict[str, dict[str, int]]:
        """Counts per category of the harmful prompts (``n``, ``harmful``, ``refused``)."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rows(harmful=True):
            c = out.setdefault(r.category, {"n": 0, "harmful": 0, "refused": 0})
            c["n"] += 1
            c["harmful"] += int(r.verdicts[judge].harmful)
            c["refused"] += int(r.verdicts[judge].refused)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "model_name": self.model_name,
            "prompt_sets": self.prompt_sets,
            "judges": self.judges,
            "generation": self.generation,
            "results": [
                {**asdict(r), "verdicts": {k: asdict(v) for k, v in r.verdicts.items()}} for r in self.results
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelEval:
        """Inverse of :meth:`to_dict`."""
        results = [
            PromptResult(
                set_name=r["set_name"],
                prompt=r["prompt"],
                category=r["category"],
                harmful=bool(r["harmful"]),
                response=r["response"],
                verdicts={k: Verdict(**v) for k, v in r["verdicts"].items()},
            )
            for r in d["results"]
        ]
        return cls(d["model_name"], list(d["prompt_sets"]), list(d["judges"]), dict(d["generation"]), results)


def _generation_settings(cfg: EvalConfig) -> dict[str, Any]:
    return {
        "max_new_tokens": cfg.max_new_tokens,
        "system_prompt": cfg.system_prompt,
        "decoding": "greedy",
        "stop_settled_refusals": cfg.stop_settled_refusals,
        # Engines differ in kernels and numerics, so their greedy answers can differ: part of the key.
        "engine": cfg.engine,
    }


def generation_settings(cfg: EvalConfig) -> GenerationSettings:
    """What an engine needs to answer the prompts as `cfg` asks."""
    return GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        system=cfg.system_prompt,
        stop_when=is_settled_refusal if cfg.stop_settled_refusals else None,
    )


def selected_sets(prompt_sets: list[PromptSet], cfg: EvalConfig) -> list[PromptSet]:
    """The prompt sets as evaluated: each capped to ``cfg.max_prompts`` (category-balanced)."""
    return [ps.subset(cfg.max_prompts) for ps in prompt_sets]


def cache_key(model_id: str, prompt_sets: list[PromptSet], cfg: EvalConfig) -> str:
    """Key under which a base model's :class:`ModelEval` can be cached.

    Args:
        model_id: identifies the weights (registry name plus revision/sha of the folder).
        prompt_sets: the sets that will be evaluated (before ``max_prompts`` subsetting).
        cfg: the evaluation settings.

    Returns:
        A sha256 hex digest over the model id, the evaluated prompt hashes, the judge names and
        versions and the generation settings. Batch size is left out: it does not change greedy
        outputs beyond numerical noise.
    """
    payload = {
        "model": model_id,
        "sets": [[ps.name, ps.content_hash] for ps in selected_sets(prompt_sets, cfg)],
        "judges": [[name, judge_version(name, cfg.llm_judge)] for name in cfg.judges],
        "generation": _generation_settings(cfg),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def evaluate_model(
    model: Any,
    tokenizer: Any,
    prompt_sets: list[PromptSet],
    cfg: EvalConfig,
    *,
    judges: list[Judge] | None = None,
    model_name: str = "model",
    progress: Callable[[str, int, int], None] | None = None,
) -> ModelEval:
    """Generate answers for every prompt and judge them.

    Args:
        model: causal LM or PeftModel.
        tokenizer: its tokenizer (chat template required).
        prompt_sets: sets to evaluate; each is capped to ``cfg.max_prompts``.
        cfg: evaluation settings.
        judges: pre-built judges (tests inject fakes); default builds ``cfg.judges``.
        model_name: label stored in the result and the report.
        progress: optional callback(prompt set name, prompts done, prompts in the set).

    Returns:
        The :class:`ModelEval`.
    """
    # Imported here, not at the top: the worker's supervisor computes cache_key without loading torch.
    from sap_core.generate import generate

    if not prompt_sets:
        raise ValueError("evaluate_model needs at least one prompt set")
    if cfg.engine != TRANSFORMERS:
        raise ValueError(
            f"EvalConfig.engine={cfg.engine!r}: evaluate_model generates with transformers; judge another "
            "engine's answers with judge_answers"
        )
    gen = generation_settings(cfg)
    chosen = selected_sets(prompt_sets, cfg)
    responses = [
        generate(
            model,
            tokenizer,
            [p.prompt for p in ps.prompts],
            gen.max_new_tokens,
            gen.batch_size,
            system=gen.system,
            stop_when=gen.stop_when,
            progress=None if progress is None else functools.partial(progress, ps.name),
        )
        for ps in chosen
    ]
    return judge_answers(chosen, responses, cfg, judges=judges, model_name=model_name)


def judge_answers(
    chosen: list[PromptSet],
    responses: list[list[str]],
    cfg: EvalConfig,
    *,
    judges: list[Judge] | None = None,
    model_name: str = "model",
) -> ModelEval:
    """Judge answers an engine already produced.

    Args:
        chosen: the evaluated sets, as returned by :func:`selected_sets`.
        responses: per set, one answer per prompt in the set's order.
        cfg: evaluation settings (its ``engine`` is recorded as the answers' producer).
        judges: pre-built judges; default builds ``cfg.judges``.
        model_name: label stored in the result and the report.

    Returns:
        The :class:`ModelEval`.
    """
    if len(responses) != len(chosen):
        raise ValueError(f"got answers for {len(responses)} prompt sets, expected {len(chosen)}")
    judges = judges if judges is not None else build_judges(cfg.judges, cfg.llm_judge)
    names = [j.name for j in judges]
    if cfg.primary_judge not in names:
        raise ValueError(f"primary judge {cfg.primary_judge!r} not among judges {names}")
    results: list[PromptResult] = []
    sets_meta = []
    for ps, answers in zip(chosen, responses, strict=True):
        texts = [p.prompt for p in ps.prompts]
        per_judge = {j.name: j.judge(texts, answers) for j in judges}
        for i, (p, resp) in enumerate(zip(ps.prompts, answers, strict=True)):
            verdicts = {name: per_judge[name][i] for name in names}
            results.append(PromptResult(ps.name, p.prompt, p.category, p.harmful, resp, verdicts))
        sets_meta.append(
            {
                "name": ps.name,
                "version": ps.version,
                "hash": ps.content_hash,
                "n": len(ps.prompts),
                "n_harmful": sum(p.harmful for p in ps.prompts),
            }
        )
    return ModelEval(
        model_name=model_name,
        prompt_sets=sets_meta,
        judges=[{"name": j.name, "version": j.version} for j in judges],
        generation=_generation_settings(cfg),
        results=results,
    )
