"""Per-step cost of plain LoRA and of every guard, and (on CPU) our loop against a plain PEFT loop.

Usage:
    .venv/bin/python bench/train_step.py [--models tiny,smollm2,llama-1b] [--steps 4] [--rounds 3]
        [--threads 1] [--batch 4] [--seq 128]
        [--guards none,sap,ema,anchor,constrained,anchor+constrained,anchor:every=2]
        [--device cpu|cuda] [--peak-tflops N] [--out bench/results/train_step]

Variants: `peft` (CPU only: a hand-written torch loop, peft's get_peft_model + AdamW + the same grad
clipping and LR schedule, on the same model, batches and LoRA config) and `finetune` with each guard.
Every run builds the model afresh, trains 1 warm-up + `--steps` timed steps and keeps the median step
time. Variants run in rounds, the order reversed every other round (ABBA), and the per-guard ratio
against plain LoRA is taken within each round before the median over rounds, so a load that drifts
over minutes cancels instead of landing on one variant.

SAP refreshes its harmful direction every `refresh_every` steps (in the warm-up step here); the
reported SAP step adds the measured refresh time / refresh_every (amortised), so a short run does not
flatter it. MFU (CUDA) counts FLOPs/token = 2N (forward) + 2N (backward to the activations) + 2N_t
(backward to the trainable weights): 4N + 2N_t, N = weights of every linear layer (lm_head included),
N_t = trainable (LoRA) parameters; attention-score FLOPs and the guards' extra passes are not counted,
so a guard's MFU reads lower by its overhead. Peak = the device's dense bf16 TFLOPS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._guard_spec import parse_guard  # noqa: E402
from sap_core.anchor import AnchorExample
from sap_core.config import DEFAULT_GUARD, TrainConfig, guard_parts
from sap_core.contrastive import default_contrastive_triples
from sap_core.data import collate, encode_chat, length_grouped_batches
from sap_core.guard import SapGuard
from sap_core.modeling import attach_lora, build_tiny_llama, build_tiny_tokenizer, load_base_model
from sap_core.train import StepState, TrainingCallback, finetune, lr_factor

GUARDS = ("none", "sap", "ema", "anchor", "constrained", "anchor+constrained")
PLAIN_PEFT = "peft"
SMOLLM2 = Path.home() / ".cache/safetune/models/smollm2-135m-safe"
# Dense bf16 tensor-core peaks (vendor datasheets, no sparsity), matched on the device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
WORDS = "the quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire".split()


def flops_per_token(model: torch.nn.Module) -> tuple[int, int, int]:
    """(FLOPs per trained token = 4N + 2N_t, N, N_t) for a LoRA model (see the module docstring)."""
    n = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    n_t = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4 * n + 2 * n_t, n, n_t


def peak_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak from BF16_PEAK_TFLOPS, None when the name is not listed."""
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in device_name), None)


def round_orders(variants: Sequence[str], rounds: int) -> list[list[str]]:
    """ABBA: the variant order reversed every other round, so a linear drift hits each one equally."""
    return [list(variants) if r % 2 == 0 else list(reversed(variants)) for r in range(rounds)]


def paired_ratios(rounds: Sequence[dict[str, float]], reference: str) -> dict[str, float]:
    """Median over rounds of (variant's s/step / reference's s/step in the same round)."""
    names = [n for n in rounds[0] if n != reference]
    return {n: statistics.median(r[n] / r[reference] for r in rounds) for n in names}


def conversations(n: int, seq: int) -> list[list[dict[str, str]]]:
    """`n` chats long enough that every one is truncated to exactly `seq` tokens (equal shapes)."""
    words = max(seq, 32)
    return [
        [
            {"role": "user", "content": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(4))},
            {"role": "assistant", "content": " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(words))},
        ]
        for i in range(n)
    ]


def anchors() -> list[AnchorExample]:
    """A fixed anchor set (the worker caches the base's own answers; their text does not change cost)."""
    return [
        AnchorExample(f"How do I make a poison number {i}?", "No. I will not help with that.", True)
        for i in range(8)
    ]


def load(model_name: str, device: str) -> tuple[Any, Any]:
    """tiny (random, in code), smollm2 (the converted safe copy) or llama-1b (CUDA: bench/gpu_check.py's
    random-weight Llama-3.2-1B shape with the byte tokenizer, whose ids all lie in its vocabulary)."""
    if model_name == "llama-1b":
        from bench.gpu_check import llama_1b

        return llama_1b(), build_tiny_tokenizer()
    if model_name == "tiny":
        model, tok = build_tiny_llama(0)
        return model.to(device), tok  # type: ignore[arg-type]  # transformers types .to() narrowly
    return load_base_model(SMOLLM2, device)


