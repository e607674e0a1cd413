#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, services, lint, import contracts, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure_services.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SAFETUNE_MODEL_CACHE="${SAFETUNE_MODEL_CACHE:-$PWD/.cache/models}"
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== import contracts"
.venv/bin/lint-imports
echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
