#!/usr/bin/env bash
# One-command GPU check (< 8 min on one H200, no internet): a random-weight Llama-3.2-1B-shaped model
# trained with LoRA under every guard; prints tokens/s, MFU, peak memory and host syncs per step, and
# exits non-zero unless the bf16 / SDPA / gradient-checkpointing paths ran. Then bench/train_step.py on
# the same shape (every guard against plain LoRA, ABBA rounds) writes bench/results/train_step_cuda.*.
# Usage: bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
timeout 320 "$PY" bench/gpu_check.py "$@"
exec timeout 150 "$PY" bench/train_step.py --models llama-1b --device cuda --rounds 2 --steps 3 \
    --batch 8 --seq 512 --load-note "GPU check run (bench/gpu_check.sh)" --out bench/results/train_step_cuda