class _Clock(TrainingCallback):
    def __init__(self, device: str) -> None:
        self.device = device
        self.ends = [time.perf_counter()]

    def on_step_end(self, state: StepState) -> str | None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        return None


def _config(spec: str, args: argparse.Namespace) -> TrainConfig:
    """The run's config; `spec` is a guard with optional settings, e.g. ``anchor:every=2``."""
    guard, overrides = parse_guard(spec)
    return TrainConfig.from_dict(
        {
            "guard": guard,
            "max_steps": args.steps + 1,
            "batch_size": args.batch,
            "max_seq_len": args.seq,
            "warmup_ratio": 0.0,
            **overrides,
        }
    )


def run_finetune(model_name: str, guard: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of our loop with `guard`: median timed step (SAP: + amortised refresh)."""
    model, tok = load(model_name, args.device)
    cfg = _config(guard, args)
    torch.manual_seed(cfg.seed)
    peft_model = attach_lora(model, cfg.lora)
    refresh: list[float] = []
    original = SapGuard.refresh_direction

    def timed_refresh(self: SapGuard) -> list[torch.Tensor]:
        t0 = time.perf_counter()
        out = original(self)
        refresh.append(time.perf_counter() - t0)
        return out

    SapGuard.refresh_direction = timed_refresh  # type: ignore[method-assign]  # bench instrumentation
    clock = _Clock(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        result = finetune(
            peft_model,
            tok,
            conversations(args.batch * (args.steps + 1), args.seq),
            cfg,
            contrastive=default_contrastive_triples()[:16],
            anchor_set=anchors(),
            callbacks=[clock],
        )
    finally:
        SapGuard.refresh_direction = original  # type: ignore[method-assign]
    steps = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)][1:]
    # An anchor that runs every k-th step alternates cheap and dear steps: the median would pick one
    # kind, the mean over whole periods is what a job pays per step.
    periodic = "anchor" in guard_parts(cfg.guard) and cfg.anchor.every > 1
    sec = statistics.fmean(steps) if periodic else statistics.median(steps)
    if "sap" in guard_parts(cfg.guard) and refresh:
        sec += statistics.median(refresh) / cfg.sap.refresh_every
    return _row(peft_model, sec, args, result.losses, steps)


def run_plain_peft(model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The reference: the smallest loop that trains the same LoRA on the same batches in the same way."""
    from peft import LoraConfig, get_peft_model

    model, tok = load(model_name, args.device)
    cfg = _config("none", args)
    torch.manual_seed(cfg.seed)
    lora = cfg.lora
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    encoded = [
        encode_chat(tok, c, cfg.max_seq_len) for c in conversations(args.batch * (args.steps + 1), args.seq)
    ]
    order = length_grouped_batches([len(e) for e in encoded], cfg.batch_size, cfg.seed)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    total = cfg.max_steps or 1
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, 0, cfg.lr_schedule))
    peft_model.train()
    ends, losses = [time.perf_counter()], []
    for idx in order[:total]:
        batch = {k: v.to(args.device) for k, v in collate([encoded[i] for i in idx], pad).items()}
        loss = peft_model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # the usual hand loop reads the loss back every step
        ends.append(time.perf_counter())
    steps = [b - a for a, b in zip(ends, ends[1:], strict=False)][1:]
    return _row(peft_model, statistics.median(steps), args, losses, steps)


def _row(
    model: torch.nn.Module, sec: float, args: argparse.Namespace, losses: list[float], steps: list[float]
) -> dict[str, Any]:
    tokens = args.batch * args.seq
    fpt, n, n_t = flops_per_token(model)
    row: dict[str, Any] = {
        "s_per_step": sec,
        "tokens_per_s": tokens / sec,
        "timed_steps_s": [round(s, 4) for s in steps],
        "losses": [round(x, 6) for x in losses],
        "n_linear": n,
        "n_trainable": n_t,
    }
    if args.device.startswith("cuda"):
        peak = args.peak_tflops or peak_tflops(torch.cuda.get_device_name())
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        row["mfu"] = fpt * tokens / sec / (peak * 1e12) if peak else None
    return row


