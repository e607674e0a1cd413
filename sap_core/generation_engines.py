"""Which engine generates the safety evaluation's answers, and the two engines behind one interface.

`transformers` (sap_core.generate) runs in the training process on the model it just trained; it
works everywhere. `vllm` (sap_core.vllm_generation) runs a vLLM engine in a child process on a GPU
worker: one engine for the base and base+adapter, the adapter attached per request, and the child's
GPU memory is gone when it exits. `auto` picks vLLM when it can run and falls back otherwise.

No torch or vllm import at module level: the worker's supervisor asks `candidate_engines` without
loading either.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

TRANSFORMERS = "transformers"
VLLM = "vllm"
ENGINES = (TRANSFORMERS, VLLM)
PREFERENCES = ("auto", *ENGINES)


@dataclass(frozen=True)
class EngineChoice:
    """The engine that will generate, and why the preferred one was not used (None when it was)."""

    name: str
    fallback_reason: str | None = None


def vllm_unavailable_reason(device: str) -> str | None:
    """Why vLLM cannot generate on `device` in this process's environment, or None when it can."""
    if not device.startswith("cuda"):
        return f"vLLM needs a CUDA GPU; this evaluation runs on {device!r}"
    if importlib.util.find_spec(VLLM) is None:
        return "the vllm package is not installed on this worker"
    return None


def _checked(prefer: str) -> str:
    if prefer not in PREFERENCES:
        raise ValueError(f"eval_engine={prefer!r}: must be one of {list(PREFERENCES)}")
    return prefer


def select_engine(device: str, prefer: str = "auto") -> EngineChoice:
    """The engine for an evaluation on `device` ("cpu", "cuda", "cuda:N") given the operator's preference.

    `vllm` and `auto` both fall back to transformers when vLLM cannot run here; the reason is kept so
    the report can say why (a requested accelerator that silently went missing would hide a setup fault).

    Raises:
        ValueError: `prefer` is not one of PREFERENCES.
    """
    if _checked(prefer) == TRANSFORMERS:
        return EngineChoice(TRANSFORMERS)
    reason = vllm_unavailable_reason(device)
    if reason is None:
        return EngineChoice(VLLM)
    return EngineChoice(TRANSFORMERS, None if prefer == "auto" else reason)


def candidate_engines(prefer: str = "auto") -> tuple[str, ...]:
    """Every engine an evaluation under `prefer` may end up using (its cache entries are all relevant).

    The supervisor cannot know the training child's device, and a vLLM run may fall back at run
    time, so it hands over the base-eval entries of each engine the child might use.
    """
    if _checked(prefer) == TRANSFORMERS or importlib.util.find_spec(VLLM) is None:
        return (TRANSFORMERS,)
    return (TRANSFORMERS, VLLM)


@dataclass(frozen=True)
class GenerationRequest:
    """One answer to produce: the user prompt, and whether the trained adapter is attached."""

    prompt: str
    adapter: bool


@dataclass(frozen=True)
class GenerationSettings:
    """What both engines need to produce the same answers (greedy decoding)."""

    max_new_tokens: int
    batch_size: int
    system: str | None
    stop_when: Callable[[str], bool] | None


Progress = Callable[[int, int], None]


class GenerationEngine(Protocol):
    """Answers a list of requests, in order. `name` is what the report records."""

    name: str

    def answer(
        self,
        requests: Sequence[GenerationRequest],
        settings: GenerationSettings,
        *,
        progress: Progress | None = None,
    ) -> list[str]:
        """One answer per request, in the requests' order; `progress(answered, len(requests))` as
        answers finish (once at the end where the engine cannot count sooner)."""
        ...


class EngineFailed(RuntimeError):
    """The engine could not produce answers (the caller falls back to transformers)."""


class TransformersEngine:
    """sap_core.generate on the in-memory PeftModel; `adapter=False` runs with the adapter disabled."""

    name = TRANSFORMERS

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def answer(
        self,
        requests: Sequence[GenerationRequest],
        settings: GenerationSettings,
        *,
        progress: Progress | None = None,
    ) -> list[str]:
        from sap_core.generate import generate
        from sap_core.modeling import base_model_context

        out: list[str] = [""] * len(requests)
        answered = 0  # by the passes before this one
        for adapter in (False, True):
            idx = [i for i, r in enumerate(requests) if r.adapter is adapter]
            if not idx:
                continue
            pass_progress = None
            if progress is not None:
                pass_progress = functools.partial(_offset_progress, progress, answered, len(requests))
            with base_model_context(self.model) if not adapter else contextlib.nullcontext():
                texts = generate(
                    self.model,
                    self.tokenizer,
                    [requests[i].prompt for i in idx],
                    settings.max_new_tokens,
                    settings.batch_size,
                    system=settings.system,
                    stop_when=settings.stop_when,
                    progress=pass_progress,
                )
            for i, text in zip(idx, texts, strict=True):
                out[i] = text
            answered += len(idx)
        return out


def _offset_progress(progress: Progress, before: int, total: int, done: int, _pass_total: int) -> None:
    progress(before + done, total)


class VllmEngine:
    """A vLLM engine in a child process over the base folder, with the saved adapter per request."""

    name = VLLM

    def __init__(
        self, tokenizer: Any, base_dir: Path, adapter_dir: Path, lora_rank: int, *, timeout_s: float = 3600
    ) -> None:
        self.tokenizer = tokenizer
        self.base_dir = Path(base_dir)
        self.adapter_dir = Path(adapter_dir)
        self.lora_rank = lora_rank
        self.timeout_s = timeout_s

    def answer(
        self,
        requests: Sequence[GenerationRequest],
        settings: GenerationSettings,
        *,
        progress: Progress | None = None,
    ) -> list[str]:
        from sap_core import vllm_generation

        answers = vllm_generation.answer(self, list(requests), settings)
        if progress is not None:  # one batch in the vLLM child: no count until it returns
            progress(len(answers), len(requests))
        return answers