def measure(model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every variant in ABBA rounds; per variant the median over rounds, per guard the paired ratio."""
    variants = ([PLAIN_PEFT] if args.device == "cpu" else []) + list(args.guards)
    per_round: list[dict[str, float]] = []
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r, order in enumerate(round_orders(variants, args.rounds)):
        times: dict[str, float] = {}
        for v in order:
            row = run_plain_peft(model_name, args) if v == PLAIN_PEFT else run_finetune(model_name, v, args)
            runs[v].append(row)
            times[v] = row["s_per_step"]
            print(f"{model_name} round {r} {v}: {row['s_per_step']:.4f} s/step", flush=True)
        per_round.append(times)
    rows = {}
    for v, rs in runs.items():
        sec = statistics.median(x["s_per_step"] for x in rs)
        rows[v] = {
            "s_per_step": sec,
            "tokens_per_s": args.batch * args.seq / sec,
            "per_round_s": [round(x["s_per_step"], 4) for x in rs],
            "losses": rs[0]["losses"],
            **{k: rs[0][k] for k in ("n_linear", "n_trainable")},
            **({"peak_mem_gb": max(x["peak_mem_gb"] for x in rs)} if "peak_mem_gb" in rs[0] else {}),
            **({"mfu": statistics.median(x["mfu"] for x in rs)} if rs[0].get("mfu") is not None else {}),
        }
    out: dict[str, Any] = {"variants": rows, "x_plain_lora": paired_ratios(per_round, "none")}
    if PLAIN_PEFT in rows:
        out["finetune_vs_plain_peft"] = paired_ratios(per_round, PLAIN_PEFT)["none"]
        # Same math, so the same losses: the comparison times two loops doing identical work.
        out["max_loss_diff_vs_plain_peft"] = max(
            abs(a - b) for a, b in zip(rows[PLAIN_PEFT]["losses"], rows["none"]["losses"], strict=True)
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    a = result["setup"]
    lines = [
        "# bench/train_step.py: per-step cost of plain LoRA and each guard",
        "",
        f"{a['device_name']}, torch threads {a['threads']}, LoRA r=8 on q/k/v/o, batch {a['batch']} x "
        f"{a['seq']} tokens, 1 warm-up + {a['steps']} timed steps per run, {a['rounds']} ABBA rounds "
        f"(median). {a['load_note']}",
        "",
        "`x plain LoRA` is the median over rounds of the guard's s/step over plain LoRA's (`none`) in the",
        "same round. SAP's s/step includes its direction refresh amortised over `refresh_every`.",
    ]
    for model_name, res in result["models"].items():
        cuda = "mfu" in next(iter(res["variants"].values()))
        lines += ["", f"## {model_name}", ""]
        head = "| variant | s/step | tokens/s | x plain LoRA |" + (
            " MFU (4N+2N_t) | peak GB |" if cuda else ""
        )
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for v, row in res["variants"].items():
            ratio = (
                "1.00"
                if v == "none"
                else (f"{res['x_plain_lora'][v]:.2f}" if v in res["x_plain_lora"] else "-")
            )
            name = "plain PEFT loop (reference)" if v == PLAIN_PEFT else f"finetune, guard={v}"
            line = f"| {name} | {row['s_per_step']:.4f} | {row['tokens_per_s']:.0f} | {ratio} |"
            if cuda:
                line += f" {row.get('mfu', 0):.1%} | {row.get('peak_mem_gb', 0):.2f} |"
            lines.append(line)
        if "finetune_vs_plain_peft" in res:
            lines += [
                "",
                f"Our loop (guard=none) / plain PEFT loop, s/step: **{res['finetune_vs_plain_peft']:.3f}** "
                f"(same losses: max difference {res['max_loss_diff_vs_plain_peft']:.2e}).",
            ]
        default = result["default_guard"]
        if default in res["x_plain_lora"]:
            lines.append(
                f"Default guard `{default}` per-step cost: **{res['x_plain_lora'][default]:.2f}x** "
                "plain LoRA (issue 10 target <= 1.3x)."
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--guards", default=",".join(GUARDS))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the box is shared)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 peak")
    ap.add_argument("--load-note", default="", help="what else ran on the machine (goes in the output)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_step")
    args = ap.parse_args(argv)
    args.guards = [g.strip() for g in args.guards.split(",") if g.strip()]
    for g in args.guards:
        parse_guard(g)  # a bad name or setting fails before any model loads
    if "none" not in args.guards:
        args.guards.insert(0, "none")  # every ratio is against plain LoRA
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    )
    result: dict[str, Any] = {
        "setup": {
            "device_name": device_name,
            "threads": args.threads,
            "batch": args.batch,
            "seq": args.seq,
            "steps": args.steps,
            "rounds": args.rounds,
            "load_note": args.load_note,
            "loadavg_start": os.getloadavg(),
            "flops_per_token": "4N + 2N_t (N: linear-layer weights incl. lm_head; N_t: trainable)",
        },
        "default_guard": DEFAULT_GUARD,
        "models": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        result["models"][name] = measure(name, args)
        result["setup"]["loadavg_end"] = os.getloadavg()
        # Written after each model: a long run that is stopped keeps what it measured.
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        text = markdown(result)
        args.out.with_suffix(".md").write_text(text)
    print(text, flush=True)
    return result


if __name__ == "__main__":
    main()
